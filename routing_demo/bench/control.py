"""``bench_progress``: a worker's own count of the tasks it has finished.

The bench must know when a worker has run its whole batch without asking for
results (results cost time, and that cost is measured separately). The
worker's state keeps a per-task count of accepted tasks and the set of
requests still reserved; a task is done when it is counted and no longer
reserved, so "accepted >= N and nothing reserved" is exact.

It also says which of the worker's queues have a consumer. Celery's
``add_consumer`` and ``cancel_consumer`` answer *before* acting: they leave
the change to the worker's event loop (``call_soon``), which on an idle
worker runs it only when the loop next wakes up, up to about ten seconds
later with the solo pool. The bench asks until the change shows here, and
each ask wakes the loop.
"""

from __future__ import annotations

from celery.worker import state as worker_state
from celery.worker.control import inspect_command

__all__ = ["bench_progress"]


@inspect_command()
def bench_progress(state, **kwargs):
    """Tasks accepted since the worker started, and requests still in hand."""
    return {
        "accepted": sum(worker_state.total_count.values()),
        "reserved": len(worker_state.reserved_requests),
        "active": len(worker_state.active_requests),
        "consuming": sorted(_consuming(state)),
    }


def _consuming(state) -> set[str]:
    """Names of the queues the worker's task consumer has a consumer on."""
    consumer = getattr(getattr(state, "consumer", None), "task_consumer", None)
    if consumer is None:
        return set()
    return {queue.name for queue in consumer.queues if consumer.consuming_from(queue.name)}
