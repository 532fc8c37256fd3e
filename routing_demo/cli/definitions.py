"""RabbitMQ definitions (exchanges, queues, bindings) and the application
user's permissions, generated from the topology.

RabbitMQ loads such a file at boot (``load_definitions``), so a broker started
by compose has every queue, argument and binding before the first worker
connects, and a worker's declaration can never meet a queue created with
other arguments. Users are *not* in this file: credentials come from the
environment when the broker container starts (see ``conf/rabbitmq``), which
grants that user the permissions ``app_permissions`` derives here.

RabbitMQ checks three permissions, each a regular expression matched against
the full name of a queue or exchange in one vhost:

- *configure*: declare (not passively) or delete it;
- *write*: publish to an exchange; bind a queue (write on the queue, read on
  the exchange); declaring a queue with a dead-letter exchange, or an
  exchange with an alternate exchange, needs write on that target too;
- *read*: consume from or purge a queue, ``basic.get``; bind from an exchange.

A passive declare (``queue_declare(passive=True)``) needs no permission.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery import Celery
from celery.utils.quorum_queues import detect_quorum_queues
from kombu.transport.native_delayed_delivery import (
    CELERY_DELAYED_DELIVERY_EXCHANGE,
    MAX_LEVEL,
    level_name,
)

from ..workers import SELECTIONS_SETTING, worker_nodes
from .model import Topology, read_topology

__all__ = [
    "DEFAULT_DEFINITIONS_PATH",
    "DEFAULT_PERMISSIONS_PATH",
    "DEFAULT_VHOST",
    "DEFINITIONS_PATHS",
    "PERMISSIONS_PATHS",
    "UUID_PATTERN",
    "Permissions",
    "Resource",
    "app_permissions",
    "app_resources",
    "render_definitions",
    "render_permissions",
    "topology_definitions",
]

#: The vhost compose's broker serves the app on.
DEFAULT_VHOST = "routing_demo"
#: Where compose mounts the generated definitions from (relative to the project root).
DEFAULT_DEFINITIONS_PATH = Path("conf/rabbitmq/definitions.json")
#: The application user's permission patterns, read by compose's broker start script.
DEFAULT_PERMISSIONS_PATH = Path("conf/rabbitmq/permissions.json")
#: Each committed definitions file by queue type (``ROUTING_DEMO_QUEUE_TYPE``):
#: compose's single broker loads the classic one, its cluster the quorum one.
DEFINITIONS_PATHS = {
    "classic": DEFAULT_DEFINITIONS_PATH,
    "quorum": Path("conf/rabbitmq/definitions-quorum.json"),
}
#: Each committed permissions file by queue type: quorum workers also need
#: Celery's native delayed delivery exchanges and queues.
PERMISSIONS_PATHS = {
    "classic": DEFAULT_PERMISSIONS_PATH,
    "quorum": Path("conf/rabbitmq/permissions-quorum.json"),
}

#: A UUID as Celery and kombu write them (``uuid4()``, ``uuid3()``): the names
#: of rpc:// reply queues, control reply queues and event queues carry one.
UUID_PATTERN = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

#: RabbitMQ's name for the default exchange ``""`` in permission checks:
#: publishing there (rpc:// results, addressed by queue name) needs write on it.
DEFAULT_EXCHANGE = "amq.default"

_PCRE_SPECIAL = re.compile(r"([.^$*+?()\[\]{}|\\])")


def _literal(name: str) -> str:
    """``name`` as a regular expression matching exactly it (PCRE and Python agree)."""
    return _PCRE_SPECIAL.sub(r"\\\1", name)


def topology_definitions(topology: Topology, vhost: str = DEFAULT_VHOST) -> dict[str, Any]:
    """The topology in RabbitMQ's definitions format, for one vhost."""
    return {
        "vhosts": [{"name": vhost}],
        "exchanges": [
            {
                "name": exchange.name,
                "vhost": vhost,
                "type": exchange.type,
                "durable": bool(exchange.durable),
                "auto_delete": bool(exchange.auto_delete),
                "internal": False,
                "arguments": dict(exchange.arguments or {}),
            }
            for exchange in topology.exchanges.values()
        ],
        "queues": [
            {
                "name": declared.name,
                "vhost": vhost,
                "durable": bool(declared.queue.durable),
                "auto_delete": bool(declared.queue.auto_delete),
                "arguments": declared.arguments,
            }
            for declared in topology.queues.values()
        ],
        "bindings": [
            {
                "source": binding.exchange,
                "vhost": vhost,
                "destination": binding.queue,
                "destination_type": "queue",
                "routing_key": binding.routing_key,
                "arguments": binding.arguments,
            }
            for binding in topology.bindings
        ],
    }


def render_definitions(topology: Topology, vhost: str = DEFAULT_VHOST) -> str:
    """The file's exact text: stable key order and a final newline, so a test
    can compare it byte for byte with the committed copy."""
    return json.dumps(topology_definitions(topology, vhost), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class Resource:
    """A queue or exchange (or a family of them) the application uses."""

    #: ``queue`` or ``exchange``.
    kind: str
    #: How people write the name: ``add``, ``<node>.celery.pidbox``.
    label: str
    #: A regular expression for the whole name (anchored when combined).
    pattern: str
    #: The permissions it needs: a subset of ``configure``, ``write``, ``read``.
    access: tuple[str, ...]
    #: Who touches it, and why it needs that access.
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.label,
            "pattern": self.pattern,
            "access": list(self.access),
            "why": self.why,
        }


@dataclass(frozen=True)
class Permissions:
    """One user's ``configure``/``write``/``read`` patterns in one vhost."""

    configure: str
    write: str
    read: str

    def as_dict(self) -> dict[str, str]:
        return {"configure": self.configure, "write": self.write, "read": self.read}

    def allows(self, permission: str, name: str) -> bool:
        """Whether RabbitMQ would grant ``permission`` on the resource ``name``
        (its check is an unanchored regex search; the patterns carry anchors)."""
        return re.search(getattr(self, permission), name) is not None


CWR = ("configure", "write", "read")


def app_resources(app: Celery, topology: Topology | None = None) -> list[Resource]:
    """Every queue and exchange the app's workers and clients declare,
    publish to, bind or consume, with the access each needs.

    Names come from where they are decided: the app's topology
    (``read_topology``), its worker selections (``routes_worker_selections``:
    without them any node name may run a worker), Celery's control mailbox
    (``app.control.mailbox``) and event settings. rpc:// and Redis results
    are both covered: switching backends needs no other user.
    """
    topology = topology or read_topology(app)
    mailbox = app.control.mailbox
    resources = [
        Resource(
            "exchange",
            name,
            _literal(name),
            CWR,
            "task topology: declared by workers and clients, published to (tasks), "
            "or named by a queue's x-dead-letter-exchange or an exchange's "
            "alternate-exchange (RabbitMQ then requires write on it), bound from",
        )
        for name in topology.exchanges
    ]
    for declared in topology.queues.values():
        if declared.unconsumed_on_purpose and not declared.task_queue:
            resources.append(
                Resource(
                    "queue",
                    declared.name,
                    _literal(declared.name),
                    ("configure", "write"),
                    "holding queue: declared and bound by every worker, read by nobody "
                    "in the application (an operator reads it with an administrator user)",
                )
            )
        else:
            resources.append(
                Resource(
                    "queue",
                    declared.name,
                    _literal(declared.name),
                    CWR,
                    "task queue: declared and bound by workers and clients, consumed by "
                    "its worker (a queue with a dead-letter exchange needs read to declare)",
                )
            )
    if detect_quorum_queues(app, "amqp")[0]:
        resources += delayed_delivery_resources()
    bases = sorted({node.name for node in worker_nodes(app=app)})
    if bases:
        node_pattern = f"(?:{'|'.join(map(_literal, bases))})[^@]*@.+"
        node_names = (
            f"only the topology's node names ({', '.join(bases)}, with any suffix) may run a worker"
        )
    else:
        node_pattern = "[^@]+@.+"
        node_names = f"any node name: the app declares no {SELECTIONS_SETTING}"
    resources += [
        Resource(
            "exchange",
            mailbox.exchange.name,
            _literal(mailbox.exchange.name),
            CWR,
            "control broadcasts (celery inspect/control, mingle): every worker binds its "
            "pidbox queue to this fanout exchange",
        ),
        Resource(
            "exchange",
            mailbox.reply_exchange.name,
            _literal(mailbox.reply_exchange.name),
            CWR,
            "control replies: workers publish answers here, the asking client binds its "
            "reply queue",
        ),
        Resource(
            "queue",
            mailbox.get_queue("<node>").name,
            _literal(mailbox.get_queue("@").name).replace("@", node_pattern, 1),
            CWR,
            f"each worker's control queue, named after its node: {node_names}",
        ),
        Resource(
            "queue",
            f"<uuid>.{mailbox.reply_exchange.name}",
            f"{UUID_PATTERN}\\.{_literal(mailbox.reply_exchange.name)}",
            CWR,
            "a control client's reply queue (celery inspect ping, routes workers status)",
        ),
        Resource(
            "exchange",
            app.conf.event_exchange,
            _literal(app.conf.event_exchange),
            CWR,
            "task and worker events (-E, heartbeats, gossip): published and bound from",
        ),
        Resource(
            "queue",
            f"{app.conf.event_queue_prefix}.<uuid>",
            f"{_literal(app.conf.event_queue_prefix)}\\.{UUID_PATTERN}",
            CWR,
            "an event receiver's queue (worker gossip, Flower, celery events)",
        ),
        Resource(
            "queue",
            "<uuid>",
            UUID_PATTERN,
            ("configure", "read"),
            "rpc:// results: each client process declares and consumes its own reply "
            "queue, named by its id; it is not bound (results arrive through the "
            "default exchange)",
        ),
        Resource(
            "exchange",
            DEFAULT_EXCHANGE,
            _literal(DEFAULT_EXCHANGE),
            ("write",),
            "rpc:// results: workers publish each result to the default exchange with "
            "the reply queue's name as the routing key",
        ),
    ]
    return resources


def delayed_delivery_resources() -> list[Resource]:
    """Celery's native delayed delivery, which serves countdown/ETA tasks when
    the app declares quorum queues (names from kombu, which declares them).

    Every worker declares 28 levels, ``celery_delayed_0`` to ``_27``: each a
    topic exchange and a queue of that name, whose messages expire into the
    next lower level (dead-lettering needs write on it), the levels bound
    exchange to exchange (write on the destination, read on the source).
    Level 0 expires into ``celery_delayed_delivery``, to which each worker
    binds the task exchange. A client publishes a countdown task to the top
    level's exchange.
    """
    top = level_name(MAX_LEVEL)
    delivery = CELERY_DELAYED_DELIVERY_EXCHANGE
    levels = f"(?:{'|'.join(_literal(level_name(level)) for level in range(MAX_LEVEL + 1))})"
    return [
        Resource(
            "exchange",
            f"{level_name(0)} … {top}",
            levels,
            CWR,
            "native delayed delivery levels (quorum queues): declared by workers, "
            f"bound exchange to exchange, a countdown/ETA task is published to {top}",
        ),
        Resource(
            "queue",
            f"{level_name(0)} … {top}",
            levels,
            CWR,
            "native delayed delivery levels: declared and bound by workers, each "
            "dead-letters (on expiry) to the level below",
        ),
        Resource(
            "exchange",
            delivery,
            _literal(delivery),
            CWR,
            "native delayed delivery: level 0 dead-letters here, and each worker "
            "binds the task exchange to it",
        ),
    ]


def _alternatives(patterns: list[str]) -> str:
    unique = list(dict.fromkeys(patterns))
    return f"^(?:{'|'.join(unique)})$" if unique else "^$"


def app_permissions(app: Celery, topology: Topology | None = None) -> Permissions:
    """The application user's patterns: each permission covers exactly the
    resources of ``app_resources`` that need it, anchored at both ends
    (RabbitMQ's check is an unanchored search)."""
    resources = app_resources(app, topology)
    return Permissions(
        **{
            permission: _alternatives(
                [resource.pattern for resource in resources if permission in resource.access]
            )
            for permission in CWR
        }
    )


def render_permissions(app: Celery, topology: Topology | None = None) -> str:
    """``conf/rabbitmq/permissions.json``'s exact text (``permissions-quorum.json``
    for an app of quorum queues): a JSON object of the three
    patterns, one per line (``start-rabbitmq.sh`` copies those lines into the
    user's definitions), keys sorted, a final newline."""
    return json.dumps(app_permissions(app, topology).as_dict(), indent=2, sort_keys=True) + "\n"
