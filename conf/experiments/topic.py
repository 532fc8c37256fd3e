"""Experiment ``topic``: add and sub published to a *topic* exchange.

A topic exchange compares a message's routing key, word by word (words are
separated by dots), with each binding's pattern: ``*`` matches exactly one
word, ``#`` matches zero or more. A message is copied to *every* queue with a
matching binding, so one message can run on several workers.

- ``arith_all`` is bound with ``arith.#``: every key that starts with ``arith``.
- ``arith_add`` is bound with ``*.add``: any one word, then ``add``.

Tasks are routed by exchange and routing key, not by queue: ``add`` is
published as ``arith.add`` (both queues match), ``sub`` as ``arith.sub``
(only ``arith_all``). A key no binding matches (``calc.sub``) goes to the
alternate exchange and lands in ``unroutable``.
"""

from kombu import Exchange, Queue

from routing_demo.conf.celeryconfig import *  # noqa: F403
from routing_demo.conf.celeryconfig import include
from routing_demo.topology import (
    dead_letter_exchange,
    default_queue,
    unroutable_exchange,
)

#: The topic exchange the arithmetic tasks are published to; what no binding
#: matches goes to the project's alternate exchange, as on the task exchange.
arith_exchange = Exchange(
    "routing_demo.arith",
    type="topic",
    durable=True,
    arguments={"alternate-exchange": unroutable_exchange.name},
)

#: Both add and sub: every routing key whose first word is ``arith``.
arith_all_queue = Queue(
    "arith_all",
    arith_exchange,
    routing_key="arith.#",
    durable=True,
    queue_arguments={"x-dead-letter-exchange": dead_letter_exchange.name},
)

#: Only add: any one word followed by ``add`` (``arith.add``, ``calc.add``).
arith_add_queue = Queue(
    "arith_add",
    arith_exchange,
    routing_key="*.add",
    durable=True,
    queue_arguments={"x-dead-letter-exchange": dead_letter_exchange.name},
)

include = [*include, "routing_demo.experiments.tasks"]
task_queues = (default_queue, arith_all_queue, arith_add_queue)
#: No ``queue`` in these routes on purpose: with a topic exchange the routing
#: key, not a queue name, decides, and it may select several queues.
task_routes = {
    "routing_demo.tasks.add": {
        "exchange": arith_exchange.name,
        "exchange_type": arith_exchange.type,
        "routing_key": "arith.add",
    },
    "routing_demo.tasks.sub": {
        "exchange": arith_exchange.name,
        "exchange_type": arith_exchange.type,
        "routing_key": "arith.sub",
    },
}
