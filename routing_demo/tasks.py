"""The demo's tasks. ``add`` and ``sub`` have routes of their own; ``mul``
has none and so shows where unrouted tasks go (the default queue)."""

from __future__ import annotations

import reprlib
from numbers import Real

from .celery import app

__all__ = ["add", "mul", "sub"]


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
