"""The routing suite again, with every worker and the client on librabbitmq.

librabbitmq is optional and has no wheel on PyPI for current Pythons
(``scripts/build-librabbitmq.py --install`` builds one); without it these
tests skip, or fail when ``ROUTING_DEMO_REQUIRE_LIBRABBITMQ`` is set (for a CI
that builds it). With it, ``test_routing``'s checks run unchanged against a
``stack`` whose workers load ``routing_demo.transports.celeryconfig`` with a
``librabbitmq://`` broker URL, and whose client sets the same
``broker_transport``; the checks below prove that the transport really was
librabbitmq on both sides: the workers' own stats, and the client library
that every connection in the vhost announced to RabbitMQ.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from routing_demo.celery import client_app
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.tasks import add
from routing_demo.testing.process import wait_until
from routing_demo.topology import QUEUES
from routing_demo.transports import LIBRABBITMQ_TRANSPORT, broker_transport_for
from routing_demo.workers import WorkerGroup, worker_nodes

from .stack import Stack
from .test_routing import (
    test_when_consumers_paused_then_each_message_sits_in_its_own_queue,
    test_when_message_published_then_it_is_persistent_in_a_durable_queue,
    test_when_redis_backend_then_another_process_reads_state_by_id,
    test_when_rpc_backend_then_another_process_cannot_read_the_result,
    test_when_tasks_sent_then_each_runs_on_its_queues_worker,
    test_when_workers_declared_topology_then_broker_has_its_bindings,
    test_when_workers_run_then_each_consumes_exactly_its_selection,
)

pytestmark = pytest.mark.integration

#: ``test_routing``'s checks, collected again in this module, where ``stack``
#: is the librabbitmq stack below.
ROUTING_CHECKS = (
    test_when_tasks_sent_then_each_runs_on_its_queues_worker,
    test_when_workers_run_then_each_consumes_exactly_its_selection,
    test_when_consumers_paused_then_each_message_sits_in_its_own_queue,
    test_when_workers_declared_topology_then_broker_has_its_bindings,
    test_when_redis_backend_then_another_process_reads_state_by_id,
    test_when_rpc_backend_then_another_process_cannot_read_the_result,
    test_when_message_published_then_it_is_persistent_in_a_durable_queue,
)

#: Loaded by the workers: the project's settings, ``broker_transport`` from the URL.
CONFIG_MODULE = "routing_demo.transports.celeryconfig"
#: What rabbitmq-c (librabbitmq's C core) announces as ``product``; py-amqp says ``py-amqp``.
LIBRABBITMQ_PRODUCT = "rabbitmq-c"
WORKER_OPTIONS = ("--concurrency=1", "--loglevel=INFO", "--without-mingle", "--without-gossip")


def require_librabbitmq() -> None:
    if importlib.util.find_spec("librabbitmq") is not None:
        return
    message = (
        "librabbitmq is not installed (no wheel on PyPI for this Python): build it with "
        "`.venv/bin/python scripts/build-librabbitmq.py --install`"
    )
    if os.environ.get("ROUTING_DEMO_REQUIRE_LIBRABBITMQ"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class LibrabbitmqStack(Stack):
    """A stack whose other processes (``read_elsewhere``) also pick the transport."""

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, "CELERY_CONFIG_MODULE": CONFIG_MODULE}


@pytest.fixture(scope="module", params=["rpc", "redis"])
def stack(
    request: pytest.FixtureRequest,
    vhost_factory: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """``tests/integration/conftest.py``'s stack, on librabbitmq."""
    require_librabbitmq()
    backend: str = request.param
    backend_url = "rpc://" if backend == "rpc" else request.getfixturevalue("redis_url")
    broker_url = "librabbitmq://" + vhost_factory(f"librabbitmq-{backend}").split("://", 1)[1]
    workers = WorkerGroup(
        worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}"),
        tmp_path_factory.mktemp(f"librabbitmq-workers-{backend}"),
        env={
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": backend_url,
            "CELERY_CONFIG_MODULE": CONFIG_MODULE,
        },
        worker_options=WORKER_OPTIONS,
    )
    client = client_app(
        broker_url,
        backend_url,
        queues=QUEUES,
        broker_transport=broker_transport_for(broker_url),
        broker_transport_options={},  # librabbitmq has no publisher confirms
    )
    workers.start()
    try:
        workers.wait_ready(client)
        yield LibrabbitmqStack(
            backend,
            broker_url,
            backend_url,
            broker_url.rsplit("/", 1)[1],
            client,
            workers,
            request.getfixturevalue("management"),
        )
    finally:
        workers.stop()
        client.close()
        assert workers.running() == {}, "celery multi stopwait left workers running"


def test_when_librabbitmq_url_then_client_uses_the_adapted_transport(stack: Stack) -> None:
    with stack.connection() as connection:
        assert connection.transport_cls == LIBRABBITMQ_TRANSPORT
        transport = connection.transport
        assert type(transport).__module__ == "routing_demo.transports.librabbitmq"
        assert transport.driver_name == "librabbitmq"


def test_when_workers_run_then_each_reports_the_librabbitmq_transport(stack: Stack) -> None:
    hostnames = [node.hostname for node in stack.workers.nodes]
    stats = stack.client.control.inspect(hostnames, timeout=5).stats()
    assert {host: stats[host]["broker"]["transport"] for host in hostnames} == {
        host: LIBRABBITMQ_TRANSPORT for host in hostnames
    }


def test_when_stack_runs_then_broker_sees_only_librabbitmq_clients(
    stack: Stack, management: ManagementAPI
) -> None:
    """Every AMQP connection in the vhost (workers, their pidbox and result
    traffic, the client) announced rabbitmq-c, none py-amqp."""
    stack.client.send_task(add.name, (1, 2)).get(timeout=30)
    # The management API lists a connection once its statistics arrive (up
    # to a few seconds): poll until the vhost's connections show up.
    connections = wait_until(
        lambda: management.connections(stack.vhost),
        timeout=30,
        message="no connection in the vhost",
    )
    products = [connection["client_properties"].get("product") for connection in connections]
    assert set(products) == {LIBRABBITMQ_PRODUCT}
