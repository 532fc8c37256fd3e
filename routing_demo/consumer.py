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

Two more changes keep the worker fit for quorum queues and RabbitMQ 4.3:
on quorum queues it declares every task queue before Celery's native
delayed delivery binds them all (celery#9699), and it never asks for
*global* QoS (RabbitMQ 4.3 denies it): see the steps below. And it never
publishes on its consuming connection (the start-up sync included): RabbitMQ
blocks a connection that publishes during a resource alarm, and a blocked
connection is not read, acks and all.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from celery import bootsteps
from celery.utils.objects import Bunch
from celery.utils.quorum_queues import detect_quorum_queues
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.consumer.control import Control as CeleryControl
from celery.worker.consumer.delayed_delivery import DelayedDelivery as CeleryDelayedDelivery
from celery.worker.consumer.gossip import Gossip as CeleryGossip
from celery.worker.consumer.mingle import Mingle as CeleryMingle
from celery.worker.consumer.tasks import Tasks as CeleryTasks
from kombu.common import Broadcast
from kombu.message import Message
from kombu.utils.encoding import safe_repr

from .publish import BrokerBlocked
from .topology import dead_letter_queue, unroutable_queue
from .transports.pyamqp import sending_within

__all__ = [
    "Consumer",
    "Control",
    "DeclareQueues",
    "DelayedDelivery",
    "Gossip",
    "Mingle",
    "PerConsumerPrefetchTasks",
]

logger = logging.getLogger(__name__)

#: Seconds the start-up ``hello`` may wait on a broker that blocks publishers.
HELLO_TIMEOUT = 2.0


class DeclareQueues(bootsteps.StartStopStep):
    """Declare the holding queues, and on quorum queues every task queue, on
    every (re)connection, before anything consumes.

    RabbitMQ silently drops a dead letter (or an unroutable message) whose
    exchange does not exist, so the worker makes sure the ``dead_letter`` and
    ``unroutable`` exchanges and queues exist; after a broker restart the
    step runs again.

    On quorum queues Celery's ``DelayedDelivery`` step binds *every* queue of
    ``app.amqp.queues`` to ``celery_delayed_delivery``, not only the ones this
    worker consumes (celery#9699). Binding a queue that does not exist yet
    (the ``add`` worker, started before any ``sub`` worker, binding ``sub``)
    fails with ``NOT_FOUND``: "Failed to bind queue", and a delayed ``sub``
    task would have no way into its queue. Declaring them all (declared, not
    consumed: nothing here takes a message) gives every binding its queue.
    """

    requires = ("celery.worker.consumer.connection:Connection",)

    def start(self, parent: CeleryConsumer) -> None:
        channel = parent.connection.default_channel
        queues = [dead_letter_queue, unroutable_queue]
        app = parent.app
        if detect_quorum_queues(app, parent.connection.transport.driver_type)[0]:
            queues += [
                queue for queue in app.amqp.queues.values() if not isinstance(queue, Broadcast)
            ]
        for queue in queues:
            queue(channel).declare()


class Mingle(CeleryMingle):
    """Celery's start-up sync with the other workers, sent on a connection of
    its own rather than on the worker's consuming connection.

    RabbitMQ blocks a connection that publishes during a resource alarm and
    stops reading it: had the ``hello`` broadcast gone out on the consuming
    connection, the worker's ``basic.consume`` and acks would go unread too,
    and a worker started during an alarm would never consume, when consuming
    is what clears a memory alarm. On its own connection the hello is given
    up after ``HELLO_TIMEOUT`` seconds if the broker blocks it.
    """

    def send_hello(self, c: CeleryConsumer) -> dict[str, object]:
        inspect = c.app.control.inspect(timeout=1.0)
        our_revoked = list(c.controller.state.revoked)
        try:
            with sending_within(HELLO_TIMEOUT):
                replies = inspect.hello(c.hostname, our_revoked) or {}
        except BrokerBlocked as exc:
            logger.warning("mingle: skipped, no sync with other workers: %s", exc)
            return {}
        replies.pop(c.hostname, None)  # our own answer
        return replies


class PerConsumerPrefetchTasks(CeleryTasks):
    """Celery's task consumer, with a per-consumer prefetch limit only.

    On RabbitMQ 3.3 to 3.13 Celery sets its prefetch limit with *global* QoS
    (``basic.qos global=true``: one limit shared by the channel) unless it
    detects quorum queues, which refuse it. RabbitMQ 4.3 denies global QoS
    altogether. Each of our workers consumes one queue on one channel, so a
    per-consumer limit allows exactly as many unacknowledged messages.

    The cost, as with Celery on quorum queues: RabbitMQ applies a changed
    per-consumer limit only to consumers created afterwards, so the prefetch
    count is static. On classic queues, countdown/ETA tasks held by the
    worker occupy prefetch slots until they are due.
    """

    #: The queues exist before anything consumes (``DeclareQueues``); the
    #: start-up sync is ours (``Mingle``).
    requires = (Mingle, DeclareQueues)

    def qos_global(self, c: CeleryConsumer) -> bool:
        return False


class Gossip(CeleryGossip):
    """Celery's gossip step, after our start-up sync step."""

    requires = (Mingle,)


class Control(CeleryControl):
    """Celery's remote control step, after our task consumer step."""

    requires = (PerConsumerPrefetchTasks,)


class DelayedDelivery(CeleryDelayedDelivery):
    """Celery's native delayed delivery step (quorum queues only), after our
    task consumer step and once ``DeclareQueues`` has declared every queue it binds."""

    requires = (PerConsumerPrefetchTasks, DeclareQueues)


#: Celery's consumer steps -> ours, in Celery's order.
_REPLACED_STEPS = {
    "celery.worker.consumer.mingle:Mingle": f"{__name__}:Mingle",
    "celery.worker.consumer.gossip:Gossip": f"{__name__}:Gossip",
    "celery.worker.consumer.control:Control": f"{__name__}:Control",
    "celery.worker.consumer.tasks:Tasks": f"{__name__}:PerConsumerPrefetchTasks",
    "celery.worker.consumer.delayed_delivery:DelayedDelivery": f"{__name__}:DelayedDelivery",
}


class Consumer(CeleryConsumer):
    """Celery's consumer: declares the holding (and on quorum queues, the task)
    queues, uses per-consumer prefetch only, dead-letters undecodable bodies,
    and reports refused messages to their senders."""

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps: ClassVar[list[str]] = [
            "celery.worker.consumer.connection:Connection",
            "routing_demo.consumer:DeclareQueues",
            *(
                _REPLACED_STEPS.get(step, step)
                for step in CeleryConsumer.Blueprint.default_steps[1:]
            ),
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
