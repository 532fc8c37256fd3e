"""Waiting with a deadline, and whether a process is still there.

Every wait in the project (a node coming up, a worker answering, a queue
settling) is a poll of a condition with a deadline, never a bare sleep;
this is the one implementation. Nothing here depends on pytest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["pid_alive", "wait_until"]

#: How often ``wait_until`` looks again unless told otherwise.
POLL_INTERVAL = 0.05


def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,
    message: str,
    interval: float = POLL_INTERVAL,
    done: Callable[[Any], bool] | None = None,
) -> Any:
    """Poll ``condition`` until it returns something true, and return that.

    With ``done``, poll until ``done`` accepts what ``condition`` returned
    (which may be false, an empty queue's 0) and name the last value seen
    in the error. Raises ``TimeoutError(message)`` once ``timeout`` seconds
    have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if done(outcome) if done is not None else outcome:
            return outcome
        if time.monotonic() >= deadline:
            last = "" if done is None else f"; last seen: {outcome!r}"
            raise TimeoutError(f"{message} (after {timeout:.1f}s{last})")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists and has not exited (signal 0
    checks without sending; an exited child nobody reaped yet is a zombie,
    which counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust the signal
    return stat.rpartition(")")[2].split()[0] != "Z"
