"""The one home of the routing topology: exchanges, queues, task routes and
the worker selection that consumes each queue.

Nothing here connects to a broker: these are kombu entity *declarations*.
Celery declares them on the broker when a worker starts consuming or a
producer first publishes. Every other piece of the project (the app's
configuration, the demo, the tests, the docs table) reads them from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kombu import Exchange, Queue

__all__ = [
    "QUEUES",
    "QUEUE_MAX_LENGTH_ENV",
    "QUEUE_TYPES",
    "QUEUE_TYPE_ENV",
    "QUORUM_DELIVERY_LIMIT",
    "QUORUM_DELIVERY_LIMIT_ENV",
    "TASK_QUEUES",
    "TASK_ROUTES",
    "Queues",
    "add_queue",
    "build_queues",
    "dead_letter_exchange",
    "dead_letter_queue",
    "default_queue",
    "durable_queue_arguments",
    "queue_max_length_from_env",
    "queue_type_from_env",
    "quorum_delivery_limit_from_env",
    "routed_queue_names",
    "sub_queue",
    "task_exchange",
    "unroutable_exchange",
    "unroutable_queue",
    "worker_selection_options",
    "worker_selections",
]

#: Where RabbitMQ sends a message that ``task_exchange`` cannot route (its
#: routing key matches no binding, e.g. a typo in an explicit
#: ``routing_key=``). Celery publishes without ``mandatory``, so without an
#: alternate exchange such a message would vanish without an error.
unroutable_exchange = Exchange("routing_demo.unroutable", type="fanout", durable=True)

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

#: Environment variable that picks the queue type of every durable queue.
QUEUE_TYPE_ENV = "ROUTING_DEMO_QUEUE_TYPE"

#: ``classic``: a queue lives on one node; fast, and the default on a single
#: node, where replication has nowhere to go. ``quorum``: a Raft-replicated
#: queue that survives the loss of a minority of a cluster's nodes; the choice
#: on a cluster. RabbitMQ refuses to redeclare a queue as another type, so a
#: vhost holds one type: switch with a new vhost (or deleted queues).
QUEUE_TYPES = ("classic", "quorum")

#: Environment variable that overrides ``QUORUM_DELIVERY_LIMIT`` (tests use a
#: small limit to reach it in seconds). Every process that declares the
#: queues must agree: RabbitMQ refuses a redeclaration with another limit.
QUORUM_DELIVERY_LIMIT_ENV = "ROUTING_DEMO_QUORUM_DELIVERY_LIMIT"

#: How often a quorum queue gives one message back before it dead-letters it
#: (``x-delivery-limit``). A worker that dies mid-task gives its message back
#: (a reject, late acks), which counts; 20 is RabbitMQ 4's default, said
#: aloud so that 3.x (unlimited by default) behaves the same.
QUORUM_DELIVERY_LIMIT = 20


#: Environment variable capping each task queue's length: unset means no
#: cap. Every process that declares the queues must agree: RabbitMQ refuses a
#: redeclaration with other arguments (a policy avoids that: docs/reliability.md).
QUEUE_MAX_LENGTH_ENV = "ROUTING_DEMO_QUEUE_MAX_LENGTH"


def _positive_int_from_env(name: str) -> int | None:
    """The positive integer environment variable ``name`` holds, ``None``
    when unset; ``ValueError`` for anything else."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r}: give a positive integer")
    return int(raw)


def queue_max_length_from_env() -> int | None:
    """The cap ``ROUTING_DEMO_QUEUE_MAX_LENGTH`` names, or ``None``;
    ``ValueError`` unless a positive integer."""
    return _positive_int_from_env(QUEUE_MAX_LENGTH_ENV)


def queue_type_from_env() -> str:
    """The queue type ``ROUTING_DEMO_QUEUE_TYPE`` names (default ``classic``).

    Raises ``ValueError`` on any other value: a typo must not silently give
    an unreplicated queue on a cluster.
    """
    queue_type = os.environ.get(QUEUE_TYPE_ENV, "classic").strip().lower() or "classic"
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"{QUEUE_TYPE_ENV}={queue_type!r}: choose one of {', '.join(QUEUE_TYPES)}")
    return queue_type


def quorum_delivery_limit_from_env() -> int:
    """The delivery limit ``ROUTING_DEMO_QUORUM_DELIVERY_LIMIT`` names
    (default ``QUORUM_DELIVERY_LIMIT``); ``ValueError`` unless a positive integer."""
    limit = _positive_int_from_env(QUORUM_DELIVERY_LIMIT_ENV)
    return QUORUM_DELIVERY_LIMIT if limit is None else limit


def durable_queue_arguments(
    queue_type: str,
    *,
    dead_letter: bool,
    delivery_limit: int | None = None,
    max_length: int | None = None,
) -> dict[str, object]:
    """The ``x-…`` arguments of a durable queue of ``queue_type``.

    A task queue (``dead_letter=True``) dead-letters to ``routing_demo.dlx``.
    A quorum queue also gets a delivery limit and *at-least-once*
    dead-lettering: RabbitMQ keeps a dead letter in the source queue until the
    target queue confirms it (plain quorum dead-lettering is at most once),
    which needs ``x-overflow: reject-publish`` (a full queue refuses publishes
    instead of dropping its oldest message). ``delivery_limit`` ``None``
    means ``ROUTING_DEMO_QUORUM_DELIVERY_LIMIT`` or its default.

    ``max_length`` caps a task queue at that many messages, with
    ``x-overflow: reject-publish``: a publish to a full queue is refused
    (``basic.nack``) and the sender told, where RabbitMQ's default overflow
    would silently drop the queue's oldest message.
    """
    arguments: dict[str, object] = {}
    if dead_letter:
        arguments["x-dead-letter-exchange"] = dead_letter_exchange.name
        if max_length is not None:
            arguments["x-max-length"] = max_length
            arguments["x-overflow"] = "reject-publish"
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
        if dead_letter:
            arguments["x-delivery-limit"] = (
                quorum_delivery_limit_from_env() if delivery_limit is None else delivery_limit
            )
            arguments["x-dead-letter-strategy"] = "at-least-once"
            arguments["x-overflow"] = "reject-publish"
    return arguments


@dataclass(frozen=True)
class Queues:
    """Every durable queue of the topology, of one queue type."""

    queue_type: str
    #: ``add`` tasks, and nothing else.
    add: Queue
    #: ``sub`` tasks, and nothing else.
    sub: Queue
    #: Every task without a route. Declaring it matters: a worker started with
    #: ``-X add,sub`` consumes the declared queues minus those two, and without
    #: this one it would consume nothing at all while still logging "ready".
    default: Queue
    #: Holds dead letters for inspection. It is deliberately *not* among the
    #: task queues: a worker consuming it would run rejected messages again.
    #: The worker declares it, and ``unroutable``, on every (re)connection:
    #: see ``routing_demo.consumer``.
    dead_letter: Queue
    #: Holds unroutable messages for inspection; consumed by nobody.
    unroutable: Queue

    @property
    def task_queues(self) -> tuple[Queue, ...]:
        """What Celery's ``task_queues`` setting receives: the queues a worker
        consumes unless ``-Q``/``-X`` narrows the selection."""
        return (self.default, self.add, self.sub)

    @property
    def holding_queues(self) -> tuple[Queue, ...]:
        return (self.dead_letter, self.unroutable)


def build_queues(
    queue_type: str, *, delivery_limit: int | None = None, max_length: int | None = None
) -> Queues:
    """The topology's queues as ``queue_type`` queues (``classic`` or ``quorum``);
    ``delivery_limit`` and ``max_length`` as in ``durable_queue_arguments``."""
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"queue type {queue_type!r}: choose one of {', '.join(QUEUE_TYPES)}")
    task_arguments = durable_queue_arguments(
        queue_type, dead_letter=True, delivery_limit=delivery_limit, max_length=max_length
    )
    holding_arguments = durable_queue_arguments(queue_type, dead_letter=False) or None

    def task_queue(name: str) -> Queue:
        return Queue(
            name, task_exchange, routing_key=name, durable=True, queue_arguments=task_arguments
        )

    return Queues(
        queue_type=queue_type,
        add=task_queue("add"),
        sub=task_queue("sub"),
        default=task_queue("default"),
        dead_letter=Queue(
            "dead_letter", dead_letter_exchange, durable=True, queue_arguments=holding_arguments
        ),
        unroutable=Queue(
            "unroutable", unroutable_exchange, durable=True, queue_arguments=holding_arguments
        ),
    )


#: The queues of the type ``ROUTING_DEMO_QUEUE_TYPE`` names, for this process.
QUEUES = build_queues(queue_type_from_env(), max_length=queue_max_length_from_env())
add_queue = QUEUES.add
sub_queue = QUEUES.sub
default_queue = QUEUES.default
dead_letter_queue = QUEUES.dead_letter
unroutable_queue = QUEUES.unroutable
TASK_QUEUES: tuple[Queue, ...] = QUEUES.task_queues

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


def worker_selection_options() -> dict[str, str]:
    """``worker_selections`` as the app's ``routes_worker_selections`` setting
    holds them: node base name -> ``"-Q add"``, ``"-X add,sub"``."""
    return {base: f"{option} {names}" for base, (option, names) in worker_selections().items()}
