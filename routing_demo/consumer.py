"""The worker's message consumer, changed so that no message is lost silently.

Celery's consumer *acknowledges* a body it cannot decode (malformed JSON,
invalid UTF-8): RabbitMQ then forgets it. Here such a message is *rejected*
instead, and since every task queue names a dead-letter exchange, RabbitMQ
moves it to the ``dead_letter`` queue with an ``x-death`` header (reason
``rejected``, the queue it left). Unknown task names, refused content types
(a pickled or YAML body) and messages without Celery's headers are already
rejected by Celery, so they take the same path.

Where a refused message carries a task id, its result is also marked
FAILURE with the reason, so the sender's ``.get()`` raises instead of
waiting forever on a task that will never run (Celery does this itself only
for unknown task names).

A message whose routing key matches no queue goes to the ``unroutable``
queue through the task exchange's alternate exchange; this consumer declares
both holding queues when it connects.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from celery import bootsteps
from celery.utils.objects import Bunch
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.message import Message
from kombu.utils.encoding import safe_repr

from .topology import dead_letter_queue, unroutable_queue

__all__ = ["Consumer", "DeclareHoldingQueues"]

logger = logging.getLogger(__name__)


class DeclareHoldingQueues(bootsteps.StartStopStep):
    """Declare the dead-letter and unroutable exchanges and queues on every
    (re)connection.

    RabbitMQ silently drops a dead letter (or an unroutable message) whose
    exchange does not exist, so the worker makes sure they exist before it
    consumes anything; after a broker restart the step runs again.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: CeleryConsumer) -> None:
        channel = parent.connection.default_channel
        for queue in (dead_letter_queue, unroutable_queue):
            queue(channel).declare()


class Consumer(CeleryConsumer):
    """Celery's consumer: declares the holding queues, dead-letters undecodable
    bodies, and reports refused messages to their senders."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps: ClassVar[list[str]] = [
            "celery.worker.consumer.connection:Connection",
            "routing_demo.consumer:DeclareHoldingQueues",
            *CeleryConsumer.Blueprint.default_steps[1:],
        ]

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        """Log why the body is unreadable, then dead-letter it (never requeue:
        it would fail the same way forever)."""
        logger.critical(
            "Can't decode message body: %r [type:%r encoding:%r headers:%s]; "
            "rejected to the dead-letter exchange",
            exc,
            message.content_type,
            message.content_encoding,
            safe_repr(message.headers),
        )
        message.reject(requeue=False)
        self._report_failure(message, exc)

    def on_invalid_task(self, body: object, message: Message, exc: Exception) -> None:
        """Celery logs and rejects (dead-letters) it; then tell the sender."""
        super().on_invalid_task(body, message, exc)
        self._report_failure(message, exc)

    def _report_failure(self, message: Message, exc: Exception) -> None:
        """Store FAILURE for the message's task id, if it has one."""
        headers = message.headers or {}
        task_id = headers.get("id")
        if not isinstance(task_id, str):
            return
        request = Bunch(
            name=headers.get("task"),
            chord=None,
            root_id=headers.get("root_id"),
            correlation_id=message.properties.get("correlation_id"),
            reply_to=message.properties.get("reply_to"),
            errbacks=None,
        )
        try:
            self.app.backend.mark_as_failure(task_id, exc, request=request)
        except Exception:  # the message is dead-lettered already; keep serving
            logger.exception("could not store FAILURE for refused task %s", task_id)
