"""A task publish that ends within a known time, whatever the broker does.

With publisher confirms a publish returns once RabbitMQ has the message. A
quorum queue that has lost its quorum (two of three nodes down) never
answers: py-amqp would wait for that confirm forever, and Celery's publish
retry policy retries a broken connection with no bound on the total. Here
each confirm wait is bounded (``publish_confirm_timeout``), a confirm that
did not come counts as a broken connection (kombu then reconnects, to the
next node of a cluster, and publishes again), and the retries stop at the
``publish_timeout`` deadline with ``PublishTimeout``, which names the cause.
A publish that raised may still have been stored (the broker can take it
after the confirm wait ended): delivery stays at least once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError

__all__ = ["PublishTimeout", "bounded_publish_options"]


class PublishTimeout(OperationalError):
    """The broker did not confirm the publish before the deadline."""


def bounded_publish_options(app: Celery, name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for ``send_task`` with a confirm wait and a deadline.

    Settings (seconds; unset or 0: Celery's behaviour): ``publish_confirm_timeout``
    bounds each wait for a confirm, ``publish_timeout`` the whole publish
    with its retries.
    """
    confirm_timeout = app.conf.get("publish_confirm_timeout")
    total = app.conf.get("publish_timeout")
    bounded = dict(options)
    if confirm_timeout:
        bounded.setdefault("confirm_timeout", confirm_timeout)
    if not total:
        return bounded
    deadline = time.monotonic() + total
    policy = dict(app.conf.task_publish_retry_policy or {})
    policy.update(options.get("retry_policy") or {})
    chained: Callable[[Exception, float], Any] | None = policy.get("errback")

    def stop_at_deadline(exc: Exception, interval: float) -> Any:
        if time.monotonic() + (interval or 0) >= deadline:
            raise PublishTimeout(
                f"publishing {name} gave up after {total:g}s (publish_timeout): the broker "
                f"did not confirm it ({exc!r}); a cluster that has lost its quorum, "
                "or a broker that blocks publishers, does not answer"
            ) from exc
        return chained(exc, interval) if chained else None

    policy["errback"] = stop_at_deadline
    bounded["retry_policy"] = policy
    return bounded
