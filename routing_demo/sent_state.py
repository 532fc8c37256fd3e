"""A ``SENT`` state recorded at publish time, so that an id the result backend
knows nothing about is told apart from a task that is queued but not started.

Celery reports ``PENDING`` for both: for a task still waiting in its queue
and for an id that never existed or whose result expired (``result_expires``).
Here the publishing process writes ``SENT`` (with the task name, exchange,
routing key and time) right after the message left, from Celery's
``after_task_publish`` signal. The worker then overwrites it with
``STARTED``/``SUCCESS`` as usual, so a backend that reads ``PENDING`` really
has no record of the id.

Only the Redis backend (and its Sentinel variant) takes part: it can write the
record *only if no record exists yet* (``SET NX``), which matters because a fast
worker may already have stored ``STARTED`` or ``SUCCESS`` before the publisher
gets here; a plain write would then turn a finished task back into ``SENT``.
The ``rpc://`` backend has no store another process could read, and other
backends are left alone. Nothing runs on the worker's side: the cost is one
Redis command per publish, in the publisher.

Celery's ``after_task_publish`` signal is process-wide and names only the
task, so another app publishing in the same process (a test's app, an
application that imports this one) would fire it too. ``install`` therefore
gives the app ``SentStateAMQP``, whose publish marks which app is publishing,
and the receiver records only its own app's tasks, in its own app's backend.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.backends.base import Backend
from celery.backends.redis import RedisBackend
from celery.signals import after_task_publish

__all__ = ["SENT", "SentStateAMQP", "install", "records_sent_state", "suppressed"]

#: The state a published but not yet started task reads as.
SENT = "SENT"

#: Set while a publish is only simulated (``routes explain``): nothing to record.
_suppressed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "routing_demo_sent_state_suppressed", default=False
)


#: The app whose task is being published in this context, if any.
_publishing_app: contextvars.ContextVar[Celery | None] = contextvars.ContextVar(
    "routing_demo_sent_state_publishing_app", default=None
)


class SentStateAMQP(AMQP):
    """Celery's AMQP, with a publish that says which app is publishing while
    the ``after_task_publish`` receivers run."""

    def _create_task_sender(self) -> Any:
        send = super()._create_task_sender()
        app = self.app

        def send_task_message(*args: Any, **kwargs: Any) -> Any:
            token = _publishing_app.set(app)
            try:
                return send(*args, **kwargs)
            finally:
                _publishing_app.reset(token)

        return send_task_message


def records_sent_state(backend: Backend) -> bool:
    """Whether ``backend`` can hold a ``SENT`` record without racing the worker."""
    return isinstance(backend, RedisBackend)


@contextmanager
def suppressed() -> Iterator[None]:
    """Publish signals inside this block record nothing."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def _task_id(headers: dict[str, Any] | None, body: Any) -> str | None:
    # Task protocol 2 keeps the id in the headers, protocol 1 in the body.
    if headers and headers.get("id"):
        return headers["id"]
    if isinstance(body, dict):
        return body.get("id")
    return None


def install(app: Celery) -> None:
    """Record ``SENT`` for every task ``app`` publishes from this process.

    Call it before the app's first publish (it sets ``app.amqp_cls``).
    Idempotent: installing twice connects one receiver.
    """
    if not (isinstance(app.amqp_cls, type) and issubclass(app.amqp_cls, SentStateAMQP)):
        if "amqp" in app.__dict__:
            raise RuntimeError(f"install SENT recording before {app.main!r} publishes anything")
        app.amqp_cls = SentStateAMQP

    def record_sent(
        sender: str | None = None,
        headers: dict[str, Any] | None = None,
        body: Any = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        **_: Any,
    ) -> None:
        if _suppressed.get() or _publishing_app.get() is not app:
            return
        backend = app.backend
        task_id = _task_id(headers, body)
        if task_id is None or not records_sent_state(backend):
            return
        meta = {
            "status": SENT,
            "result": None,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": task_id,
            "name": sender,
            "exchange": exchange,
            "routing_key": routing_key,
            "date_sent": datetime.now(timezone.utc).isoformat(),
        }
        backend.client.set(
            backend.get_key_for_task(task_id),
            backend.encode(meta),
            nx=True,
            ex=backend.expires or None,
        )

    after_task_publish.connect(
        record_sent, weak=False, dispatch_uid=f"routing_demo.sent_state:{id(app)}"
    )
