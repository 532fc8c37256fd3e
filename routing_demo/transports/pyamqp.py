"""kombu's py-amqp transport, with RabbitMQ's blocked-connection notices kept
and a confirmed publish that cannot hang on a blocked broker.

Under a memory or disk alarm RabbitMQ *blocks* every connection that
publishes: it sends ``connection.blocked`` with a reason ("low on memory"),
then stops reading the socket. A publish written after that sits unread in
the socket's buffers: no confirm comes until the alarm clears, and py-amqp
would wait for it forever (or for ``confirm_timeout``, after which kombu
reconnects and writes another copy to another blocked connection). Worse,
each copy is still stored once the alarm clears: a connection closed the
ordinary way (FIN) has its unread bytes read and processed after all.

Here, on a connection in confirm mode:

- ``Connection`` keeps the reason RabbitMQ gave (py-amqp drops it) and since
  when the connection is blocked (``blocked_reason``, ``blocked_since``);
- a confirmed publish first reads any notice already waiting on the socket;
  on a connection known to be blocked it writes nothing and waits for
  ``connection.unblocked``;
- a publish that meets the alarm after it was written keeps waiting for its
  confirm: a sender that started waiting before the alarm cleared gets its
  confirm and returns;
- both waits end at the send's deadline (``send_deadline``, set for each
  task by ``routing_demo.publish``; ``BLOCKED_WAIT`` seconds otherwise).
  Then a message written and unconfirmed is *discarded*: the connection is
  reset (TCP RST), which makes the broker's kernel drop the bytes RabbitMQ
  has not read, so the message is never stored. ``BrokerBlocked`` says so.

Either the task is stored and confirmed, or the sender is told it was not
sent; never both, never neither. Consumers are not blocked (a connection
is blocked only once it has published), so workers keep draining the queues,
which is what clears a memory alarm.
"""

from __future__ import annotations

import contextvars
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import amqp
from amqp import spec
from amqp.exceptions import MessageNacked, RecoverableConnectionError
from kombu.transport import pyamqp

from ..publish import BrokerBlocked

__all__ = [
    "BLOCKED_WAIT",
    "Channel",
    "Connection",
    "SSLTransport",
    "Transport",
    "frames_waiting",
    "send_deadline",
    "sending_within",
]

#: Seconds a confirmed publish waits on a blocked connection when no send
#: deadline is set: a publish outside ``send_task`` (a worker's reply to a
#: control command, which holds its main process meanwhile; a control
#: broadcast outside the ``routes`` commands, which set their own).
BLOCKED_WAIT = 10.0

#: The monotonic time by which the current send must have ended, if any.
send_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "routing_demo_send_deadline", default=None
)


@contextmanager
def sending_within(seconds: float) -> Iterator[None]:
    """Confirmed publishes in the block give up on a blocked broker after
    ``seconds`` (a command's own timeout, rather than ``BLOCKED_WAIT``)."""
    token = send_deadline.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        send_deadline.reset(token)


#: Longest single wait on the socket while blocked: the alarm state and the
#: deadline are looked at again after each.
_POLL = 1.0


def frames_waiting(connection: amqp.Connection) -> bool:
    """Whether frames (confirms, notices) wait to be read, without blocking."""
    transport = connection.transport
    if getattr(transport, "_read_buffer", b""):
        return True
    sock = transport.sock
    pending = getattr(sock, "pending", None)  # TLS: bytes decrypted already
    if pending is not None and pending():
        return True
    return bool(select.select([sock], [], [], 0)[0])


class Channel(pyamqp.Channel):
    """kombu's py-amqp channel whose confirmed publish honours the alarm."""

    def basic_publish_confirm(self, *args: Any, **kwargs: Any) -> Any:
        connection = self.connection
        if connection is None:
            raise RecoverableConnectionError("basic_publish: connection closed")
        confirm_timeout = kwargs.pop("confirm_timeout", None)
        timeout = confirm_timeout or kwargs.get("timeout")
        deadline = send_deadline.get() or time.monotonic() + BLOCKED_WAIT
        connection.read_waiting_frames()
        if connection.blocked_reason is not None:
            connection.wait_unblocked(deadline)
        if not self._confirm_selected:
            self._confirm_selected = True
            self.confirm_select()
        result = self._basic_publish(*args, **kwargs)
        self._wait_confirm(timeout, deadline)
        return result

    def _wait_confirm(self, timeout: float | None, deadline: float) -> None:
        """py-amqp's confirm wait, which on a blocked connection goes on
        until ``deadline`` and then discards the message."""

        def on_confirm(method: Any, *args: Any) -> None:
            if method == spec.Basic.Nack:
                raise MessageNacked()

        started = time.monotonic()
        connection = self.connection
        while True:
            blocked = connection.blocked_reason is not None
            limit = deadline if blocked else (started + timeout if timeout else None)
            remaining = None if limit is None else limit - time.monotonic()
            if remaining is not None and remaining <= 0:
                if blocked:
                    raise connection.discard_unread()
                raise TimeoutError("timed out")
            try:
                self.wait(
                    [spec.Basic.Ack, spec.Basic.Nack],
                    callback=on_confirm,
                    timeout=min(remaining, _POLL) if remaining is not None else _POLL,
                )
                return
            except TimeoutError:
                continue


class Connection(pyamqp.Connection):
    """kombu's py-amqp connection, knowing whether RabbitMQ blocks it and why."""

    Channel = Channel

    #: ``connection.blocked`` carries a reason (a short string); py-amqp's
    #: table reads no arguments and reports a fixed text instead.
    _METHODS: ClassVar[dict[Any, Any]] = {
        **amqp.Connection._METHODS,
        spec.Connection.Blocked: spec.method(spec.Connection.Blocked, "s"),
    }

    #: Why RabbitMQ blocks this connection ("low on memory"), or ``None``.
    blocked_reason: str | None = None
    #: Monotonic time of the ``connection.blocked``, or ``None``.
    blocked_since: float | None = None

    def _on_blocked(self, reason: str = "") -> Any:
        self.blocked_reason = reason or "no reason given"
        self.blocked_since = time.monotonic()
        if self.on_blocked:
            return self.on_blocked(self.blocked_reason)
        return None

    def _on_unblocked(self) -> Any:
        self.blocked_reason = self.blocked_since = None
        return super()._on_unblocked()

    def read_waiting_frames(self) -> None:
        """Handle the frames already on the socket (a ``connection.blocked``
        sent while nothing was reading), without waiting for more."""
        while self.transport is not None and frames_waiting(self):
            try:
                self.drain_events(timeout=0.05)
            except TimeoutError:
                return

    def wait_unblocked(self, deadline: float) -> None:
        """Return once RabbitMQ unblocks this connection; raise
        ``BrokerBlocked`` (nothing was written) at ``deadline``."""
        while self.blocked_reason is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._blocked_error(written=False)
            try:
                self.drain_events(timeout=min(remaining, _POLL))
            except TimeoutError:
                continue

    def discard_unread(self) -> BrokerBlocked:
        """Reset the connection so that RabbitMQ never reads what was written
        on it; the error to raise, saying so.

        A reset (SO_LINGER 0, then close) discards the bytes still in the
        broker's receive buffer; an ordinary close would leave them to be
        read, and the messages stored, once the alarm clears.
        """
        error = self._blocked_error(written=True)
        sock = self.transport.sock if self.transport is not None else None
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            except OSError:
                pass
            self.transport.sock = None
            self.transport.connected = False
        self.collect()
        return error

    def _blocked_error(self, *, written: bool) -> BrokerBlocked:
        since = self.blocked_since or time.monotonic()
        return BrokerBlocked(
            self.blocked_reason or "no reason given", time.monotonic() - since, written=written
        )


class Transport(pyamqp.Transport):
    """kombu's py-amqp transport with the connection above."""

    Connection = Connection


class SSLTransport(pyamqp.SSLTransport):
    """kombu's py-amqp TLS transport (``amqps://``) with the connection above."""

    Connection = Connection
