"""The ``rpc://`` result backend, without a queue declare on every send.

Celery's ``RPCBackend.on_task_call`` declares the caller's reply queue
before *every* task it sends (kombu caches no declaration of an auto-delete
queue), one synchronous round trip to RabbitMQ per send. The reply queue is
one per client (named after the app's thread oid), durable and auto-delete:
once declared it exists until a consumer that subscribed to it goes away.
So it is declared once per connection, and again after this process's
result consumer stopped consuming from it (the one event that can delete it).
"""

from __future__ import annotations

import weakref
from typing import Any

from celery._state import task_join_will_block
from celery.backends.rpc import ResultConsumer as CeleryResultConsumer
from celery.backends.rpc import RPCBackend as CeleryRPCBackend
from kombu.common import maybe_declare

__all__ = ["RPCBackend", "ResultConsumer"]


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
    producer connection instead of once per send."""

    ResultConsumer = ResultConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The AMQP connections the reply queue was declared on.
        self._reply_queue_declared_on: weakref.WeakSet[Any] = weakref.WeakSet()

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
