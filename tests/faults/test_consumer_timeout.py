"""Countdown tasks held longer than RabbitMQ's ``consumer_timeout``.

A worker keeps a countdown/ETA task's message *unacknowledged* until the
task is due. RabbitMQ closes a channel whose delivery stays unacknowledged
longer than ``consumer_timeout`` (30 min by default) with
``PRECONDITION_FAILED``; Celery's default treats that channel error as fatal
and the worker exits. The project sets ``broker_channel_error_retry``: the
worker reconnects, the broker redelivers the message, and the task runs when
due. (Quorum queues avoid the wait altogether: Celery's native delayed
delivery parks the message in the broker's ``celery_delayed_*`` queues.)

The private node here has a 3 s ``consumer_timeout``, checked every second
(``channel_tick_interval``, 60 s by default, is the check's resolution).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from pytest_celery import CeleryBrokerCluster, RabbitMQTestBroker

from routing_demo.tasks import add
from routing_demo.testing.checks import purge_queues, queue_counts
from routing_demo.testing.ledger import Ledger
from routing_demo.testing.process import wait_until
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.topology import TASK_QUEUES, add_queue, dead_letter_queue
from routing_demo.workers import WorkerNode

from .conftest import RUN_TIMEOUT, make_node, show

pytestmark = pytest.mark.integration


#: Milliseconds a delivery may stay unacknowledged on this module's node.
CONSUMER_TIMEOUT_MS = 3000
#: Seconds of countdown: well past the consumer timeout.
COUNTDOWN = 3 * CONSUMER_TIMEOUT_MS / 1000

TIMED_OUT = "PRECONDITION_FAILED - delivery acknowledgement on channel"


@pytest.fixture(scope="module")
def timeout_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbitMQNode]:
    base_dir = tmp_path_factory.mktemp("timeout-rabbitmq")
    node = make_node(base_dir, extra_config=(f"consumer_timeout = {CONSUMER_TIMEOUT_MS}",))
    # rabbitmq.conf has no key for it: the node reads this file at boot.
    (base_dir / "advanced.config").write_text("[{rabbit, [{channel_tick_interval, 1000}]}].\n")
    with node:
        yield node


@pytest.fixture
def celery_broker_cluster(timeout_node: PrivateRabbitMQNode) -> CeleryBrokerCluster:
    purge_queues(timeout_node.url, (*TASK_QUEUES, dead_letter_queue))
    return CeleryBrokerCluster(RabbitMQTestBroker(timeout_node))


def test_when_countdown_outlasts_consumer_timeout_then_worker_without_retry_exits(
    celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    """Celery's default (``broker_channel_error_retry = False``): the worker
    dies, the message survives in its queue."""
    worker = local_worker_factory(
        WorkerNode("add-strict", "-Q", add_queue.name),
        env={**ledger.env, "CELERY_CONFIG_MODULE": "tests.faults.no_channel_retry_config"},
    )
    worker.ready()
    ledger.sent([celery_setup_app.send_task(add.name, (20, 22), countdown=COUNTDOWN).id])

    wait_until(
        lambda: worker.container.status == "exited",
        timeout=RUN_TIMEOUT,
        message="the worker survived the channel error",
    )

    assert "Unrecoverable error: PreconditionFailed" in worker.logs()
    assert ledger.runs() == {}
    assert queue_counts(celery_setup_app, add_queue.name).messages == 1


def test_when_countdown_outlasts_consumer_timeout_then_worker_reconnects_and_task_runs(
    celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    worker = local_worker_factory(WorkerNode("add", "-Q", add_queue.name))
    worker.ready()
    pid = worker.container.pid
    delayed = [
        celery_setup_app.send_task(add.name, (index, 1), countdown=COUNTDOWN).id
        for index in range(3)
    ]
    ledger.sent(delayed)
    wait_until(
        lambda: TIMED_OUT in worker.logs(),
        timeout=RUN_TIMEOUT,
        message="the broker never timed the held delivery out",
    )
    now = [celery_setup_app.send_task(add.name, (index, 2)).id for index in range(5)]
    ledger.sent(now)

    report = ledger.wait_for(timeout=RUN_TIMEOUT)
    show("countdown longer than consumer_timeout", report)
    assert report.lost == frozenset()
    assert report.duplicated == {}
    assert ledger.wrong_results() == []
    # The same process all along: it reconnected instead of exiting.
    assert worker.container.status == "running"
    assert worker.container.pid == pid
    assert "Unrecoverable error" not in worker.logs()
    assert "Connection to broker lost" in worker.logs()
