"""A minimal Celery app on Celery's own defaults: one queue (``celery``), no
routes, no publisher confirms, early acks, prefetch multiplier 4.

The broker and the result backend come from ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND`` (Celery reads both by itself); the one setting
taken from the project is the queue type (``ROUTING_DEMO_QUEUE_TYPE``), so
that on a cluster the peer's queue is as replicated as the shipped app's.
Importing it also registers ``bench_progress`` for the worker.
"""

from __future__ import annotations

import os

from celery import Celery

from .. import control as _control  # noqa: F401  (registers bench_progress)
from . import PLAIN_CELERY_QUEUE

__all__ = ["QUEUE", "add", "app"]

QUEUE = PLAIN_CELERY_QUEUE

app = Celery("plain_celery", set_as_current=False)
if os.environ.get("ROUTING_DEMO_QUEUE_TYPE", "").strip().lower() == "quorum":
    app.conf.task_default_queue_type = "quorum"


@app.task
def add(x: int, y: int) -> int:
    """Return ``x + y``, as the shipped ``add`` does."""
    return x + y
