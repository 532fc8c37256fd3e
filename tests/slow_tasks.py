"""A task slow enough to be interrupted, for the workers of the fault and
celery_setup tests (loaded with ``--include=tests.slow_tasks``, the repository
root on their ``PYTHONPATH``).

The project's ``add`` and ``sub`` finish in microseconds: a worker cannot be
killed or stopped, nor the broker restarted, *while* one runs. This one
sleeps first.
"""

from __future__ import annotations

import time

from routing_demo import celery_app

__all__ = ["SLEEP_THEN_ADD"]

#: Registered name; tests send it by name with an explicit ``queue=``.
SLEEP_THEN_ADD = "tests.slow_tasks.sleep_then_add"


@celery_app.task(name=SLEEP_THEN_ADD)
def sleep_then_add(seconds: float, x: float, y: float) -> float:
    """Sleep ``seconds``, then return ``x + y``."""
    time.sleep(seconds)
    return x + y
