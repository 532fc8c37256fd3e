"""A task slow enough to be interrupted, for the workers of the fault and
celery_setup tests (loaded with ``--include=tests.slow_tasks``, the repository
root on their ``PYTHONPATH``).

The project's ``add`` and ``sub`` finish in microseconds: a worker cannot be
killed or stopped, nor the broker restarted, *while* one runs. This one
sleeps first. Another never finishes: it kills its own pool process.
"""

from __future__ import annotations

import os
import signal
import time

from routing_demo import celery_app

__all__ = ["KILL_OWN_PROCESS", "SLEEP_THEN_ADD"]

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
