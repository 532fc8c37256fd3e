"""What quorum queues change for Celery, and the containment of its trouble.

On quorum queues Celery delays countdown/ETA tasks through RabbitMQ itself
(native delayed delivery: ``celery_delayed_0…27`` queues whose TTLs add up
to the delay, one binary digit per level). Its smallest step is one second:
Celery truncates the delay with ``int()`` and kombu then refuses a delay
below one second (``ValueError: countdown must be a positive number``), so
``countdown=0.3`` fails in the caller. This module rounds such a delay *up*
to that step, never earlier than asked; ``routing_demo.celery`` applies it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Celery
from celery.utils.quorum_queues import detect_quorum_queues
from celery.utils.time import subtract_datetimes
from dateutil.parser import isoparse

__all__ = [
    "NATIVE_DELAY_STEP",
    "native_delayed_delivery_applies",
    "round_up_short_delay",
]

#: The shortest delay native delayed delivery can express, in seconds.
NATIVE_DELAY_STEP = 1.0


def native_delayed_delivery_applies(app: Celery) -> bool:
    """True when ``app`` sends countdown/ETA tasks through native delayed
    delivery: a RabbitMQ broker and a quorum queue among ``app.amqp.queues``
    (Celery's own test, on the connection ``send_task`` publishes with)."""
    driver_type = app.producer_pool.connections.connection.transport.driver_type
    return detect_quorum_queues(app, driver_type)[0]


def _seconds_left(app: Celery, eta: datetime | str) -> float:
    if isinstance(eta, str):
        eta = isoparse(eta)
    return subtract_datetimes(eta, app.now()).total_seconds()


def round_up_short_delay(
    app: Celery, countdown: float | None, eta: datetime | str | None
) -> tuple[float | None, datetime | str | None]:
    """``(countdown, eta)`` for ``send_task``: a positive delay under one
    second becomes ``countdown=1`` (and no ``eta``) when native delayed
    delivery applies; anything else is returned as given.

    Like Celery, an ``eta`` wins over a ``countdown``; a delay of zero or in
    the past is left alone (Celery sends such a task at once).
    """
    delay: Any = _seconds_left(app, eta) if eta else countdown
    if not delay or not 0 < delay < NATIVE_DELAY_STEP:
        return countdown, eta
    if not native_delayed_delivery_applies(app):
        return countdown, eta
    return NATIVE_DELAY_STEP, None
