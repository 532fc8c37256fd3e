"""Tasks that only the celery_setup tests need, loaded by their workers with
``--include=long_tasks`` (this directory is on the workers' ``PYTHONPATH``).

They take long enough on purpose: a worker can be killed, or the broker
restarted, while they run.
"""

from __future__ import annotations

import time

from routing_demo import celery_app

__all__ = ["SLEEP_THEN_ADD"]

#: Registered name; tests send it by name with an explicit ``queue=``.
SLEEP_THEN_ADD = "tests.long_tasks.sleep_then_add"


@celery_app.task(name=SLEEP_THEN_ADD)
def sleep_then_add(seconds: float, x: float, y: float) -> float:
    """Sleep ``seconds``, then return ``x + y``."""
    time.sleep(seconds)
    return x + y
