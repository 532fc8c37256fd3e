"""The broker pushes back: a resource alarm blocks publishers, a capped queue
refuses messages. Each send ends within its bound and says what happened,
and a message is either stored (confirmed) or reported as not sent.

The alarm is raised on the session's private node only
(``rabbitmqctl set_vm_memory_high_watermark``), never on a shared broker,
and lifted again before the test ends, whatever happens.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from celery import Celery

from routing_demo.batch import BatchPublishFailed, send_all
from routing_demo.publish import BrokerBlocked, PublishFailed
from routing_demo.tasks import add
from routing_demo.testing.checks import queue_counts, wait_for_log_count
from routing_demo.testing.ledger import Ledger
from routing_demo.testing.process import wait_until
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.topology import QUEUE_MAX_LENGTH_ENV, add_queue, build_queues
from routing_demo.workers import WorkerNode

from .conftest import RUN_TIMEOUT, show

pytestmark = pytest.mark.integration

#: The send's deadline in these tests (``publish_timeout``), seconds.
BOUND = 3.0
#: What a send may take past its deadline before it counts as unbounded:
#: the last wait on the socket, a reconnect on a busy machine.
SLACK = 15.0

BLOCKED_LOG = "RabbitMQ blocks publishers: low on memory"
UNBLOCKED_LOG = "RabbitMQ unblocked publishers"


def memory_alarm_active(node: PrivateRabbitMQNode) -> bool:
    return "memory" in node.ctl("eval", "rabbit_alarm:get_alarms().")


def blocked_connections(node: PrivateRabbitMQNode) -> list[str]:
    """The node's connections in state ``blocked`` (or ``blocking``)."""
    return [
        line
        for line in node.ctl("list_connections", "name", "state").splitlines()
        if "block" in line
    ]


@contextmanager
def memory_alarm(node: PrivateRabbitMQNode) -> Iterator[None]:
    """A memory alarm on ``node`` for the block: a high watermark below what
    any node uses. Lifted at the end, and each change waited for."""
    node.ctl("set_vm_memory_high_watermark", "0.000001")
    wait_until(lambda: memory_alarm_active(node), timeout=30, message="no memory alarm")
    try:
        yield
    finally:
        lift_alarm(node)


def lift_alarm(node: PrivateRabbitMQNode) -> None:
    node.ctl("set_vm_memory_high_watermark", "0.4")
    wait_until(lambda: not memory_alarm_active(node), timeout=30, message="alarm still on")


def settled(node: PrivateRabbitMQNode) -> None:
    """Wait until no connection is blocked: RabbitMQ has read (or thrown
    away) everything written to one while the alarm was on."""
    wait_until(
        lambda: not blocked_connections(node),
        timeout=RUN_TIMEOUT,
        message="connections still blocked after the alarm",
    )


@pytest.fixture
def client(shipped_app: Celery) -> Celery:
    """The project's client, with a short send deadline, and the task queues
    declared (each test counts what they hold)."""
    shipped_app.conf.publish_timeout = BOUND
    with shipped_app.connection_for_write() as connection:
        for queue in shipped_app.conf.task_queues:
            queue(connection.default_channel).declare()
    return shipped_app


def test_when_the_broker_blocks_publishers_then_a_send_fails_within_its_bound_and_is_not_stored(
    broker_node: PrivateRabbitMQNode, client: Celery, ledger: Ledger
) -> None:
    client.send_task(add.name, (0, 0))  # a connection that has published already
    before = queue_counts(client, add_queue.name).messages
    task_id = str(uuid.uuid4())
    with memory_alarm(broker_node):
        began = time.monotonic()
        with pytest.raises(BrokerBlocked) as blocked:
            client.send_task(add.name, (1, 1), task_id=task_id)
        waited = time.monotonic() - began
        ledger.refused([task_id])
    # It waited for the alarm to clear, up to its deadline and not forever.
    assert BOUND <= waited < BOUND + SLACK
    assert blocked.value.reason == "low on memory"
    assert str(blocked.value).startswith(
        f"{add.name} not sent: RabbitMQ is blocking publishers (low on memory"
    )
    settled(broker_node)
    # Not stored, then or once the alarm cleared.
    assert queue_counts(client, add_queue.name).messages == before
    show("blocked broker, one send", ledger.report())


def test_when_the_alarm_clears_while_a_send_waits_then_it_returns_confirmed(
    broker_node: PrivateRabbitMQNode, client: Celery
) -> None:
    client.conf.publish_timeout = RUN_TIMEOUT
    before = queue_counts(client, add_queue.name).messages
    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            outcome["returned"] = client.send_task(add.name, (2, 2)).id
        except PublishFailed as exc:
            outcome["raised"] = exc

    with memory_alarm(broker_node):
        sender = threading.Thread(target=send, name="sender", daemon=True)
        sender.start()
        # The send is held: RabbitMQ has blocked its connection.
        wait_until(
            lambda: blocked_connections(broker_node),
            timeout=RUN_TIMEOUT,
            message="the send never met the block",
        )
        assert sender.is_alive()
    sender.join(RUN_TIMEOUT)
    assert not sender.is_alive()
    assert "returned" in outcome, outcome
    # Stored once: the message written before the block, read once it lifted.
    assert queue_counts(client, add_queue.name).messages == before + 1


def test_when_the_broker_blocks_a_batch_then_it_names_the_tasks_not_stored(
    broker_node: PrivateRabbitMQNode, client: Celery
) -> None:
    before = queue_counts(client, add_queue.name).messages
    with (
        memory_alarm(broker_node),
        pytest.raises(BatchPublishFailed, match="blocking publishers") as failed,
    ):
        send_all(client.signature(add.name, (i, 1)) for i in range(200))
    settled(broker_node)
    print(
        f"\nBLOCKED BATCH: {len(failed.value.task_ids)} task ids named as not stored, "
        f"{failed.value.confirmed} confirmed"
    )
    assert failed.value.task_ids
    assert None not in failed.value.task_ids
    # What the batch confirmed is stored; what it names is not.
    assert queue_counts(client, add_queue.name).messages == before + failed.value.confirmed


def test_when_a_worker_starts_during_an_alarm_then_it_consumes_and_logs_the_alarm_once(
    broker_node: PrivateRabbitMQNode, client: Celery, local_worker_factory, ledger: Ledger
) -> None:
    ids = [client.send_task(add.name, (i, i)).id for i in range(30)]
    ledger.sent(ids)
    with memory_alarm(broker_node):
        # With task events on: they are dropped while blocked, not queued up
        # in the worker's socket.
        worker = local_worker_factory(
            WorkerNode("add", "-Q", add_queue.name), concurrency=1, extra_args=["-E"]
        )
        worker.ready()
        # Every task runs while the alarm is on: consuming is not blocked.
        report = ledger.wait_for(timeout=RUN_TIMEOUT)
        assert memory_alarm_active(broker_node)
        wait_for_log_count(worker, BLOCKED_LOG, 1)
    wait_for_log_count(worker, UNBLOCKED_LOG, 1)
    show("worker started during a memory alarm", report)
    assert report.lost == frozenset()
    assert ledger.wrong_results() == []
    logs = worker.logs()
    assert logs.count(BLOCKED_LOG) == 1
    assert logs.count(UNBLOCKED_LOG) == 1


def test_when_a_capped_queue_is_full_then_a_send_is_refused_naming_it_and_nothing_is_dropped(
    broker_node: PrivateRabbitMQNode, client: Celery, local_worker_factory, ledger: Ledger
) -> None:
    cap = 5
    capped = build_queues("classic", max_length=cap)
    client.conf.task_queues = capped.task_queues
    with client.connection_for_write() as connection:
        channel = connection.default_channel
        channel.queue_delete(add_queue.name)  # declared uncapped by earlier tests
        capped.add(channel).declare()
    try:
        ledger.sent([client.send_task(add.name, (i, i)).id for i in range(cap)])
        refused_id = str(uuid.uuid4())
        with pytest.raises(PublishFailed) as refused:
            client.send_task(add.name, (9, 9), task_id=refused_id)
        ledger.refused([refused_id])
        assert (
            f"Queue 'add' holds {cap} messages, at most {cap} (x-max-length, x-overflow "
            "reject-publish): it is full"
        ) in str(refused.value)
        # RabbitMQ's default overflow would have dropped the oldest instead.
        assert queue_counts(client, add_queue.name).messages == cap

        worker = local_worker_factory(
            WorkerNode("add", "-Q", add_queue.name),
            env={**ledger.env, QUEUE_MAX_LENGTH_ENV: str(cap)},
        )
        worker.ready()
        report = ledger.wait_for(timeout=RUN_TIMEOUT)
        show("capped queue, one send over the cap", report)
        assert report.lost == frozenset()
        assert refused_id not in ledger.runs()
        # Room again: the next send is taken.
        ledger.sent([client.send_task(add.name, (7, 7)).id])
        assert ledger.wait_for(timeout=RUN_TIMEOUT).lost == frozenset()
    finally:
        # The next test gets the queue as the shipped topology declares it.
        with client.connection_for_write() as connection:
            channel = connection.default_channel
            channel.queue_delete(add_queue.name)
            add_queue(channel).declare()
