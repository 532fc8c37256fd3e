"""Pipelined batches (``routing_demo.batch``) on the real broker and workers.

A group and ``send_all`` on the shipped app class route every task like a
single send does (proved by the worker that ran each, and by the messages
as they sit in their queue: a stamped message carries Celery's own headers),
a full queue's nacks end the batch with the ids that were not stored and
nothing else, and SENT is recorded once the broker confirmed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from celery import Celery, group
from kombu import Queue

from routing_demo.batch import BatchPublishFailed, pipelined, send_all
from routing_demo.celery import RoutingDemoCelery, client_app
from routing_demo.sent_state import SENT, install, writer_for
from routing_demo.tasks import add, sub
from routing_demo.topology import task_exchange

from .stack import Stack, consumers_paused

pytestmark = pytest.mark.integration

#: Header fields that differ per call; every other header is Celery's own.
PER_CALL_HEADERS = {"id", "root_id", "parent_id", "group", "group_index", "argsrepr", "kwargsrepr"}


@pytest.fixture
def shipped_client(stack: Stack) -> Iterator[Celery]:
    """The stack's vhost and backend, through the shipped app class."""
    app = client_app(
        stack.broker_url,
        stack.backend_url,
        queues=stack.queues,
        name="batch",
        app_cls=RoutingDemoCelery,
    )
    install(app)
    yield app
    app.close()


def drain(stack: Stack, queue: str) -> list:
    """Every message now in ``queue``, taken off it (acknowledged)."""
    messages = []
    with stack.connection() as connection:
        bound = Queue(queue, exchange=task_exchange, routing_key=queue)(connection.default_channel)
        while (message := bound.get(no_ack=True)) is not None:
            messages.append(message)
    return messages


def test_when_a_group_is_sent_then_each_task_runs_on_its_queues_worker(
    stack: Stack, shipped_client: Celery
) -> None:
    pairs = [(add.name if i % 2 == 0 else sub.name, (i, 3)) for i in range(200)]
    result = group(shipped_client.signature(name, args) for name, args in pairs).apply_async()
    values = result.get(timeout=60)
    assert values == [x + y if name == add.name else x - y for name, (x, y) in pairs]
    workers = {
        name: stack.node("add" if name == add.name else "sub").hostname
        for name in (add.name, sub.name)
    }
    for (name, _), child in zip(pairs, result.results, strict=True):
        assert child.worker == workers[name]


def test_when_send_all_stamps_messages_then_they_carry_celerys_own_headers(
    stack: Stack, shipped_client: Celery
) -> None:
    with consumers_paused(stack, "add"):
        results = send_all(shipped_client.signature(add.name, (i, i)) for i in range(5))
        messages = drain(stack, "add")
    assert [message.headers["id"] for message in messages] == [result.id for result in results]
    first, *stamped = messages
    for index, message in enumerate(stamped, start=1):
        for header, value in first.headers.items():
            if header not in PER_CALL_HEADERS:
                assert message.headers[header] == value, header
        assert message.headers["argsrepr"] == repr((index, index))
        assert message.headers["root_id"] == message.properties["correlation_id"]
        assert message.delivery_info["routing_key"] == first.delivery_info["routing_key"]
        assert message.properties["delivery_mode"] == 2
        assert message.decode()[0] == [index, index]


def test_when_a_queue_refuses_part_of_a_batch_then_the_error_names_the_rest(
    stack: Stack, shipped_client: Celery
) -> None:
    name = f"full-{uuid.uuid4().hex[:6]}"
    full = Queue(
        name,
        exchange=task_exchange,
        routing_key=name,
        queue_arguments={"x-max-length": 5, "x-overflow": "reject-publish"},
        durable=True,
    )
    shipped_client.conf.task_queues = (*shipped_client.conf.task_queues, full)
    shipped_client.conf.task_publish_retry_policy = {
        "max_retries": 2,
        "interval_start": 0,
        "interval_step": 0.1,
        "interval_max": 0.2,
    }
    with stack.connection() as connection:
        full(connection.default_channel).declare()
    try:
        with pytest.raises(BatchPublishFailed, match=r"basic\.nack") as refused:
            send_all(
                shipped_client.signature(add.name, (i, 1), queue=full.name, ignore_result=True)
                for i in range(20)
            )
        stored = drain(stack, full.name)
        assert len(stored) == 5
        assert refused.value.confirmed == 5
        assert len(refused.value.task_ids) == 15
        assert not {message.headers["id"] for message in stored} & set(refused.value.task_ids)
        assert f"{task_exchange.name}/{name}" in str(refused.value)
    finally:
        with stack.connection() as connection:
            full(connection.default_channel).delete()


@pytest.mark.parametrize("stack", ["redis"], indirect=True)
def test_when_a_pipelined_batch_is_confirmed_then_its_tasks_read_sent(
    stack: Stack, shipped_client: Celery
) -> None:
    backend = shipped_client.backend
    with consumers_paused(stack, "add"):
        with pipelined(shipped_client):
            results = [shipped_client.send_task(add.name, (i, 1)) for i in range(50)]
        assert writer_for(backend).flush()
        states = [backend.get_task_meta(result.id)["status"] for result in results]
    try:
        assert states == [SENT] * 50
        assert [result.get(timeout=30) for result in results] == [i + 1 for i in range(50)]
    finally:
        for result in results:
            result.forget()
