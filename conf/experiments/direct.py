"""Experiment ``direct``: add, sub and default on a *direct* exchange.

A direct exchange delivers a message only to the queues bound with exactly
its routing key, so each task reaches one queue. The project's own queues,
routes and workers, on an exchange of this type declared here, so the
experiment stays a direct one whatever type the shipped topology uses.

Worth knowing: given a route to a queue on a direct exchange, Celery does not
publish to that exchange at all; it uses the AMQP default exchange (``""``),
which every queue is bound to by its own name. The experiment records the
exchange and routing key of each publish.
"""

from kombu import Exchange, Queue

from routing_demo.conf.celeryconfig import *  # noqa: F403
from routing_demo.topology import TASK_ROUTES, dead_letter_exchange, unroutable_exchange

direct_exchange = Exchange(
    "routing_demo.direct",
    type="direct",
    durable=True,
    arguments={"alternate-exchange": unroutable_exchange.name},
)


def _queue(name: str) -> Queue:
    return Queue(
        name,
        direct_exchange,
        routing_key=name,
        durable=True,
        queue_arguments={"x-dead-letter-exchange": dead_letter_exchange.name},
    )


default_queue = _queue("default")
task_queues = (default_queue, _queue("add"), _queue("sub"))
task_routes = TASK_ROUTES
task_default_queue = default_queue.name
task_default_exchange = direct_exchange.name
task_default_exchange_type = direct_exchange.type
task_default_routing_key = default_queue.routing_key
