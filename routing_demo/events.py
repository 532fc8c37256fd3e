"""Celery's task events, published without publisher confirms and saying
which exchange, routing key and queue brought each task to its worker.

Events are transient monitoring data (``delivery_mode=1``, exclusive
auto-delete ``celeryev.*`` queues): a broker restart loses them confirmed or
not, and a monitor that misses one reads the task's state from the result
backend. With ``confirm_publish`` on the app's connections, Celery would
still wait for RabbitMQ's confirm of every event, a round trip per event in
the worker's main process, which every task passes through. Here the
worker's event connection does not confirm; task publishes still do.

Celery's events name the worker but not the message's way there, so a
worker's task events here carry the ``exchange`` and ``routing_key`` the
message was delivered with (its AMQP delivery info) and the ``queue``: the
one queue this worker consumes that is bound to that exchange with a
matching key. AMQP does not tell a consumer which queue a delivery came
from; the worker knows what it consumes, so it works the queue out. The
same three names are on Celery's own ``task-sent`` event.

The app takes both through ``Celery(events=…, task_cls=…)``
(``routing_demo.celery``); nothing here connects on import.
"""

from __future__ import annotations

from typing import Any

from celery import Task as CeleryTask
from celery.app.events import Events as CeleryEvents
from celery.events.dispatcher import EventDispatcher as CeleryEventDispatcher
from celery.worker.request import Request as CeleryRequest
from kombu import pools
from kombu.pools import ProducerPool

from .rabbitmq import routing_key_matches

__all__ = [
    "EVENT_CONNECTION_NAME",
    "EventDispatcher",
    "Events",
    "Request",
    "Task",
    "confirms",
    "delivery_origin",
]

#: The name event connections give themselves (AMQP client property
#: ``connection_name``), so the management UI tells them from the app's
#: confirming connections.
EVENT_CONNECTION_NAME = "routing_demo events"

#: Transport options that turn a connection into an event connection.
EVENT_TRANSPORT_OPTIONS: dict[str, Any] = {
    "confirm_publish": False,
    "client_properties": {"connection_name": EVENT_CONNECTION_NAME},
}


def confirms(connection: Any) -> bool:
    """Whether channels of ``connection`` (a ``kombu.Connection``) wait for
    publisher confirms."""
    return bool((connection.transport_options or {}).get("confirm_publish"))


def delivery_origin(app: Any, delivery_info: dict[str, Any]) -> dict[str, Any]:
    """``exchange``, ``routing_key`` and ``queue`` of a delivered task message.

    ``queue`` is the queue among those ``app`` consumes (``-Q``/``-X`` already
    applied in a worker) that is bound to the delivery's exchange with a key
    matching its routing key; ``None`` when none or several match.
    """
    exchange = delivery_info.get("exchange") or ""
    routing_key = delivery_info.get("routing_key") or ""
    matches = set()
    for queue in app.amqp.queues.consume_from.values():
        if exchange == "":
            # The default exchange routes by queue name.
            if queue.name == routing_key:
                matches.add(queue.name)
            continue
        bindings = [queue, *(queue.bindings or ())]
        for binding in bindings:
            bound = binding.exchange
            if bound is None or bound.name != exchange:
                continue
            if routing_key_matches(bound.type, binding.routing_key or "", routing_key):
                matches.add(queue.name)
    queue_name = matches.pop() if len(matches) == 1 else None
    return {"exchange": exchange, "routing_key": routing_key, "queue": queue_name}


class EventDispatcher(CeleryEventDispatcher):
    """Celery's event dispatcher, publishing without publisher confirms.

    A connection it is given that is not connected yet (the worker gives it
    one of its own) is switched to ``EVENT_TRANSPORT_OPTIONS`` before it
    connects. An event to be published through a confirming producer (a
    channel of the app's producer pool, a task's producer for ``task-sent``)
    goes through a producer of ``event_producer_pool`` instead.

    It also adds a worker's ``task-received`` event the delivery origin that
    ``Request`` noted when it was created: Celery sends that event straight
    through the dispatcher, not through the request.
    """

    def __init__(self, connection: Any = None, *args: Any, **kwargs: Any) -> None:
        if connection is not None and confirms(connection) and connection._connection is None:
            # Replace (never update) the dict: it is this connection's own.
            connection.transport_options = {
                **connection.transport_options,
                **EVENT_TRANSPORT_OPTIONS,
            }
        #: Events dropped because RabbitMQ blocked their connection.
        self.dropped_while_blocked = 0
        #: (task id, origin) of the request created last (``note_received``).
        self._received: tuple[str, dict[str, Any]] | None = None
        self._event_producer_pool: ProducerPool | None = None
        super().__init__(connection, *args, **kwargs)

    @property
    def event_producer_pool(self) -> ProducerPool:
        """Producers on the app's broker without publisher confirms (a kombu
        pool of their own, keyed by the connection's settings)."""
        if self._event_producer_pool is None:
            connection = self.app.connection_for_write(transport_options=EVENT_TRANSPORT_OPTIONS)
            pool = pools.producers[connection]
            pool.limit = self.app.pool.limit
            self._event_producer_pool = pool
        return self._event_producer_pool

    def note_received(self, task_id: str, origin: dict[str, Any]) -> None:
        """Remember ``origin`` for the ``task-received`` event of ``task_id``,
        which the worker sends right after creating its request."""
        self._received = (task_id, origin)

    def send(self, type: str, *args: Any, **fields: Any) -> Any:
        if type == "task-received" and self._received is not None:
            task_id, origin = self._received
            if fields.get("uuid") == task_id:
                self._received = None
                fields = {**origin, **fields}
        return super().send(type, *args, **fields)

    def _publish(
        self, event: Any, producer: Any, routing_key: str, *args: Any, **kwargs: Any
    ) -> Any:
        connection = producer.connection if producer is not None else None
        if connection is None or not confirms(connection):
            return self._publish_unless_blocked(event, producer, routing_key, *args, **kwargs)
        with self.event_producer_pool.acquire(block=True) as unconfirmed:
            return self._publish_unless_blocked(event, unconfirmed, routing_key, *args, **kwargs)

    def _publish_unless_blocked(
        self, event: Any, producer: Any, routing_key: str, *args: Any, **kwargs: Any
    ) -> Any:
        """Publish, unless RabbitMQ blocks the connection (a resource alarm):
        then the event is dropped and counted in ``dropped_while_blocked``.

        Events are written without waiting for anything, and a blocked
        connection is not read: during a long alarm they would fill the
        socket's buffer, and the next write would stall the worker's main
        process, consuming included. An event is monitoring data; a monitor
        reads what it missed from the result backend.
        """
        amqp_connection = getattr(getattr(producer, "connection", None), "_connection", None)
        if hasattr(amqp_connection, "read_waiting_frames"):
            amqp_connection.read_waiting_frames()
            if amqp_connection.blocked_reason is not None:
                self.dropped_while_blocked += 1
                return None
        return super()._publish(event, producer, routing_key, *args, **kwargs)


class Events(CeleryEvents):
    """``app.events`` with ``EventDispatcher`` as ``app.events.Dispatcher``."""

    dispatcher_cls = "routing_demo.events:EventDispatcher"


class Request(CeleryRequest):
    """Celery's worker request; its task events carry ``delivery_origin``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._origin: dict[str, Any] | None = None
        eventer = self._eventer
        if eventer is not None and eventer.enabled and hasattr(eventer, "note_received"):
            eventer.note_received(self.id, self.origin)

    @property
    def origin(self) -> dict[str, Any]:
        """``delivery_origin`` of this request's message (worked out once)."""
        if self._origin is None:
            self._origin = delivery_origin(self._app, self.delivery_info)
        return self._origin

    def send_event(self, type: str, **fields: Any) -> None:
        if self._eventer and self._eventer.enabled and self.task.send_events:
            super().send_event(type, **{**self.origin, **fields})


class Task(CeleryTask):
    """The app's task base: runs its requests as ``Request``."""

    Request = "routing_demo.events:Request"
