"""Tasks that only the experiments need; the experiment settings ``include``
this module, the project's own settings do not.

``record`` and ``hold`` return a sequence number from the process that ran
them, so the order in which one single-process worker executed its tasks can
be read from their results.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from ..celery import app
from ..polling import wait_until

__all__ = ["clear_cache", "hold", "record"]

logger = logging.getLogger(__name__)

#: Execution order within one worker process (``--concurrency=1``).
_sequence = itertools.count()


# A broadcast runs once per worker under one task id: storing its result
# would make the workers overwrite each other's.
@app.task(ignore_result=True)
def clear_cache(key: str) -> None:
    """Forget ``key`` in this worker's local cache (here: log it)."""
    logger.info("cache cleared: %s", key)


@app.task
def record(label: str) -> int:
    """Return the position at which this worker process ran this task."""
    return next(_sequence)


@app.task
def hold(gate: str, timeout: float = 60.0) -> int:
    """Keep this worker busy until the file ``gate`` exists, then return
    like ``record``. The sender decides when the worker is released, so the
    backlog behind it is built without any guess about durations; the
    sender and the worker must share the file system (``celery multi``)."""
    wait_until(
        Path(gate).exists,
        timeout=timeout,
        message=f"gate {gate} not opened",
        interval=0.02,
    )
    return next(_sequence)
