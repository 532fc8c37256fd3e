"""Quorum queues on one node, with Celery's known trouble contained.

Each test has a vhost of its own (a vhost holds one queue type) and starts
real ``celery worker`` processes with ``ROUTING_DEMO_QUEUE_TYPE=quorum``:

- a worker binds every declared queue for native delayed delivery, even
  queues no worker has declared yet (celery#9699);
- a countdown under one second, which native delayed delivery cannot
  express;
- a task whose pool process dies on every delivery: the delivery limit
  dead-letters it instead of redelivering it forever.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from routing_demo.rabbitmq import ManagementAPI
from routing_demo.tasks import add as add_task
from routing_demo.tasks import sub
from routing_demo.testing.process import wait_until
from routing_demo.topology import dead_letter_queue
from routing_demo.workers import WorkerGroup
from tests.slow_tasks import KILL_OWN_PROCESS

from .conftest import TEST_WORKER_OPTIONS
from .queue_types import (
    queue_depth,
    queue_type_client,
    queue_type_env,
    running,
    single_node,
)

pytestmark = pytest.mark.integration

#: The delivery limit the dead-lettering test declares its queues with.
SMALL_DELIVERY_LIMIT = 2


def suffix() -> str:
    return uuid.uuid4().hex[:6]


def test_when_only_the_add_worker_runs_on_quorum_then_a_delayed_sub_task_waits_in_sub(
    vhost_factory: Callable[[str], str], management: ManagementAPI, tmp_path: Path
) -> None:
    broker_url = vhost_factory("quorum-bind")
    vhost = broker_url.rsplit("/", 1)[1]
    env = queue_type_env(broker_url, "quorum", tmp_path)
    client = queue_type_client(broker_url, "quorum")
    add_workers = WorkerGroup(
        single_node(f"add-{suffix()}", "add"), tmp_path, env=env, worker_options=TEST_WORKER_OPTIONS
    )
    sub_workers = WorkerGroup(
        single_node(f"sub-{suffix()}", "sub"), tmp_path, env=env, worker_options=TEST_WORKER_OPTIONS
    )
    try:
        with running(add_workers, client):
            add_log = add_workers.log_path(add_workers.nodes[0]).read_text()
            assert "Failed to bind queue" not in add_log
            # The broker's record: the add worker declared sub (consumed by
            # nobody) and bound it for delayed delivery.
            assert queue_depth(client, "sub") == (0, 0)
            routes = {
                (binding["source"], binding["destination"], binding["routing_key"])
                for binding in management.bindings(vhost)
            }
            assert ("celery_delayed_delivery", "routing_demo", "#.sub") in routes
            assert ("routing_demo", "sub", "#.sub") in routes

            sent_at = time.monotonic()
            result = client.send_task(sub.name, (7, 2), countdown=2)
            wait_until(
                lambda: queue_depth(client, "sub")[0] == 1,
                timeout=30,
                message="the delayed sub task never reached the sub queue",
            )
            # Through the delay queues first: not before its countdown.
            assert time.monotonic() - sent_at >= 1.5

            with running(sub_workers, client):
                assert result.get(timeout=30) == 5
                assert result.worker == sub_workers.nodes[0].hostname
                assert queue_depth(client, "sub") == (0, 1)
    finally:
        client.close()


def test_when_a_countdown_is_under_a_second_on_quorum_then_the_task_runs_after_it(
    vhost_factory: Callable[[str], str], tmp_path: Path
) -> None:
    broker_url = vhost_factory("quorum-short")
    client = queue_type_client(broker_url, "quorum")
    workers = WorkerGroup(
        single_node(f"add-{suffix()}", "add"),
        tmp_path,
        env=queue_type_env(broker_url, "quorum", tmp_path),
        worker_options=TEST_WORKER_OPTIONS,
    )
    try:
        with running(workers, client):
            add = client.tasks[add_task.name]  # the project's add, bound to the client
            sent_at = datetime.now(UTC)
            result = add.apply_async((2, 3), countdown=0.3)
            assert result.get(timeout=30) == 5
            assert result.worker == workers.nodes[0].hostname
            # The worker's record of when it finished: no earlier than asked.
            assert result.date_done - sent_at >= timedelta(seconds=0.3)
    finally:
        client.close()


def test_when_a_task_kills_its_worker_every_time_on_quorum_then_it_is_dead_lettered(
    vhost_factory: Callable[[str], str], management: ManagementAPI, tmp_path: Path
) -> None:
    broker_url = vhost_factory("quorum-limit")
    vhost = broker_url.rsplit("/", 1)[1]
    limit = SMALL_DELIVERY_LIMIT
    client = queue_type_client(broker_url, "quorum", delivery_limit=limit)
    workers = WorkerGroup(
        single_node(f"add-{suffix()}", "add"),
        tmp_path,
        env=queue_type_env(broker_url, "quorum", tmp_path, delivery_limit=limit),
        worker_options=(*TEST_WORKER_OPTIONS, "--include=tests.slow_tasks"),
    )
    deliveries_file = tmp_path / "deliveries.txt"
    try:
        with running(workers, client):
            arguments = management.queue(vhost, "add")["arguments"]
            assert arguments["x-delivery-limit"] == limit
            result = client.send_task(KILL_OWN_PROCESS, (str(deliveries_file),), queue="add")
            wait_until(
                lambda: queue_depth(client, dead_letter_queue.name)[0] == 1,
                timeout=60,
                message=f"task {result.id} never reached {dead_letter_queue.name}",
            )
            # Gone from add (nothing ready, nothing held by the worker).
            assert management_ready_and_unacked(management, vhost, "add") == (0, 0)
            worker_log = workers.log_path(workers.nodes[0]).read_text()

        deliveries = deliveries_file.read_text().splitlines()
        # The first delivery and `limit` redeliveries, each in a pool process
        # that then died.
        assert len(deliveries) == limit + 1, deliveries
        assert {line.split()[0] for line in deliveries} == {result.id}
        assert len({line.split()[1] for line in deliveries}) == limit + 1
        assert worker_log.count("WorkerLostError") >= limit + 1

        # The broker's record of why it moved the message.
        (dead,) = management.peek(vhost, dead_letter_queue.name)
        assert dead["properties"]["correlation_id"] == result.id
        (death,) = dead["properties"]["headers"]["x-death"]
        assert death["queue"] == "add"
        assert death["reason"] == "delivery_limit"
    finally:
        client.close()


def management_ready_and_unacked(
    management: ManagementAPI, vhost: str, queue: str
) -> tuple[int, int]:
    """(ready, unacknowledged) as the management API reports them once its
    sampled figures have caught up (it refreshes every few seconds)."""

    def settled() -> tuple[int, int] | None:
        info = management.queue(vhost, queue)
        counts = (info.get("messages_ready", -1), info.get("messages_unacknowledged", -1))
        return counts if counts == (0, 0) else None

    try:
        return wait_until(settled, timeout=15, message=f"{queue} still holds messages")
    except TimeoutError:
        info = management.queue(vhost, queue)
        return info.get("messages_ready", -1), info.get("messages_unacknowledged", -1)
