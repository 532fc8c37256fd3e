"""Send many tasks at once, every one confirmed, at the speed of a pipeline.

A task sent alone waits for its own publisher confirm: one round trip (and,
for a persistent message, one disk sync) per task. Inside ``pipelined(app)``
every task the app sends (``delay``, ``apply_async``, ``send_task``, a
``group``) goes out on one channel with pipelined confirms
(``routing_demo.confirms``), and the block returns once RabbitMQ confirmed
all of them::

    from routing_demo.batch import pipelined, send_all

    with pipelined(app):
        results = [add.delay(i, i) for i in range(10_000)]
    # here every task is stored by RabbitMQ, or BatchPublishFailed was raised

    results = send_all(add.s(i, i) for i in range(10_000))  # the same, for signatures

``group(...).apply_async()`` on routing_demo's app is pipelined the same
way by itself. If RabbitMQ cannot confirm some of them (a nack retried as
often as ``task_publish_retry_policy`` allows, or no confirm for
``publish_timeout`` seconds through reconnects) the block raises
``BatchPublishFailed`` with the ids of the tasks that may not be stored.
The guarantee is the one of a single send: returned means stored.

Settings: ``publish_confirm_window`` (unconfirmed messages in flight, 1000),
``publish_confirm_timeout`` and ``publish_timeout`` (see ``routing_demo.publish``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.canvas import Signature
from celery.result import AsyncResult
from kombu import Connection, Producer

from .confirms import DEFAULT_WINDOW, BatchPublishFailed, ConfirmWindow, Outstanding
from .sent_state import publishing
from .task_template import Published, TaskTemplates

__all__ = [
    "Batch",
    "BatchPublishFailed",
    "active_batch",
    "batch_producer",
    "pipelined",
    "send_all",
]

#: The batch sends in this context join, if any.
_active: contextvars.ContextVar[Batch | None] = contextvars.ContextVar(
    "routing_demo_batch", default=None
)


class _PipelinedChannel:
    """The window's current channel, with ``basic_publish`` that does not
    wait for the confirm. Everything else (declares, ``prepare_message``)
    goes to the channel itself, whichever one recovery opened last."""

    def __init__(self, window: ConfirmWindow) -> None:
        self._window = window
        #: What Celery published through this channel since it was cleared.
        self.published: list[Published] = []

    def basic_publish(
        self,
        message: Any,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        immediate: bool = False,
        **_: Any,
    ) -> None:
        self.published.append(Published(message, exchange, routing_key, mandatory, immediate))
        self._window.publish(message, exchange, routing_key, mandatory, immediate)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._window.channel, name)


class Batch:
    """One pipelined batch: a pooled connection, a channel in confirm mode
    and a kombu producer that sends through it."""

    def __init__(self, app: Celery) -> None:
        conf = app.conf
        self.app = app
        self.connection: Connection = app.pool.acquire(block=True)
        #: Run once each message is confirmed (``routing_demo.sent_state``
        #: records SENT there): task id -> callbacks.
        self._on_confirmed: dict[str, list[Callable[[], None]]] = {}
        try:
            self.window = ConfirmWindow(
                self.connection,
                window=int(conf.get("publish_confirm_window") or DEFAULT_WINDOW),
                confirm_timeout=conf.get("publish_confirm_timeout"),
                timeout=conf.get("publish_timeout"),
                retry_policy=conf.task_publish_retry_policy,
                on_confirmed=self._confirmed,
            )
        except BaseException:
            self.connection.release()
            raise
        self._channel = _PipelinedChannel(self.window)
        self.producer = Producer(self._channel, auto_declare=False)
        self.templates = TaskTemplates(app)

    def send(
        self,
        name: str,
        args: Any,
        kwargs: Any,
        options: dict[str, Any],
        through_celery: Callable[[], AsyncResult],
    ) -> AsyncResult:
        """Send one task of the batch: stamped from its template when it has
        one (``routing_demo.task_template``), else through Celery
        (``through_celery``), whose message then becomes the template."""
        key = self.templates.key(name, options)
        stamped = self.templates.stamp(key, args, kwargs, options) if key is not None else None
        if stamped is None:
            self._channel.published.clear()
            result = through_celery()
            if key is not None and len(self._channel.published) == 1:
                self.templates.learn(key, self._channel.published[0])
            return result
        app = self.app
        if not stamped.ignore_result:
            app.backend.on_task_call(self.producer, stamped.task_id)
        published = stamped.published
        self.window.publish(
            published.message,
            published.exchange,
            published.routing_key,
            published.mandatory,
            published.immediate,
        )
        with publishing(app):
            self.templates.announce(name, stamped)
        result = (options.get("result_cls") or app.AsyncResult)(stamped.task_id)
        result.ignored = stamped.ignore_result
        if options.get("add_to_parent", True):
            parent = app.current_worker_task
            if parent is not None:
                parent.add_trail(result)
        return result

    def when_confirmed(self, task_id: str, callback: Callable[[], None]) -> None:
        """Run ``callback`` once RabbitMQ confirmed the task's message."""
        self._on_confirmed.setdefault(task_id, []).append(callback)

    def _confirmed(self, item: Outstanding) -> None:
        for callback in self._on_confirmed.pop(item.task_id or "", ()):
            callback()

    def finish(self) -> None:
        """Wait for every confirm, then give the connection back."""
        try:
            self.window.wait_confirmed()
        finally:
            self.window.close()
            self.connection.release()

    def abandon(self) -> None:
        """Give the connection back after the caller's own error."""
        try:
            self.window.close()
        finally:
            self.connection.release()


def active_batch(app: Celery) -> Batch | None:
    """The batch ``app``'s sends join in this context, if any."""
    batch = _active.get()
    return batch if batch is not None and batch.app is app else None


@contextmanager
def pipelined(app: Celery) -> Iterator[Batch]:
    """Every task ``app`` sends inside the block is pipelined; the block
    ends once all are confirmed (see the module). Nested blocks join the
    outer one, which waits for the confirms."""
    outer = active_batch(app)
    if outer is not None:
        yield outer
        return
    batch = Batch(app)
    token = _active.set(batch)
    try:
        yield batch
    except BatchPublishFailed:
        # The batch itself failed: its messages are accounted for already.
        _active.reset(token)
        batch.abandon()
        raise
    except BaseException as error:
        _active.reset(token)
        # The caller's error wins; what was sent is still waited for, so
        # that a confirm failure is not silent either.
        try:
            batch.finish()
        except BatchPublishFailed as failed:
            error.add_note(f"and the tasks sent before it: {failed}")
        raise
    else:
        _active.reset(token)
        batch.finish()


@contextmanager
def batch_producer(app: Celery) -> Iterator[Producer]:
    """``pipelined(app)``, yielding the producer its sends go through."""
    with pipelined(app) as batch:
        yield batch.producer


def send_all(signatures: Iterable[Signature], **options: Any) -> list[AsyncResult]:
    """``apply_async(**options)`` of every signature, pipelined; returns their
    results once RabbitMQ has confirmed them all."""
    signatures = list(signatures)
    if not signatures:
        return []
    app = signatures[0].app
    with pipelined(app):
        return [signature.apply_async(**options) for signature in signatures]
