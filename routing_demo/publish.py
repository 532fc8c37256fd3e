"""A task publish that ends within a known time and says why it failed.

With publisher confirms a publish returns once RabbitMQ has the message. A
quorum queue that has lost its quorum (two of three nodes down) either
refuses the message (``basic.nack``) or never answers: py-amqp would wait
for that confirm forever, and kombu retries a nack or a broken connection
(moving to the next node of a cluster) as often as the retry policy allows,
with no bound on the total time. Here each confirm wait is bounded
(``publish_confirm_timeout``), the retries stop at the ``publish_timeout``
deadline, and whatever ends the publish reaches the sender as
``PublishFailed`` (``PublishTimeout`` at the deadline), whose message says
what the broker did. A publish that raised may still have been stored (the
broker can take it after the confirm wait ended): delivery stays at least
once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from amqp.exceptions import MessageNacked
from celery import Celery
from kombu.exceptions import OperationalError

from .rabbitmq import queue_counts

__all__ = [
    "BoundedPublish",
    "BrokerBlocked",
    "PublishFailed",
    "PublishTimeout",
    "explain",
    "refusing_queue",
]


class PublishFailed(OperationalError):
    """The broker did not take the task: it refused it, did not confirm it,
    or could not be reached."""


class PublishTimeout(PublishFailed):
    """The publish, retries included, outlasted ``publish_timeout``."""


class BrokerBlocked(PublishFailed):
    """RabbitMQ blocked publishing (a memory or disk alarm) past the send's
    deadline, and the message was not stored: nothing was written, or what
    was written was discarded unread (``routing_demo.transports.pyamqp``).
    Sending it again later is safe."""

    def __init__(
        self, reason: str, blocked_for: float, *, written: bool, task: str | None = None
    ) -> None:
        self.reason = reason
        self.blocked_for = blocked_for
        self.written = written
        self.task = task
        what = (
            "the message written before the block was discarded unread (connection reset)"
            if written
            else "nothing was written"
        )
        super().__init__(
            f"{task or 'message'} not sent: RabbitMQ is blocking publishers "
            f"({reason}: a resource alarm) and has been for {blocked_for:.1f}s, "
            "past the send's deadline; "
            f"{what}. Workers keep consuming; publishing resumes when the alarm clears"
        )

    def for_task(self, task: str) -> BrokerBlocked:
        """The same error, naming the task that was not sent."""
        return BrokerBlocked(self.reason, self.blocked_for, written=self.written, task=task)


class BoundedPublish:
    """One ``send_task``'s bounds, and what its attempts met.

    Settings (seconds; unset or 0: Celery's behaviour):
    ``publish_confirm_timeout`` bounds each wait for a confirm,
    ``publish_timeout`` the whole publish with its retries.
    """

    def __init__(self, app: Celery, name: str) -> None:
        self.name = name
        self.confirm_timeout = app.conf.get("publish_confirm_timeout")
        self.total = app.conf.get("publish_timeout")
        self.retry_policy = dict(app.conf.task_publish_retry_policy or {})
        self.deadline = time.monotonic() + (self.total or 0)
        #: The errors of the attempts that were retried.
        self.errors: list[BaseException] = []

    def options(self, options: dict[str, Any]) -> dict[str, Any]:
        """``send_task`` options with the confirm wait and the deadline."""
        bounded = dict(options)
        if self.confirm_timeout:
            bounded.setdefault("confirm_timeout", self.confirm_timeout)
        policy = {**self.retry_policy, **(options.get("retry_policy") or {})}
        chained: Callable[[BaseException, float], Any] | None = policy.get("errback")

        def on_retry(exc: BaseException, interval: float) -> Any:
            self.errors.append(exc)
            if self.total and time.monotonic() + (interval or 0) >= self.deadline:
                raise PublishTimeout(
                    f"publishing {self.name} gave up after {self.total:g}s (publish_timeout): "
                    f"{self.explain(exc)}"
                ) from exc
            return chained(exc, interval) if chained else None

        policy["errback"] = on_retry
        bounded["retry_policy"] = policy
        return bounded

    def explain(self, last: BaseException) -> str:
        """What the broker did, from every error the attempts met."""
        return explain(self.errors, last, self.confirm_timeout)

    def failure(self, exc: OperationalError, refused_by: str | None = None) -> PublishFailed:
        """The error the sender gets for a publish kombu gave up on;
        ``refused_by`` describes the queue that refused it (``refusing_queue``)."""
        why = self.explain(exc)
        if refused_by:
            why = f"{why}. {refused_by}"
        return PublishFailed(f"publishing {self.name} failed: {why}")

    def refused(self, exc: BaseException) -> bool:
        """Whether RabbitMQ refused the message (``basic.nack``)."""
        seen = [*self.errors, exc, exc.__cause__]
        return any(isinstance(error, MessageNacked) for error in seen)


def refusing_queue(
    app: Celery, name: str, args: Any, kwargs: Any, options: dict[str, Any]
) -> str | None:
    """The queue a refused task was routed to, as the broker has it now: its
    length, and its cap when the queue declares one (``x-max-length`` with
    ``x-overflow: reject-publish``); ``None`` when it cannot be told."""
    try:
        queue = app.amqp.router.route(dict(options), name, args, kwargs)["queue"]
    except Exception:  # routing failed before the send could; nothing to add
        return None
    cap = (queue.queue_arguments or {}).get("x-max-length")
    try:
        with app.connection_for_write() as connection:
            ready, _ = queue_counts(connection, queue.name)
    except Exception:
        ready = None
    held = f"holds {ready} messages" if ready is not None else "could not be counted"
    if cap is None:
        return f"The task was routed to queue {queue.name!r}, which {held}"
    state = "it is full" if ready is not None and ready >= cap else "it may have been full"
    return (
        f"Queue {queue.name!r} {held}, at most {cap} (x-max-length, x-overflow "
        f"reject-publish): {state}. The task was not stored and nothing in the "
        "queue was dropped; send it again once the workers have made room"
    )


def explain(errors: list[BaseException], last: BaseException, confirm_timeout: float | None) -> str:
    """What the broker did, read from the errors a publish met (``last`` and
    its cause included): refused, silent, or out of reach."""
    seen = [*errors, last, getattr(last, "__cause__", None)]
    blocked = [error for error in seen if isinstance(error, BrokerBlocked)]
    if blocked:
        return str(blocked[-1])
    if any(isinstance(error, MessageNacked) for error in seen):
        return (
            "RabbitMQ refused the message (basic.nack): a quorum queue without a "
            "majority of its members online, or a full queue, takes no message"
        )
    if any(isinstance(error, (socket.timeout, TimeoutError)) for error in seen):
        return (
            f"RabbitMQ did not confirm the message within {confirm_timeout or 0:g}s "
            "(publish_confirm_timeout): a quorum queue without a majority of its "
            "members online, or a broker that blocks publishers, does not answer"
        )
    return f"RabbitMQ could not be reached ({last})"
