"""Experiment ``priority``: a queue that delivers high-priority tasks first.

``x-max-priority`` makes RabbitMQ keep the queue ordered by message priority
(0 to 10 here; Celery's ``priority=`` sets it). The order applies only to
messages still *in the queue*: what a worker has already prefetched (up to
``worker_prefetch_multiplier`` times concurrency unacknowledged messages) runs in
arrival order, so a large prefetch defeats priority.
"""

from kombu import Queue

from routing_demo.conf.celeryconfig import *  # noqa: F403
from routing_demo.conf.celeryconfig import include
from routing_demo.topology import TASK_QUEUES, TASK_ROUTES, dead_letter_exchange, task_exchange

#: Highest priority the queue honours; RabbitMQ recommends small values.
MAX_PRIORITY = 10

priority_queue = Queue(
    "priority",
    task_exchange,
    routing_key="priority",
    durable=True,
    queue_arguments={
        "x-dead-letter-exchange": dead_letter_exchange.name,
        "x-max-priority": MAX_PRIORITY,
    },
)

include = [*include, "routing_demo.experiments.tasks"]
task_queues = (*TASK_QUEUES, priority_queue)
task_routes = {
    **TASK_ROUTES,
    "routing_demo.experiments.tasks.hold": {"queue": priority_queue.name},
    "routing_demo.experiments.tasks.record": {"queue": priority_queue.name},
}
#: Publisher confirms: ``delay()`` returns once RabbitMQ has the message in
#: the queue, so the experiment can count what is queued right after sending.
broker_transport_options = {"confirm_publish": True}
