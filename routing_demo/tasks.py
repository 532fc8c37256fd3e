"""The demo's tasks. ``add`` and ``sub`` have routes of their own; ``mul``
has none and so shows where unrouted tasks go (the default queue); ``flaky``
fails on purpose, to show a task's RETRY state and where a retry goes."""

from __future__ import annotations

import os
import reprlib
from numbers import Real
from typing import Any

from .celery import app

__all__ = ["TransientError", "add", "flaky", "mul", "sub"]


def _require_numbers(task: str, **operands: object) -> None:
    """Refuse anything but ints and floats, naming the offending argument.

    JSON lets a caller send strings, ``null`` or booleans; Python would
    happily concatenate two strings, so the check is explicit. The value is
    shown abbreviated: a 10 MB string must not become a 10 MB error message.
    """
    for name, value in operands.items():
        if isinstance(value, bool) or not isinstance(value, Real):
            shown, kind = reprlib.repr(value), type(value).__name__
            raise TypeError(f"{task}() takes numbers only: {name}={shown} is {kind}")


# TypeError is an expected, caller-made failure: log it without a traceback.
@app.task(throws=(TypeError,))
def add(x: float, y: float) -> float:
    """Return ``x + y``."""
    _require_numbers("add", x=x, y=y)
    return x + y


@app.task(throws=(TypeError,))
def sub(x: float, y: float) -> float:
    """Return ``x - y``."""
    _require_numbers("sub", x=x, y=y)
    return x - y


@app.task(throws=(TypeError,))
def mul(x: float, y: float) -> float:
    """Return ``x * y``; unrouted on purpose."""
    _require_numbers("mul", x=x, y=y)
    return x * y


class TransientError(Exception):
    """A failure that may not happen again: worth retrying."""


#: ``flaky``'s retries wait 1, 2, 4 … seconds (at most ``retry_backoff_max``).
#: Jitter spreads the retries of many tasks that failed together over that
#: interval (each waits a random time up to it); ``ROUTING_DEMO_RETRY_JITTER=0``
#: turns it off for a predictable timeline.
RETRY_JITTER = os.environ.get("ROUTING_DEMO_RETRY_JITTER", "1") != "0"


@app.task(
    bind=True,
    autoretry_for=(TransientError,),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=RETRY_JITTER,
    max_retries=3,
    throws=(TypeError,),
)
def flaky(self: Any, failures: int) -> int:
    """Fail the first ``failures`` attempts with ``TransientError``, then
    return the number of the attempt that succeeded (1 is the first).

    Celery retries it (``autoretry_for``): each failure reads RETRY and the
    task is sent again, through the exchange and routing key it came by, so it
    comes back to its own queue. After ``max_retries`` retries it reads
    FAILURE. Unrouted: it goes to the default queue, unless sent elsewhere.
    """
    if isinstance(failures, bool) or not isinstance(failures, int):
        raise TypeError(f"flaky() takes an int: failures={reprlib.repr(failures)}")
    attempt = self.request.retries + 1
    if attempt <= failures:
        raise TransientError(f"attempt {attempt} failed on purpose ({failures} planned)")
    return attempt
