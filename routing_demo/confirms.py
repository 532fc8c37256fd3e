"""Publisher confirms, pipelined: many messages in flight on one channel.

py-amqp's confirmed publish (``basic_publish_confirm``) keeps one message in
flight and waits for its confirm before the next is sent; a persistent
message is confirmed once it is on disk, so a batch costs one disk sync per
message. RabbitMQ's own advice for throughput is to publish without waiting
and to handle the confirms as they arrive. ``ConfirmWindow`` does that on a
channel of its own in confirm mode:

- up to ``window`` messages are unconfirmed at any time; acks and nacks
  (``multiple=True`` included) are collected as they come, between
  publishes and in ``wait_confirmed``;
- a nacked message is republished after the retry policy's interval;
- a lost connection, or a confirm wait that outlasts ``confirm_timeout``,
  reconnects (to the next broker of a cluster URL list) and republishes
  every message not confirmed yet, in the order they were first sent;
- ``wait_confirmed`` returns only when every message is confirmed, and
  raises ``BatchPublishFailed`` naming the tasks that were not when RabbitMQ
  confirmed nothing for ``timeout`` seconds, or a message was nacked more
  often than the retry policy allows.

The guarantee is the one of a confirmed single publish: returned means
stored. A message republished after a lost connection may have been stored
already (its confirm was lost with the connection): delivery stays at least
once, never at most once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amqp import Message
from amqp.exceptions import MessageNacked
from kombu import Connection
from kombu.exceptions import OperationalError

from .publish import PublishFailed, explain
from .transports.pyamqp import BLOCKED_WAIT, frames_waiting

__all__ = ["BatchPublishFailed", "ConfirmWindow", "Outstanding"]

#: Unconfirmed messages allowed on the channel before a publish waits.
DEFAULT_WINDOW = 1000
#: Longest single wait on a blocked connection: the deadline is looked at
#: after each.
_BLOCKED_POLL = 1.0


class BatchPublishFailed(PublishFailed):
    """Some messages of a pipelined batch were not confirmed.

    ``task_ids`` names the tasks that may not be stored (re-send them);
    ``confirmed`` counts those that are.
    """

    def __init__(self, message: str, *, task_ids: list[str | None], confirmed: int) -> None:
        super().__init__(message)
        self.task_ids = task_ids
        self.confirmed = confirmed


@dataclass
class Outstanding:
    """A message published and not confirmed yet, with what it takes to
    publish it again."""

    sequence: int
    message: Message
    exchange: str
    routing_key: str
    mandatory: bool = False
    immediate: bool = False
    nacks: int = 0
    task_id: str | None = field(default=None)


def _task_id(message: Message) -> str | None:
    """The Celery task id in the message's headers (task protocol 2), if any."""
    headers = message.properties.get("application_headers") or {}
    task_id = headers.get("id")
    return task_id if isinstance(task_id, str) else None


class ConfirmWindow:
    """Publish on ``connection`` with pipelined confirms (see the module).

    ``connection`` is a kombu connection (a pooled one is fine: the window
    opens a channel of its own and closes it in ``close``). ``on_confirmed``
    is called with each message once RabbitMQ confirmed it (never before
    the ``publish`` call that sent it has returned).
    """

    def __init__(
        self,
        connection: Connection,
        *,
        window: int = DEFAULT_WINDOW,
        confirm_timeout: float | None = None,
        timeout: float | None = None,
        retry_policy: Mapping[str, Any] | None = None,
        on_confirmed: Callable[[Outstanding], None] | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, not {window}")
        self.connection = connection
        self.window = window
        self.confirm_timeout = confirm_timeout or None
        self.timeout = timeout or None
        self.retry_policy = dict(retry_policy or {})
        self.on_confirmed = on_confirmed
        #: Delivery tag on the current channel -> the message it tags.
        self.unconfirmed: dict[int, Outstanding] = {}
        #: Nacked messages waiting for their retry interval.
        self.nacked: list[Outstanding] = []
        self.published = 0
        self.confirmed = 0
        self.reconnects = 0
        #: What went wrong along the way (lost connections, confirm waits).
        self.errors: list[BaseException] = []
        self._last_progress = time.monotonic()
        self._channel: Any = None
        self._next_tag = 1
        self._open_channel()

    # --- the channel --------------------------------------------------------------
    @property
    def channel(self) -> Any:
        """The py-amqp channel in confirm mode messages go out on now."""
        return self._channel

    def _open_channel(self) -> None:
        self.connection.ensure_connection(
            max_retries=self.retry_policy.get("max_retries"),
            interval_start=self.retry_policy.get("interval_start", 2),
            interval_step=self.retry_policy.get("interval_step", 2),
            interval_max=self.retry_policy.get("interval_max", 30),
            timeout=self._remaining(),
        )
        channel = self.connection.channel()
        channel.confirm_select()
        # Tell py-amqp's own confirmed publish (if anything uses this
        # channel through it) that confirm.select was sent already.
        channel._confirm_selected = True
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._channel = channel
        self._next_tag = 1

    def close(self) -> None:
        """Close the window's channel (the connection stays open)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            try:
                channel.close()
            except self._connection_errors():
                pass

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        return (
            *self.connection.connection_errors,
            *self.connection.channel_errors,
            OSError,
        )

    # --- publishing ---------------------------------------------------------------
    def publish(
        self,
        message: Message,
        exchange: str = "",
        routing_key: str = "",
        mandatory: bool = False,
        immediate: bool = False,
        **_: Any,
    ) -> None:
        """Send ``message`` without waiting for its confirm (only for room
        in the window). Signature of py-amqp's ``basic_publish``."""
        item = Outstanding(
            self.published,
            message,
            exchange,
            routing_key,
            mandatory,
            immediate,
            task_id=_task_id(message),
        )
        self.published += 1
        # Confirms are read before the next publish, never right after this
        # one: the caller learns of this message's confirm (``on_confirmed``)
        # only once it has returned from this call.
        if self._readable():
            self._wait_some(timeout=self.confirm_timeout, held=item)
        # Nothing is written to a connection RabbitMQ blocks (a resource
        # alarm): it would sit unread in the socket's buffers.
        while self._blocked_reason() is not None or len(self.unconfirmed) >= self.window:
            self._wait_some(timeout=self.confirm_timeout, held=item)
        self._send([item])

    def _send(self, items: list[Outstanding]) -> None:
        # Every message is registered under the delivery tag it will get
        # before anything is written: if a write breaks the connection,
        # recovery republishes all of them, written or not.
        for item in items:
            self.unconfirmed[self._next_tag] = item
            self._next_tag += 1
        try:
            for item in items:
                self._channel._basic_publish(
                    item.message, item.exchange, item.routing_key, item.mandatory, item.immediate
                )
        except self._connection_errors() as exc:
            self._recover(exc)

    # --- confirms -------------------------------------------------------------------
    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        for item in self._take(delivery_tag, multiple):
            self.confirmed += 1
            if self.on_confirmed is not None:
                self.on_confirmed(item)
        self._last_progress = time.monotonic()

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        for item in self._take(delivery_tag, multiple):
            item.nacks += 1
            self.nacked.append(item)
        self.errors.append(MessageNacked(f"basic.nack for delivery tag {delivery_tag}"))

    def _take(self, delivery_tag: int, multiple: bool) -> list[Outstanding]:
        if not multiple:
            item = self.unconfirmed.pop(delivery_tag, None)
            return [item] if item is not None else []
        # Tags are inserted in ascending order: the oldest come first.
        taken = []
        for tag in list(self.unconfirmed):
            if tag > delivery_tag:
                break
            taken.append(self.unconfirmed.pop(tag))
        return taken

    def _readable(self) -> bool:
        """Whether confirms (or other frames) wait to be read, without blocking."""
        return frames_waiting(self._channel.connection)

    def _blocked_reason(self) -> str | None:
        """Why RabbitMQ blocks the window's connection, if it does."""
        return getattr(self._channel.connection, "blocked_reason", None)

    def _wait_some(self, timeout: float | None, held: Outstanding | None = None) -> None:
        """Read frames until at least one arrives (confirms are dispatched
        to ``_on_ack``/``_on_nack``); a confirm wait past ``timeout`` or a
        lost connection recovers the channel.

        A connection RabbitMQ blocks is not recovered (a new one would be
        blocked too, and a republished copy stored twice once the alarm
        clears): the wait goes on until the deadline, where the connection
        is reset so that the unconfirmed messages are never stored, and the
        batch fails naming them and ``held`` (not written yet).
        """
        connection = self._channel.connection
        blocked = self._blocked_reason() is not None
        try:
            connection.drain_events(
                timeout=min(timeout or _BLOCKED_POLL, _BLOCKED_POLL) if blocked else timeout
            )
        except TimeoutError as exc:
            if self._blocked_reason() is None:
                self._recover(exc)
            else:
                self._check_blocked_deadline(held)
        except self._connection_errors() as exc:
            self._recover(exc)

    def _check_blocked_deadline(self, held: Outstanding | None) -> None:
        remaining = self._remaining()
        since = getattr(self._channel.connection, "blocked_since", None) or time.monotonic()
        if remaining is None:
            remaining = BLOCKED_WAIT - (time.monotonic() - since)
        if remaining > 0:
            return
        connection = self._channel.connection
        error = connection.discard_unread()
        self.errors.append(error)
        self._fail("none of them is stored", held=held)

    def wait_confirmed(self) -> None:
        """Return once every message published so far is confirmed."""
        while self.unconfirmed or self.nacked:
            if self.nacked:
                self._republish_nacked()
            if self.unconfirmed:
                self._wait_some(timeout=self.confirm_timeout)

    def _republish_nacked(self) -> None:
        items, self.nacked = sorted(self.nacked, key=lambda item: item.sequence), []
        worst = max(item.nacks for item in items)
        max_retries = self.retry_policy.get("max_retries")
        if max_retries is not None and worst > max_retries:
            self.nacked = items
            destinations = sorted({f"{item.exchange}/{item.routing_key}" for item in items})
            self._fail(
                f"RabbitMQ refused {len(items)} of them {worst} times, sent to "
                f"{', '.join(destinations)} (exchange/routing key; a full queue with "
                "x-overflow reject-publish refuses until its workers make room)"
            )
        self._pause(self._interval(worst - 1))
        self._send(items)

    # --- recovery -----------------------------------------------------------------
    def _recover(self, exc: BaseException) -> None:
        """Reconnect and republish every message not confirmed yet."""
        self.errors.append(exc)
        lost = sorted([*self.unconfirmed.values(), *self.nacked], key=lambda item: item.sequence)
        self.unconfirmed.clear()
        self.nacked = lost  # where they wait if the reconnect fails for good
        attempt = 0
        while True:
            self._check_deadline()
            self.connection.collect()
            self._pause(self._interval(attempt))
            try:
                self._open_channel()
                break
            except (*self._connection_errors(), OperationalError) as again:
                self.errors.append(again)
                attempt += 1
        self.reconnects += 1
        self.nacked = []
        self._send(lost)

    def _interval(self, attempt: int) -> float:
        start = float(self.retry_policy.get("interval_start", 0))
        step = float(self.retry_policy.get("interval_step", 1))
        ceiling = float(self.retry_policy.get("interval_max", 5))
        return min(start + step * max(attempt, 0), ceiling)

    def _pause(self, seconds: float) -> None:
        remaining = self._remaining()
        if remaining is not None:
            seconds = min(seconds, remaining)
        if seconds > 0:
            time.sleep(seconds)  # the retry policy's back-off before reconnecting

    def _remaining(self) -> float | None:
        if self.timeout is None:
            return None
        return max(self.timeout - (time.monotonic() - self._last_progress), 0.0)

    def _check_deadline(self) -> None:
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            self._fail(f"RabbitMQ confirmed none of them for {self.timeout:g}s (publish_timeout)")

    def _fail(self, why: str, held: Outstanding | None = None) -> None:
        items = sorted(
            [*self.unconfirmed.values(), *self.nacked, *([held] if held else [])],
            key=lambda item: item.sequence,
        )
        ids = [item.task_id for item in items]
        shown = ", ".join(str(task_id) for task_id in ids[:10])
        more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
        last = self.errors[-1] if self.errors else RuntimeError("no error recorded")
        raise BatchPublishFailed(
            f"{len(items)} of {self.published} messages were not confirmed: {why}; "
            f"{explain(self.errors, last, self.confirm_timeout)}; not confirmed: {shown}{more}",
            task_ids=ids,
            confirmed=self.confirmed,
        ) from last
