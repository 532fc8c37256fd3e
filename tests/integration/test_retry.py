"""A task that fails transiently and is retried: RETRY between its attempts,
then SUCCESS, or FAILURE once its retries run out; every attempt in the queue
it was first sent to, run by that queue's worker.

``routing_demo.tasks.flaky`` fails its first N attempts. Celery retries it by
publishing it again with the exchange and routing key it was delivered with
(``Task.signature_from_request``), so a retry follows the first message's
path, not the routing table: one sent to ``sub`` by hand comes back to
``sub``. Each worker's log names every task it received, by id.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from celery import states
from celery.result import AsyncResult

from routing_demo.rabbitmq import ManagementAPI
from routing_demo.tasks import TransientError, flaky
from routing_demo.testing.process import wait_until
from routing_demo.topology import dead_letter_queue
from routing_demo.workers import WorkerGroup

from .conftest import TEST_WORKER_OPTIONS
from .queue_types import queue_depth, queue_type_client, queue_type_env, running, single_node
from .stack import Stack

pytestmark = pytest.mark.integration

WORKERS = ("add", "sub", "default")


def received(log: str, task_id: str) -> int:
    """How many times a worker's log says it received ``task_id``."""
    return log.count(f"{flaky.name}[{task_id}] received")


def attempts_by_worker(stack: Stack, task_id: str) -> dict[str, int]:
    return {base: received(stack.log(base), task_id) for base in WORKERS}


def wait_for_retry_state(result: AsyncResult) -> None:
    """Poll until the backend reports RETRY (between two attempts)."""
    wait_until(
        lambda: result.state == states.RETRY,
        timeout=30,
        message=f"{result.id} never read {states.RETRY}",
    )


def test_when_a_task_fails_transiently_then_each_retry_returns_to_its_own_queue(
    stack: Stack,
) -> None:
    task = stack.client.tasks[flaky.name]
    routed = task.apply_async((2,))  # no route: the default queue
    by_hand = task.apply_async((1,), queue="sub")  # a queue of the caller's choosing
    exhausted = task.apply_async((flaky.max_retries + 1,))

    wait_for_retry_state(routed)
    assert routed.get(timeout=60) == 3
    assert by_hand.get(timeout=60) == 2
    with pytest.raises(TransientError, match="attempt 4 failed on purpose"):
        exhausted.get(timeout=60)
    assert exhausted.state == states.FAILURE

    # The workers' own record: every attempt ran where the first one did.
    assert attempts_by_worker(stack, routed.id) == {"add": 0, "sub": 0, "default": 3}
    assert attempts_by_worker(stack, by_hand.id) == {"add": 0, "sub": 2, "default": 0}
    assert attempts_by_worker(stack, exhausted.id) == {"add": 0, "sub": 0, "default": 4}
    assert routed.worker == stack.node("default").hostname
    assert by_hand.worker == stack.node("sub").hostname
    assert stack.log("default").count(f"{flaky.name}[{routed.id}] retry: Retry in") == 2


def test_when_a_task_retries_on_quorum_then_the_delivery_limit_does_not_count_its_retries(
    vhost_factory: Callable[[str], str], management: ManagementAPI, tmp_path: Path
) -> None:
    """A retry is a new message (the old one is acknowledged), not a
    redelivery: a quorum queue counts only redeliveries (rejects, lost
    workers) against ``x-delivery-limit``. With a limit of 1, three retries
    still end in SUCCESS and nothing is dead-lettered; a redelivered task is
    dead-lettered after the limit (``test_quorum``)."""
    broker_url = vhost_factory("quorum-retry")
    vhost = broker_url.rsplit("/", 1)[1]
    limit = 1
    client = queue_type_client(broker_url, "quorum", delivery_limit=limit)
    env = queue_type_env(broker_url, "quorum", tmp_path, delivery_limit=limit)
    env["ROUTING_DEMO_RETRY_JITTER"] = "0"
    workers = WorkerGroup(
        single_node(f"default-{uuid.uuid4().hex[:6]}", "default"),
        tmp_path,
        env=env,
        worker_options=TEST_WORKER_OPTIONS,
    )
    try:
        with running(workers, client):
            assert management.queue(vhost, "default")["arguments"]["x-delivery-limit"] == limit
            result = client.tasks[flaky.name].apply_async((3,))
            assert result.get(timeout=60) == 4
            log = workers.log_path(workers.nodes[0]).read_text()
            assert received(log, result.id) == 4
            assert queue_depth(client, dead_letter_queue.name)[0] == 0
    finally:
        client.close()
