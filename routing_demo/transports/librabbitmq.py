"""kombu's librabbitmq transport, adapted to kombu 5.7.

librabbitmq is a C AMQP 0-9-1 client (rabbitmq-c underneath). Its last
release, 2.0.0, predates kombu 5.7, which passes ``on_cancel=`` to
``Channel.basic_consume``; librabbitmq's ``basic_consume`` has no such
parameter, so with kombu's own transport every consumer, and so every Celery
worker, fails with ``TypeError``. :class:`Transport` here is kombu's transport
with a channel that accepts ``on_cancel`` and drops it, and messages whose
body is copied out of rabbitmq-c's frame buffer into ``bytes`` (librabbitmq
hands consumers a ``memoryview`` of that buffer, which Celery's prefork pool
cannot pickle and rabbitmq-c reuses for the next frame), and an event-loop
registration that also drains what rabbitmq-c has already buffered (a
``celery control add_consumer`` could otherwise leave deliveries unseen).

What librabbitmq cannot do, whatever the adapter:

- **No TLS.** kombu refuses ``ssl`` with this transport; use ``amqps://``
  (py-amqp) for encrypted connections.
- **No publisher confirms**, so nothing tells a publisher that the broker
  took a message, and **no quorum queues** (Celery needs confirms for them).
  librabbitmq would silently ignore ``confirm_publish``; this transport
  refuses it instead.
- **No heartbeats**: a dead TCP peer is noticed only when a read or write
  fails, not within a heartbeat interval.
- **No consumer-cancel notifications**: the dropped ``on_cancel`` means a
  queue deleted under a consumer is not reported to it.

Choose it with ``broker_transport`` (see :mod:`routing_demo.transports`);
importing this module needs librabbitmq installed
(``scripts/build-librabbitmq.py --install``).
"""

from __future__ import annotations

from typing import Any

try:
    from kombu.transport import librabbitmq as kombu_librabbitmq
except ImportError as exc:  # librabbitmq itself (the C module) is missing
    raise ImportError(
        "the librabbitmq transport needs the librabbitmq package, which has no wheel for "
        "this Python on PyPI: build and install one with "
        "`.venv/bin/python scripts/build-librabbitmq.py --install`, or use pyamqp:// "
        f"({exc})"
    ) from exc

__all__ = ["Channel", "Connection", "Message", "Transport", "UnsupportedFeature"]

#: Transport options librabbitmq would accept and then silently ignore,
#: with what to do instead.
UNSUPPORTED_OPTIONS = {
    "confirm_publish": "librabbitmq has no publisher confirms (and so no quorum queues): "
    "use pyamqp:// for confirm_publish",
}


class UnsupportedFeature(ValueError):
    """A setting asks for something librabbitmq cannot do."""


class Message(kombu_librabbitmq.Message):
    """A delivered message whose body is ``bytes``.

    librabbitmq hands a consumer's callback a ``memoryview`` of rabbitmq-c's
    frame buffer, which rabbitmq-c reuses for the next frames: a body kept
    past the callback (Celery's request does, to send it to a pool process)
    may change under it, and a ``memoryview`` cannot be pickled at all (the
    prefork pool fails with ``TypeError: cannot pickle memoryview objects``).
    The body is copied once, while the buffer is still valid.
    """

    def __init__(self, channel: Any, props: Any, info: Any, body: Any) -> None:
        if isinstance(body, memoryview):
            body = body.tobytes()
        super().__init__(channel, props, info, body)


class Channel(kombu_librabbitmq.Channel):
    """kombu's librabbitmq channel, accepting kombu 5.7's ``basic_consume`` call."""

    Message = Message

    def basic_consume(self, *args: Any, on_cancel: Any = None, **kwargs: Any) -> str:
        """Start a consumer; ``on_cancel`` (kombu 5.7) is accepted and dropped.

        kombu calls it when the broker cancels a consumer (``basic.cancel``
        from the server, e.g. its queue was deleted); librabbitmq does not
        deliver that frame to Python, so there is nothing to call it with.
        """
        return super().basic_consume(*args, **kwargs)


class Connection(kombu_librabbitmq.Connection):
    """kombu's librabbitmq connection, opening :class:`Channel` channels and
    delivering :class:`Message` messages (the C module builds each delivered
    message with the connection's ``Message``)."""

    Channel = Channel
    Message = Message


class Transport(kombu_librabbitmq.Transport):
    """kombu's librabbitmq transport with the kombu 5.7 channel adapter.

    Selected by class path (:data:`routing_demo.transports.LIBRABBITMQ_TRANSPORT`),
    never by kombu's ``amqp://`` auto-switch, which picks kombu's own class.
    """

    Connection = Connection

    #: ``(hub, callback)`` while a connection is registered with an event loop.
    _tick: tuple[Any, Any] | None = None

    def register_with_event_loop(self, connection: Connection, loop: Any) -> None:
        """Read when the socket is readable (kombu's way), and also on every
        loop iteration.

        rabbitmq-c reads the socket in chunks: a synchronous call made outside
        the reader (Celery's ``add_consumer`` runs ``basic.consume`` from
        ``call_soon``; a timer may change ``basic.qos``) can pull deliveries into
        rabbitmq-c's buffer while waiting for its reply. The socket is then no
        longer readable, so the loop would not look at them until more data
        arrives, possibly never. Draining on each tick (a non-blocking read
        that stops at once when nothing is buffered) delivers them.
        """
        super().register_with_event_loop(connection, loop)
        self._forget_tick()

        def drain_buffered() -> None:
            if connection.connected:
                self.on_readable(connection, loop)

        loop.on_tick.add(drain_buffered)
        self._tick = (loop, drain_buffered)

    def _forget_tick(self) -> None:
        if self._tick is not None:
            loop, callback = self._tick
            loop.on_tick.discard(callback)
            self._tick = None

    def close_connection(self, connection: Connection) -> None:
        self._forget_tick()
        super().close_connection(connection)

    def _collect(self, connection: Connection | None) -> None:
        self._forget_tick()
        super()._collect(connection)

    def establish_connection(self) -> Connection:
        """Refuse transport options librabbitmq would ignore, then connect."""
        for option, advice in UNSUPPORTED_OPTIONS.items():
            if (self.client.transport_options or {}).get(option):
                raise UnsupportedFeature(f"{option}: {advice}")
        return super().establish_connection()
