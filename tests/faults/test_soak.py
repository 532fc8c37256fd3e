"""A bounded soak: tens of thousands of tasks over both routed queues, several
workers, one of them SIGKILLed and restarted at every eighth of the way.

Bounded in count (``SOAK_TASKS`` tasks, ``KILLS`` kills) and in time
(``SOAK_DEADLINE`` seconds, after which the test fails with its ledger).
Marked ``soak``: run it on its own with ``pytest -m soak -s tests/faults``.
"""

from __future__ import annotations

import os
import time

import pytest
from celery import Celery

from routing_demo.testing.ledger import Ledger
from routing_demo.topology import add_queue, sub_queue
from routing_demo.workers import WorkerNode

from .conftest import Producer, show, start_workers

pytestmark = [pytest.mark.integration, pytest.mark.soak]

#: Tasks sent, half ``add``, half ``sub``.
SOAK_TASKS = int(os.environ.get("ROUTING_DEMO_SOAK_TASKS", "20000"))
#: Worker kills, spread evenly over the run by progress (tasks run so far).
KILLS = 7
#: Seconds the whole run may take.
SOAK_DEADLINE = float(os.environ.get("ROUTING_DEMO_SOAK_DEADLINE", "600"))


def test_soak_when_workers_are_killed_periodically_then_nothing_is_lost(
    celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    workers = start_workers(
        [
            local_worker_factory(WorkerNode(f"{q.name}-{index}", "-Q", q.name), concurrency=2)
            for q in (add_queue, sub_queue)
            for index in (1, 2)
        ]
    )
    producer = Producer(celery_setup_app, ledger, SOAK_TASKS, pause_at=-1)
    started = time.monotonic()
    producer.start()

    kills = 0
    deadline = started + SOAK_DEADLINE
    while time.monotonic() < deadline:
        ran = ledger.redis.hlen(ledger.runs_key)
        if ran >= SOAK_TASKS and not producer.is_alive():
            break
        if kills < KILLS and ran >= (kills + 1) * SOAK_TASKS // (KILLS + 1):
            victim = workers[kills % len(workers)]
            victim.kill()
            victim.container.start()  # waits for the broker to drop its pidbox
            victim.ready()
            kills += 1
        time.sleep(0.1)
    elapsed = time.monotonic() - started

    report = ledger.report()
    show(f"soak: {len(workers)} workers, {kills} kills, {elapsed:.0f}s", report)
    assert not producer.is_alive()
    assert report.refused == 0
    assert report.lost == frozenset()
    assert kills == KILLS
    assert ledger.wrong_results() == []
    assert all(worker.container.status == "running" for worker in workers)
