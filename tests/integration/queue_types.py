"""Workers and a client on one queue type (``classic`` or ``quorum``), in a vhost
of their own, for the quorum and RabbitMQ 4.3 tests.

The queue type is read by ``routing_demo.topology`` when a process imports
it, so the workers get it through ``ROUTING_DEMO_QUEUE_TYPE`` and the test's
client app gets the matching queues built here: client and workers must
declare each queue with the same arguments, or RabbitMQ refuses the second.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from celery import Celery

from routing_demo.celery import RoutingDemoCelery, client_app
from routing_demo.rabbitmq import queue_counts
from routing_demo.topology import QUEUE_TYPE_ENV, QUORUM_DELIVERY_LIMIT_ENV, build_queues
from routing_demo.workers import WorkerGroup, WorkerNode

#: The repository root, on the workers' ``PYTHONPATH`` for ``tests.slow_tasks``.
ROOT = Path(__file__).parents[2]


def queue_type_env(
    broker_url: str, queue_type: str, run_dir: Path, *, delivery_limit: int | None = None
) -> dict[str, str]:
    """The workers' environment: their vhost, ``rpc://`` results, the queue type."""
    env = {
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": "rpc://",
        QUEUE_TYPE_ENV: queue_type,
        "ROUTING_DEMO_RUN_DIR": str(run_dir),
        "PYTHONPATH": str(ROOT),
    }
    if delivery_limit is not None:
        env[QUORUM_DELIVERY_LIMIT_ENV] = str(delivery_limit)
    return env


def queue_type_client(
    broker_url: str, queue_type: str, *, delivery_limit: int | None = None
) -> Celery:
    """A client app of the project's class and settings, with ``queue_type`` queues."""
    return client_app(
        broker_url,
        "rpc://",
        queues=build_queues(queue_type, delivery_limit=delivery_limit),
        name=f"routing_demo-{queue_type}-client",
        app_cls=RoutingDemoCelery,
    )


def queue_depth(app: Celery, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of ``queue``, from a passive declare: the
    broker's answer at this instant."""
    with app.connection_for_write() as connection:
        return queue_counts(connection, queue)


@contextmanager
def running(workers: WorkerGroup, app: Celery) -> Iterator[WorkerGroup]:
    """Start ``workers``, wait until each answers a ping, stop them afterwards."""
    workers.start()
    try:
        workers.wait_ready(app)
        yield workers
    finally:
        workers.stop()


def single_node(name: str, queue: str) -> Sequence[WorkerNode]:
    """One node consuming only ``queue`` (``-Q queue``)."""
    return [WorkerNode(name, "-Q", queue)]
