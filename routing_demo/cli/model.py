"""The declared topology as the broker should see it, read from the app.

Celery's own objects are the source, for whichever app ``-A`` names:
``app.amqp.queues`` (the ``task_queues`` setting after Celery applied its
defaults, such as ``task_queue_max_priority``), ``app.amqp.routes``
(``task_routes`` as Celery's router holds them), and for the worker that
consumes each queue the app's ``routes_worker_selections`` or, without one,
the live workers' own answer (``inspect active_queues``). A holding queue
(dead letters, unroutable messages) is one bound to an exchange that a
queue's ``x-dead-letter-exchange`` or an exchange's ``alternate-exchange``
names; the app may declare such queues outside ``task_queues``
(``routes_holding_queues``) so that no worker consumes them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.app.routes import MapRoute
from kombu import Exchange, Queue
from kombu.transport.base import to_rabbitmq_queue_arguments

from ..rabbitmq import routing_key_matches
from ..transports.pyamqp import sending_within
from ..workers import SELECTIONS_SETTING, declared_selections, worker_nodes
from ._common import broker_errors

__all__ = [
    "HOLDING_SETTING",
    "DeclaredBinding",
    "DeclaredQueue",
    "KnownWorker",
    "Topology",
    "Workers",
    "queue_arguments",
    "read_topology",
    "read_workers",
    "route_rules",
    "routing_key_matches",
]

#: The app setting listing queues that hold dead letters or unroutable
#: messages but are not ``task_queues`` (no worker may consume them).
HOLDING_SETTING = "routes_holding_queues"

#: Where the workers of a ``Workers`` come from.
DECLARED, LIVE, NONE, NOT_ASKED = "declared", "live", "none", "not-asked"


@dataclass(frozen=True)
class KnownWorker:
    """A worker and the queues it consumes."""

    #: The node's base name (``add``) for a declared selection, the full
    #: node name (``add@host``) for a live worker.
    name: str
    queues: tuple[str, ...]
    #: The ``celery worker`` command of a declared selection, or what a
    #: live worker is.
    command: str


@dataclass(frozen=True)
class Workers:
    """The workers the tools know of, and where that knowledge came from."""

    #: ``declared`` (the app's ``routes_worker_selections``), ``live``
    #: (workers that answered ``inspect active_queues``), ``none`` (neither),
    #: ``not-asked`` (nothing declared, live workers not asked).
    source: str
    workers: tuple[KnownWorker, ...] = ()
    #: Why no live worker could be asked (the broker's error), if so.
    error: str | None = None

    def consumers_of(self, queue: str) -> list[KnownWorker]:
        return [worker for worker in self.workers if queue in worker.queues]

    def describe(self) -> str:
        if self.source == DECLARED:
            return f"from the app's {SELECTIONS_SETTING}"
        if self.source == LIVE:
            count = len(self.workers)
            plural = "s" if count != 1 else ""
            return f"from the {count} live worker{plural} (inspect active_queues)"
        if self.source == NOT_ASKED:
            return "no selection declared (live workers not asked)"
        reason = f" (cannot ask: {self.error})" if self.error else ""
        return f"no selection declared and no worker answered{reason}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "description": self.describe(),
            "workers": [
                {"name": w.name, "queues": list(w.queues), "command": w.command}
                for w in self.workers
            ],
        }


@dataclass(frozen=True)
class DeclaredBinding:
    """``exchange`` delivers to ``queue`` what matches ``routing_key``."""

    exchange: str
    queue: str
    routing_key: str
    arguments: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        return f"{self.exchange} --[{self.routing_key}]--> {self.queue}"


@dataclass(frozen=True)
class DeclaredQueue:
    queue: Queue
    arguments: dict[str, Any]
    bindings: tuple[DeclaredBinding, ...]
    #: ``celery worker`` commands (one per declared worker selection), or
    #: the live workers, that consume it.
    consumers: tuple[str, ...]
    #: A holding queue (dead letters, unroutable messages) that no known
    #: worker consumes: meant to be read by hand.
    unconsumed_on_purpose: bool = False
    #: Among the app's ``task_queues`` (a worker without ``-Q`` consumes it).
    task_queue: bool = True

    @property
    def name(self) -> str:
        return self.queue.name


@dataclass(frozen=True)
class Topology:
    exchanges: dict[str, Exchange]
    queues: dict[str, DeclaredQueue]
    #: ``task_routes`` rules in the order the router tries them.
    routes: list[dict[str, Any]]
    default_queue: str
    #: Which worker consumes which queue, and how the tools know.
    workers: Workers = field(default_factory=lambda: Workers(NOT_ASKED))

    @property
    def bindings(self) -> list[DeclaredBinding]:
        return [binding for queue in self.queues.values() for binding in queue.bindings]

    def routed_queues(self) -> set[str]:
        """Queues a route or the default route feeds."""
        fed = {self.default_queue}
        fed.update(rule["queue"] for rule in self.routes if rule.get("queue"))
        return fed


def queue_arguments(queue: Queue) -> dict[str, Any]:
    """The ``x-…`` arguments kombu sends when it declares ``queue`` on RabbitMQ."""
    return to_rabbitmq_queue_arguments(
        queue.queue_arguments or {},
        expires=queue.expires,
        message_ttl=queue.message_ttl,
        max_length=queue.max_length,
        max_length_bytes=queue.max_length_bytes,
        max_priority=queue.max_priority,
    )


def _bindings(queue: Queue) -> tuple[DeclaredBinding, ...]:
    found = []
    if queue.exchange is not None and queue.exchange.name:
        found.append(DeclaredBinding(queue.exchange.name, queue.name, queue.routing_key or ""))
    for extra in queue.bindings or ():
        found.append(
            DeclaredBinding(
                extra.exchange.name,
                queue.name,
                extra.routing_key or "",
                dict(extra.arguments or {}),
            )
        )
    return tuple(found)


def _exchanges(queue: Queue) -> list[Exchange]:
    found = [queue.exchange] if queue.exchange is not None and queue.exchange.name else []
    found.extend(extra.exchange for extra in queue.bindings or ())
    return found


def worker_command(app_name: str, option: str, names: str, node: str) -> str:
    return f"celery -A {app_name} worker {option} {names} -n {node}@%h"


def read_workers(
    app: Celery,
    *,
    ask_live: bool = True,
    timeout: float = 1.0,
    app_name: str | None = None,
) -> Workers:
    """The workers of ``app``: its ``routes_worker_selections`` when it
    declares them (``app_name`` is the ``-A`` value their commands print),
    else, with ``ask_live``, whatever workers answer ``inspect
    active_queues`` within ``timeout`` seconds."""
    if declared_selections(app) is not None:
        name = app_name or app.main or "routing_demo"
        return Workers(
            DECLARED,
            tuple(
                KnownWorker(
                    node.name,
                    tuple(node.consumed_queues(app)),
                    worker_command(name, node.queue_option, node.queue_names, node.name),
                )
                for node in worker_nodes(app=app)
            ),
        )
    if not ask_live:
        return Workers(NOT_ASKED)
    try:
        with sending_within(timeout):
            replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except (OSError, *broker_errors(app)) as exc:
        return Workers(NONE, error=str(exc) or type(exc).__name__)
    found = tuple(
        KnownWorker(
            hostname,
            tuple(queue["name"] for queue in queues or ()),
            f"{hostname} (live worker)",
        )
        for hostname, queues in sorted(replies.items())
    )
    return Workers(LIVE, found) if found else Workers(NONE)


def route_rules(app: Celery) -> list[dict[str, Any]]:
    """``task_routes`` as Celery's router holds them: pattern, destination, origin."""
    rules: list[dict[str, Any]] = []
    for index, router in enumerate(app.amqp.routes):
        if isinstance(router, MapRoute):
            for pattern, route in router.map.items():
                rules.append(_rule(index, pattern, route))
            for regex, route in router.patterns.items():
                rules.append(_rule(index, regex.pattern, route))
        else:
            rules.append({"router": index, "pattern": repr(router), "queue": None, "options": {}})
    return rules


def _rule(index: int, pattern: str, route: Any) -> dict[str, Any]:
    options = {"queue": route} if isinstance(route, str) else dict(route)
    queue = options.pop("queue", None)
    if isinstance(queue, Queue):
        queue = queue.name
    return {"router": index, "pattern": pattern, "queue": queue, "options": options}


def holding_exchanges(queues: list[Queue]) -> set[str]:
    """Exchanges that a queue's ``x-dead-letter-exchange`` or an exchange's
    ``alternate-exchange`` names: what they receive is held, not run."""
    named = {queue_arguments(queue).get("x-dead-letter-exchange") for queue in queues}
    named.update(
        (exchange.arguments or {}).get("alternate-exchange")
        for queue in queues
        for exchange in _exchanges(queue)
    )
    named.discard(None)
    return {str(name) for name in named}


def read_topology(app: Celery, *, workers: Workers | None = None) -> Topology:
    """The app's topology; ``workers`` as ``read_workers`` gives them (by
    default its declared selections only: nothing is asked of a broker)."""
    declared = list(app.amqp.queues.values())
    extras = [
        queue for queue in app.conf.get(HOLDING_SETTING) or () if queue.name not in app.amqp.queues
    ]
    holding = holding_exchanges([*declared, *extras])
    extras = [q for q in extras if {e.name for e in _exchanges(q)} & holding]
    workers = workers or read_workers(app, ask_live=False)

    exchanges: dict[str, Exchange] = {}
    queues: dict[str, DeclaredQueue] = {}
    for queue in [*declared, *extras]:
        for exchange in _exchanges(queue):
            exchanges.setdefault(exchange.name, exchange)
        consumers = tuple(worker.command for worker in workers.consumers_of(queue.name))
        queues[queue.name] = DeclaredQueue(
            queue=queue,
            arguments=queue_arguments(queue),
            bindings=_bindings(queue),
            consumers=consumers,
            unconsumed_on_purpose=not consumers
            and bool({e.name for e in _exchanges(queue)} & holding),
            task_queue=queue not in extras,
        )
    return Topology(
        exchanges=exchanges,
        queues=queues,
        routes=route_rules(app),
        default_queue=app.conf.task_default_queue,
        workers=workers,
    )
