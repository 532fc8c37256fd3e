"""The one home of the routing topology: exchanges, queues, task routes and
the worker selection that consumes each queue.

Nothing here connects to a broker: these are kombu entity *declarations*.
Celery declares them on the broker when a worker starts consuming or a
producer first publishes. Every other piece of the project (the app's
configuration, the demo, the tests, the docs table) reads them from here.
"""

from __future__ import annotations

from kombu import Exchange, Queue

__all__ = [
    "TASK_QUEUES",
    "TASK_ROUTES",
    "add_queue",
    "dead_letter_exchange",
    "dead_letter_queue",
    "default_queue",
    "routed_queue_names",
    "sub_queue",
    "task_exchange",
    "unroutable_exchange",
    "unroutable_queue",
    "worker_selections",
]

#: Where RabbitMQ sends a message that ``task_exchange`` cannot route (its
#: routing key matches no binding, e.g. a typo in an explicit
#: ``routing_key=``). Celery publishes without ``mandatory``, so without an
#: alternate exchange such a message would vanish without an error.
unroutable_exchange = Exchange("routing_demo.unroutable", type="fanout", durable=True)

#: Holds unroutable messages for inspection; consumed by nobody.
unroutable_queue = Queue("unroutable", unroutable_exchange, durable=True)

#: Every task message is published here, with its queue's routing key, and
#: the bindings below deliver it. A *topic* exchange matches a routing key
#: against binding patterns (``*`` one word, ``#`` any); with the plain words
#: used here it delivers exactly like a direct exchange. It is a topic
#: exchange because for a *direct* one Celery skips it: given a queue name, it
#: publishes through the AMQP default exchange (``""``) with the queue's name
#: as the key, and the bindings (and the alternate exchange) would go unused.
#: A topic exchange also serves Celery's native delayed delivery, which
#: quorum queues need for countdown/ETA. Arguments are fixed at declaration:
#: RabbitMQ refuses to redeclare an exchange with other ones.
task_exchange = Exchange(
    "routing_demo",
    type="topic",
    durable=True,
    arguments={"alternate-exchange": unroutable_exchange.name},
)

#: Where RabbitMQ re-publishes what a worker rejects (unknown task, content
#: it refuses to decode). A *fanout* exchange ignores routing keys: every
#: dead letter lands in every bound queue, whichever task queue it left.
dead_letter_exchange = Exchange("routing_demo.dlx", type="fanout", durable=True)

#: Holds dead letters for inspection. It is deliberately *not* in
#: ``TASK_QUEUES``: a worker consuming it would run rejected messages again.
#: The worker declares it, and ``unroutable_queue``, on every (re)connection:
#: see ``routing_demo.consumer``.
dead_letter_queue = Queue("dead_letter", dead_letter_exchange, durable=True)

#: Arguments shared by the task queues. RabbitMQ refuses to redeclare a queue
#: with other arguments (``PRECONDITION_FAILED - inequivalent arg``), so
#: change them only together with a new queue name or a deleted queue.
_task_queue_arguments = {"x-dead-letter-exchange": dead_letter_exchange.name}

#: ``add`` tasks, and nothing else.
add_queue = Queue(
    "add",
    task_exchange,
    routing_key="add",
    durable=True,
    queue_arguments=_task_queue_arguments,
)

#: ``sub`` tasks, and nothing else.
sub_queue = Queue(
    "sub",
    task_exchange,
    routing_key="sub",
    durable=True,
    queue_arguments=_task_queue_arguments,
)

#: Every task without a route. Declaring it matters: a worker started with
#: ``-X add,sub`` consumes the declared queues minus those two, and without
#: this one it would consume nothing at all while still logging "ready".
default_queue = Queue(
    "default",
    task_exchange,
    routing_key="default",
    durable=True,
    queue_arguments=_task_queue_arguments,
)

#: What Celery's ``task_queues`` setting receives: the queues a worker
#: consumes unless ``-Q``/``-X`` narrows the selection.
TASK_QUEUES: tuple[Queue, ...] = (default_queue, add_queue, sub_queue)


#: What Celery's ``task_routes`` setting receives. Keys are registered task
#: names: a key that matches no task name routes nothing, silently. A task
#: without a route goes to ``default_queue`` (Celery's ``task_default_queue``).
TASK_ROUTES: dict[str, dict[str, str]] = {
    "routing_demo.tasks.add": {"queue": add_queue.name},
    "routing_demo.tasks.sub": {"queue": sub_queue.name},
}


def routed_queue_names() -> list[str]:
    """Queues that some route feeds, in declaration order."""
    routed = {route["queue"] for route in TASK_ROUTES.values()}
    return [queue.name for queue in TASK_QUEUES if queue.name in routed]


def worker_selections() -> dict[str, tuple[str, str]]:
    """One worker per queue: node base name -> its ``celery worker`` queue option.

    Each routed queue gets a worker that includes only it (``-Q add``); the
    default queue's worker excludes every routed queue (``-X add,sub``), so it
    also picks up any queue declared later without a worker of its own.
    """
    routed = routed_queue_names()
    selections = {name: ("-Q", name) for name in routed}
    selections[default_queue.name] = ("-X", ",".join(routed))
    return selections
