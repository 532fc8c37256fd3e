"""Where the shop's tasks go, on a real broker with a real worker per queue.

``celery_setup`` is pytest-celery's: here a throw-away vhost, a Redis
database and one ``celery -A shop worker`` per ``routes_worker_selections``
entry (``orders``: ``-Q orders``, ``mailer``: ``-Q emails``). Each test asks
the worker's own record (the result's hostname) and the broker's (queue
counts, ``celery routes verify``), not the tasks' return values alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from celery import Celery
from pytest_celery import CeleryTestSetup, CeleryTestWorker
from shop.celery import emails_queue, orders_queue
from shop.tasks import place_order, send_receipt

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).parents[1]
RESULT_TIMEOUT = 30
T = TypeVar("T")


def wait_for(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Poll ``read()`` until ``done`` says yes, or fail naming the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout:.0f}s")
        time.sleep(0.1)


def queue_counts(app: Celery, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) as RabbitMQ counts them: a passive declare
    asks the broker without creating anything."""
    with app.connection_for_write() as connection:
        channel = connection.channel()
        try:
            _, messages, consumers = channel.queue_declare(queue, passive=True)
        finally:
            channel.close()
    return messages, consumers


def workers_by_queue(setup: CeleryTestSetup) -> dict[str, CeleryTestWorker]:
    return {worker.worker_queue: worker for worker in setup.worker_cluster}


def test_when_tasks_are_sent_then_each_runs_on_its_queues_worker(
    celery_setup: CeleryTestSetup,
) -> None:
    workers = workers_by_queue(celery_setup)
    assert set(workers) == {orders_queue.name, emails_queue.name}

    orders = [celery_setup.app.send_task(place_order.name, (n, 2, 150)) for n in range(3)]
    receipts = [
        celery_setup.app.send_task(send_receipt.name, (n, f"buyer{n}@example.com"))
        for n in range(3)
    ]

    assert [r.get(timeout=RESULT_TIMEOUT)["total_cents"] for r in orders] == [300] * 3
    assert [r.get(timeout=RESULT_TIMEOUT) for r in receipts] == [
        f"receipt {n} -> buyer{n}@example.com" for n in range(3)
    ]
    for results, queue in ((orders, orders_queue.name), (receipts, emails_queue.name)):
        for result in results:
            assert result.worker == workers[queue].hostname(), result.id
            assert result.queue == queue


def test_when_the_mailer_stops_consuming_then_receipts_wait_in_emails_only(
    celery_setup: CeleryTestSetup,
) -> None:
    app = celery_setup.app
    mailer = workers_by_queue(celery_setup)[emails_queue.name]
    app.control.cancel_consumer(emails_queue.name, destination=[mailer.hostname()], reply=True)
    wait_for(lambda: queue_counts(app, emails_queue.name), lambda c: c[1] == 0)

    receipt = app.send_task(send_receipt.name, (42, "late@example.com"))
    order = app.send_task(place_order.name, (42, 1, 999))

    # The order is served; the receipt sits in `emails`, and nowhere else.
    assert order.get(timeout=RESULT_TIMEOUT) == {"order_id": 42, "total_cents": 999}
    assert wait_for(lambda: queue_counts(app, emails_queue.name), lambda c: c[0] == 1) == (1, 0)
    assert queue_counts(app, orders_queue.name) == (0, 1)
    assert receipt.state == "PENDING"

    app.control.add_consumer(emails_queue.name, destination=[mailer.hostname()], reply=True)
    assert receipt.get(timeout=RESULT_TIMEOUT) == "receipt 42 -> late@example.com"
    assert receipt.worker == mailer.hostname()
    assert queue_counts(app, emails_queue.name) == (0, 1)


def test_when_workers_run_then_routes_verify_finds_the_broker_wired_as_declared(
    celery_setup: CeleryTestSetup,
) -> None:
    broker_url = celery_setup.app.conf.broker_url
    verify = ["routes", "verify", "--json"]
    completed = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "shop", "-b", broker_url, *verify],
        cwd=PROJECT,
        env={**os.environ, "PYTHONPATH": str(PROJECT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(completed.stdout)
    assert report["ok"] is True
    assert report["problems"] == []
    assert report["vhost"] == broker_url.rsplit("/", 1)[1]
    assert {w["name"]: w["queues"] for w in report["workers"]["workers"]} == {
        "orders": [orders_queue.name],
        "mailer": [emails_queue.name],
    }
