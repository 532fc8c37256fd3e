"""The ``rpc://`` result backend, without a queue declare on every send and
without a publisher-confirm wait on every result.

Celery's ``RPCBackend.on_task_call`` declares the caller's reply queue
before *every* task it sends (kombu caches no declaration of an auto-delete
queue), one synchronous round trip to RabbitMQ per send. The reply queue is
one per client (named after the app's thread oid), durable and auto-delete:
once declared it exists until a consumer that subscribed to it goes away.
So it is declared once per connection, and again after this process's
result consumer stopped consuming from it (the one event that can delete it).

The worker publishes each state (STARTED, then SUCCESS or FAILURE) as a
message to that reply queue. With ``confirm_publish`` on the app's
connections, Celery would wait for RabbitMQ's confirm of each one, a round
trip per state that holds the pool process. Here results go through
connections without publisher confirms, because a confirm buys a result
nothing: the message is transient (``result_persistent = False``) in an
auto-delete queue, so a broker restart loses it confirmed or not; only the
waiting caller reads it, and its ``.get()`` (with a timeout) is the
end-to-end confirmation. Task messages are unaffected: they are sent through
the app's own, confirming, connections.
"""

from __future__ import annotations

import weakref
from typing import Any

from celery._state import task_join_will_block
from celery.backends.rpc import ResultConsumer as CeleryResultConsumer
from celery.backends.rpc import RPCBackend as CeleryRPCBackend
from kombu import pools
from kombu.common import maybe_declare
from kombu.pools import ProducerPool

__all__ = ["RESULT_CONNECTION_NAME", "RPCBackend", "ResultConsumer"]

#: The name result connections give themselves (AMQP client property
#: ``connection_name``): the management UI and API show it, so the
#: unconfirmed connections can be told from the app's confirming ones.
RESULT_CONNECTION_NAME = "routing_demo rpc results"


class ResultConsumer(CeleryResultConsumer):
    """Celery's rpc result consumer; stopping or cancelling it forgets which
    connections declared the reply queue, since auto-delete may remove it."""

    def cancel_for(self, task_id: str) -> None:
        self.backend.forget_reply_queue_declarations()
        super().cancel_for(task_id)

    def stop(self) -> None:
        self.backend.forget_reply_queue_declarations()
        super().stop()

    def _reconnect(self) -> None:
        self.backend.forget_reply_queue_declarations()
        super()._reconnect()


class RPCBackend(CeleryRPCBackend):
    """Celery's ``rpc://`` backend; the reply queue is declared once per
    producer connection instead of once per send, and results are published
    without waiting for publisher confirms."""

    ResultConsumer = ResultConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The AMQP connections the reply queue was declared on.
        self._reply_queue_declared_on: weakref.WeakSet[Any] = weakref.WeakSet()
        #: This process's producers for results (see ``result_producer_pool``).
        self._result_producer_pool: ProducerPool | None = None

    def _after_fork(self) -> None:
        # A pool process must open its own connections, never share the parent's.
        super()._after_fork()
        self._result_producer_pool = None

    @property
    def result_producer_pool(self) -> ProducerPool:
        """Producers on connections that do not wait for publisher confirms.

        The broker's connection settings with ``confirm_publish`` off, named
        ``RESULT_CONNECTION_NAME``: its own pool of connections (kombu keys
        pools by connection settings), separate from the app's, whose task
        publishes stay confirmed. When the
        app's connections do not confirm anyway (librabbitmq has no confirms,
        and its transport refuses the option), the app's own pool.
        """
        if not (self.app.conf.broker_transport_options or {}).get("confirm_publish"):
            return self.app.amqp.producer_pool
        if self._result_producer_pool is None:
            connection = self.app.connection_for_write(
                transport_options={
                    "confirm_publish": False,
                    "client_properties": {"connection_name": RESULT_CONNECTION_NAME},
                }
            )
            producer_pool = pools.producers[connection]
            producer_pool.limit = self.app.pool.limit
            self._result_producer_pool = producer_pool
        return self._result_producer_pool

    def store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Celery's ``store_result``, through ``result_producer_pool``: the
        message is written to the connection, retried if that fails, and not
        waited on."""
        routing_key, correlation_id = self.destination_for(task_id, request)
        if not routing_key:
            return None
        with self.result_producer_pool.acquire(block=True) as producer:
            producer.publish(
                self._to_result(task_id, state, result, traceback, request),
                exchange=self.exchange,
                routing_key=routing_key,
                correlation_id=correlation_id,
                serializer=self.serializer,
                retry=True,
                retry_policy=self.retry_policy,
                declare=self.on_reply_declare(task_id),
                delivery_mode=self.delivery_mode,
            )
        return result

    def forget_reply_queue_declarations(self) -> None:
        self._reply_queue_declared_on.clear()

    def on_task_call(self, producer: Any, task_id: str) -> None:
        if task_join_will_block():
            return
        connection = producer.channel.connection
        if connection in self._reply_queue_declared_on:
            return
        maybe_declare(self.binding(producer.channel), retry=True)
        self._reply_queue_declared_on.add(connection)
