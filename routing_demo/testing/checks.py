"""Questions tests ask of a running setup: the broker's counters, a worker's log.

Each answers from the broker's or the worker's own record, not from what a
test meant to do.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from amqp.exceptions import NotFound
from celery import Celery
from kombu import Queue
from pytest_celery import CeleryTestSetup, CeleryTestWorker

from ..rabbitmq import queue_counts as broker_queue_counts
from .defaults import READY_TIMEOUT
from .process import wait_until

__all__ = [
    "QueueCounts",
    "purge_queues",
    "queue_counts",
    "wait_for_log_count",
    "workers_by_queue",
]


class QueueCounts(NamedTuple):
    """What RabbitMQ reports for a queue: messages ready, and consumers."""

    messages: int
    consumers: int


def queue_counts(app: Celery, queue: str) -> QueueCounts:
    """The broker's own counts for ``queue``, from a passive ``queue.declare``
    (it never creates the queue: a missing one raises ``NotFound``)."""
    with app.connection_for_write() as connection:
        return QueueCounts(*broker_queue_counts(connection, queue))


def workers_by_queue(setup: CeleryTestSetup) -> dict[str, CeleryTestWorker]:
    """Each worker of the setup under the queue it is pinged on (``worker_queue``)."""
    return {worker.worker_queue: worker for worker in setup.worker_cluster}


def wait_for_log_count(
    worker: CeleryTestWorker, text: str, count: int, timeout: float = READY_TIMEOUT
) -> int:
    """Wait until ``text`` appears at least ``count`` times in the worker's
    logs (every run's); return how many times it does."""
    return wait_until(
        lambda: (found := worker.logs().count(text)) >= count and found,
        timeout=timeout,
        message=f"{worker.hostname()} did not log {text!r} {count} times",
    )


def purge_queues(broker_url: str, queues: Iterable[Queue]) -> None:
    """Empty ``queues`` (those that exist) on ``broker_url``: what a former
    test left must not count for the next one."""
    with Celery(broker=broker_url, set_as_current=False).connection_for_write() as connection:
        for queue in queues:
            channel = connection.channel()
            try:
                channel.queue_purge(queue.name)
            except NotFound:
                continue
            channel.close()
