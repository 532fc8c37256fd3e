"""The declared topology as the broker should see it, read from the app.

Celery's own objects are the source: ``app.amqp.queues`` (the ``task_queues``
setting after Celery applied its defaults, such as ``task_queue_max_priority``),
``app.amqp.routes`` (``task_routes`` as Celery's router holds them) and
``routing_demo.workers`` for the worker that consumes each queue. The
holding queues (dead letters, unroutable messages) are added when a task
queue's ``x-dead-letter-exchange`` or an exchange's ``alternate-exchange``
names their exchange: the worker declares them (``routing_demo.consumer``)
but, on purpose, nobody consumes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.app.routes import MapRoute
from kombu import Exchange, Queue
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.transport.virtual.exchange import TopicExchange

from ..topology import dead_letter_queue, unroutable_queue
from ..workers import worker_nodes

__all__ = [
    "DeclaredBinding",
    "DeclaredQueue",
    "Topology",
    "queue_arguments",
    "read_topology",
    "route_rules",
    "routing_key_matches",
]


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
    #: ``celery worker`` commands (one per topology worker) that consume it.
    consumers: tuple[str, ...]
    #: Declared but meant to be consumed by nobody (the dead-letter queue).
    unconsumed_on_purpose: bool = False

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


def worker_command(option: str, names: str, node: str) -> str:
    return f"celery -A routing_demo worker {option} {names} -n {node}@%h"


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


def read_topology(app: Celery) -> Topology:
    declared = list(app.amqp.queues.values())
    referenced = {queue_arguments(q).get("x-dead-letter-exchange") for q in declared}
    referenced.update(
        (exchange.arguments or {}).get("alternate-exchange")
        for queue in declared
        for exchange in _exchanges(queue)
    )
    extras = [
        queue
        for queue in (dead_letter_queue, unroutable_queue)
        if queue.exchange.name in referenced
    ]

    consumers: dict[str, list[str]] = {}
    for node in worker_nodes():
        for name in node.consumed_queues():
            consumers.setdefault(name, []).append(
                worker_command(node.queue_option, node.queue_names, node.name)
            )

    exchanges: dict[str, Exchange] = {}
    queues: dict[str, DeclaredQueue] = {}
    for queue in [*declared, *extras]:
        for exchange in _exchanges(queue):
            exchanges.setdefault(exchange.name, exchange)
        queues[queue.name] = DeclaredQueue(
            queue=queue,
            arguments=queue_arguments(queue),
            bindings=_bindings(queue),
            consumers=tuple(consumers.get(queue.name, ())),
            unconsumed_on_purpose=queue in extras,
        )
    return Topology(
        exchanges=exchanges,
        queues=queues,
        routes=route_rules(app),
        default_queue=app.conf.task_default_queue,
    )


_topic = TopicExchange(None)


def routing_key_matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether a message with ``routing_key`` follows a binding with
    ``binding_key`` on an exchange of ``exchange_type`` (headers: unknown,
    treated as no match)."""
    if exchange_type == "fanout":
        return True
    if exchange_type == "direct":
        return binding_key == routing_key
    if exchange_type == "topic":
        return re.match(_topic.key_to_pattern(binding_key), routing_key) is not None
    return False
