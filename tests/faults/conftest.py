"""Fault tests: real workers on a private RabbitMQ node, and a ledger.

Every test here may stop, kill or restart the broker, so the broker is a
RabbitMQ node of this session's own (``PrivateRabbitMQNode``), never the
shared one. It boots once per session (seconds on a busy machine) and is
*restarted* by the tests that need a restart; before each test it is started
again if a test left it down, and its task queues are purged. Results and the
ledger live in the shared Redis under keys of their own.

Every worker loads ``routing_demo.testing.ledger`` (the ledger's signal
receiver) and ``tests.slow_tasks``; the test compares the ids it sent
with the ids the ledger says ran, and prints the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from pytest_celery import CeleryBrokerCluster, CeleryTestWorker, RabbitMQTestBroker

from routing_demo.celery import RoutingDemoCelery
from routing_demo.testing.app import config_module
from routing_demo.testing.checks import purge_queues
from routing_demo.testing.defaults import RABBITMQ_SERVER
from routing_demo.testing.fixtures import (  # noqa: F401  (fixtures used by name)
    celery_backend,
    celery_on_docker,
    celery_setup_app,
    celery_setup_cls,
    local_worker_factory,
)
from routing_demo.testing.ledger import Ledger, LedgerReport, Producer  # noqa: F401
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.testing.services import require_executable
from routing_demo.topology import TASK_QUEUES, dead_letter_queue

#: The repository root, on the workers' ``PYTHONPATH`` for ``tests.slow_tasks``.
ROOT = Path(__file__).parents[2]

#: What every fault-test worker loads besides the project's tasks.
WORKER_INCLUDES = ("routing_demo.testing.ledger", "tests.slow_tasks")

#: Seconds a test waits for every sent task to have run.
RUN_TIMEOUT = 120.0


def show(scenario: str, report: LedgerReport) -> None:
    """Print a test's ledger (``pytest -s`` shows it)."""
    print(f"\nLEDGER {scenario}: {report}")


def make_node(base_dir: Path, extra_config: tuple[str, ...] = ()) -> PrivateRabbitMQNode:
    server = require_executable(RABBITMQ_SERVER, "RabbitMQ server")
    return PrivateRabbitMQNode(base_dir, server=server, extra_config=extra_config)


@pytest.fixture(scope="session")
def fault_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbitMQNode]:
    """The session's private RabbitMQ node, shared by the fault tests."""
    with make_node(tmp_path_factory.mktemp("fault-rabbitmq")) as node:
        yield node


@pytest.fixture
def broker_node(fault_node: PrivateRabbitMQNode) -> PrivateRabbitMQNode:
    """The private node, running, with empty task queues."""
    if fault_node.status != "running":
        fault_node.start()
        fault_node.ready()
    purge_queues(fault_node.url, (*TASK_QUEUES, dead_letter_queue))
    return fault_node


@pytest.fixture
def celery_broker_cluster(broker_node: PrivateRabbitMQNode) -> CeleryBrokerCluster:
    """pytest-celery's broker cluster on the private node. No teardown: the
    node outlives the test (the session fixture stops it)."""
    return CeleryBrokerCluster(RabbitMQTestBroker(broker_node))


@pytest.fixture
def shipped_app(celery_setup_config: dict) -> Iterator[Celery]:
    """The project's app class with the test broker: its sends are bounded
    (``publish_timeout``), and ``send_all`` and ``group`` are pipelined on
    it, not on a plain ``Celery``."""
    app = RoutingDemoCelery("fault-client", set_as_current=False)
    app.config_from_object(config_module())
    app.conf.update(celery_setup_config)
    yield app
    app.close()


@pytest.fixture
def ledger(redis_url: str) -> Iterator[Ledger]:
    """This test's ledger, in the shared Redis under a key of its own."""
    book = Ledger(redis_url)
    yield book
    book.clear()
    book.close()


@pytest.fixture
def local_worker_options(ledger: Ledger) -> dict[str, object]:
    return {"include": list(WORKER_INCLUDES), "pythonpath": [ROOT], "env": ledger.env}


def start_workers(workers: list[CeleryTestWorker]) -> list[CeleryTestWorker]:
    """Wait until every (already started) worker is ready; they boot in parallel."""
    for worker in workers:
        worker.ready()
    return workers
