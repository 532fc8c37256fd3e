"""Experiment ``quorum``: add and sub on quorum queues, with countdowns.

Quorum queues (``x-queue-type: quorum``) are replicated and need publisher
confirms to be safe (``confirm_publish``). They do not support per-channel
(global) prefetch, which Celery detects, nor a worker-side wait for an ETA
without blocking its prefetch, so Celery uses *native delayed delivery*: a
countdown task is published to ``celery_delayed_27`` and falls through a
ladder of ``celery_delayed_<n>`` queues with TTLs of 2**n seconds until
``celery_delayed_delivery`` hands it back to its own exchange. That last
hop works only from topic (or fanout) exchanges: the worker binds
``celery_delayed_delivery`` to each queue's exchange with ``#.<routing key>``
and skips direct exchanges. Hence the topic exchange here.
"""

from kombu import Exchange, Queue

from routing_demo.conf.celeryconfig import *  # noqa: F403
from routing_demo.topology import dead_letter_exchange, unroutable_exchange

#: A *topic* exchange, so that native delayed delivery can bind it.
quorum_exchange = Exchange(
    "routing_demo.quorum",
    type="topic",
    durable=True,
    arguments={"alternate-exchange": unroutable_exchange.name},
)

_quorum_arguments = {
    "x-queue-type": "quorum",
    "x-dead-letter-exchange": dead_letter_exchange.name,
}


def _quorum_queue(name: str) -> Queue:
    return Queue(
        name, quorum_exchange, routing_key=name, durable=True, queue_arguments=_quorum_arguments
    )


add_queue = _quorum_queue("add")
sub_queue = _quorum_queue("sub")
default_queue = _quorum_queue("default")

task_queues = (default_queue, add_queue, sub_queue)
task_default_queue = default_queue.name
task_default_exchange = quorum_exchange.name
task_default_exchange_type = quorum_exchange.type
task_default_routing_key = default_queue.routing_key
task_default_queue_type = "quorum"
#: Quorum queues need publisher confirms: a publish returns once the broker
#: has the message, or raises.
broker_transport_options = {"confirm_publish": True}
