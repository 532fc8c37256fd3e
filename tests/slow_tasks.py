"""A task slow enough to be interrupted, for the workers of the fault and
celery_setup tests (loaded with ``--include=tests.slow_tasks``, the repository
root on their ``PYTHONPATH``).

The project's ``add`` and ``sub`` finish in microseconds: a worker cannot be
killed or stopped, nor the broker restarted, *while* one runs. This one
sleeps first. Another never finishes: it kills its own pool process. A third
leaves a file behind, the proof that it ran (or, absent, that it never did).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from routing_demo import celery_app

__all__ = ["KILL_OWN_PROCESS", "SLEEP_THEN_ADD", "WRITE_MARKER"]

#: Registered name; tests send it by name with an explicit ``queue=``.
SLEEP_THEN_ADD = "tests.slow_tasks.sleep_then_add"


@celery_app.task(name=SLEEP_THEN_ADD)
def sleep_then_add(seconds: float, x: float, y: float) -> float:
    """Sleep ``seconds``, then return ``x + y``."""
    time.sleep(seconds)
    return x + y


#: Registered name of the task that kills the pool process running it.
KILL_OWN_PROCESS = "tests.slow_tasks.kill_own_process"


@celery_app.task(name=KILL_OWN_PROCESS, bind=True)
def kill_own_process(self, deliveries_file: str) -> None:
    """Append one line (task id, redelivered flag) to ``deliveries_file``, then
    SIGKILL this pool process: every delivery of the message ends in a lost
    worker, and the file counts the deliveries."""
    redelivered = (self.request.delivery_info or {}).get("redelivered")
    with open(deliveries_file, "a") as deliveries:
        deliveries.write(f"{self.request.id} {os.getpid()} redelivered={redelivered}\n")
        deliveries.flush()
        os.fsync(deliveries.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


#: Registered name of the task that leaves a file named after its id.
WRITE_MARKER = "tests.slow_tasks.write_marker"


@celery_app.task(name=WRITE_MARKER, bind=True)
def write_marker(self, directory: str) -> str:
    """Write ``<directory>/<task id>`` (the worker's node name inside) and
    return its path: the file exists if and only if the task ran."""
    marker = Path(directory) / self.request.id
    marker.write_text(f"{self.request.hostname}\n")
    return str(marker)
