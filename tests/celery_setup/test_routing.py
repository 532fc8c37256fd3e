"""Routing on pytest-celery's ``celery_setup``: one real worker per queue.

The cluster is the topology's: ``add`` (``-Q add``), ``sub`` (``-Q sub``) and
``default`` (``-X add,sub``). Each test proves where tasks went three ways:
the result's record of the worker that ran it, the workers' own logs, and the
broker's consumer counts.
"""

from __future__ import annotations

import pytest
from pytest_celery import CeleryTestSetup

from routing_demo.tasks import add, mul, sub
from routing_demo.testing.checks import queue_counts, workers_by_queue
from routing_demo.topology import add_queue, default_queue, sub_queue

pytestmark = pytest.mark.integration

RESULT_TIMEOUT = 30


def test_when_setup_is_ready_then_each_worker_answers_under_its_hostname(
    celery_setup: CeleryTestSetup,
) -> None:
    # pytest-celery's own check: a ping task through each worker's queue, and
    # a broadcast control ping.
    assert celery_setup.ready(ping=True, control=True)
    replies = celery_setup.app.control.ping(timeout=5.0, limit=len(celery_setup.worker_cluster))
    answered = {hostname for reply in replies for hostname in reply}
    assert answered == {worker.hostname() for worker in celery_setup.worker_cluster}


def test_when_workers_consume_then_each_queue_has_exactly_one_consumer(
    celery_setup: CeleryTestSetup,
) -> None:
    # Two consumers on add or sub would mean the -X worker consumes it too.
    for queue in (add_queue, sub_queue, default_queue):
        assert queue_counts(celery_setup.app, queue.name).consumers == 1, queue.name
    assert {worker.worker_queue for worker in celery_setup.worker_cluster} == {
        add_queue.name,
        sub_queue.name,
        default_queue.name,
    }


@pytest.mark.parametrize(
    ("task", "queue", "expected"),
    [(add, add_queue.name, 9), (sub, sub_queue.name, 3), (mul, default_queue.name, 18)],
    ids=["add", "sub", "mul-unrouted"],
)
def test_when_task_is_sent_then_only_its_queues_worker_runs_it(
    celery_setup: CeleryTestSetup, task, queue: str, expected: int
) -> None:
    workers = workers_by_queue(celery_setup)
    results = [celery_setup.app.send_task(task.name, (6, 3)) for _ in range(5)]

    assert [result.get(timeout=RESULT_TIMEOUT) for result in results] == [expected] * 5
    owner = workers[queue]
    for result in results:
        assert result.worker == owner.hostname()
        assert result.queue == queue
        owner.assert_log_exists(f"Task {task.name}[{result.id}] succeeded", timeout=5)
    for other in (worker for name, worker in workers.items() if name != queue):
        assert f"Task {task.name}[" not in other.logs(), other.hostname()
    assert queue_counts(celery_setup.app, queue).messages == 0


def test_when_add_and_sub_flood_in_then_the_x_worker_runs_none_of_them(
    celery_setup: CeleryTestSetup,
) -> None:
    workers = workers_by_queue(celery_setup)
    results = [
        celery_setup.app.send_task(task.name, (index, 1))
        for index in range(10)
        for task in (add, sub)
    ]
    # One unrouted task last: when it is done, the default worker has had
    # every chance to take something it should not have.
    last = celery_setup.app.send_task(mul.name, (2, 2))

    assert last.get(timeout=RESULT_TIMEOUT) == 4
    assert [result.get(timeout=RESULT_TIMEOUT) for result in results] == [
        value for index in range(10) for value in (index + 1, index - 1)
    ]
    default_log = workers[default_queue.name].logs()
    assert f"Task {mul.name}[{last.id}] succeeded" in default_log
    assert f"{add.name}[" not in default_log
    assert f"{sub.name}[" not in default_log
    assert {result.worker for result in results[0::2]} == {workers[add_queue.name].hostname()}
    assert {result.worker for result in results[1::2]} == {workers[sub_queue.name].hostname()}
