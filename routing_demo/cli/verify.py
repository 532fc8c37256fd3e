"""Compare the declared topology with what the broker has, through RabbitMQ's
management API.

Celery declares queues lazily and never deletes or rebinds anything, so the
broker drifts: a binding removed by hand, a queue left over from an older
name, a queue created earlier with other arguments (every later declaration
then fails with ``PRECONDITION_FAILED - inequivalent arg``), a queue whose
worker is gone, a worker eating a queue no route feeds any more. On a
cluster, a quorum queue that lost the majority of its members is wired as
declared and still serves nothing: that is reported too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..alarms import Alarm
from ..rabbitmq import ManagementAPI
from .cluster_health import ClusterHealth
from .model import Topology

__all__ = ["Problem", "alarm_problems", "quorum_problems", "verify_topology"]


@dataclass(frozen=True)
class Problem:
    #: missing-exchange, exchange-mismatch, exchange-argument-mismatch,
    #: missing-queue, queue-mismatch, argument-mismatch, missing-binding,
    #: extra-binding, unconsumed-queue, unrouted-consumed-queue, below-quorum,
    #: resource-alarm
    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "detail": self.detail}


def _internal(queue: dict[str, Any]) -> bool:
    """Celery's own per-process queues (pidbox, events, rpc replies) come and
    go with their clients: auto-delete or exclusive."""
    return bool(queue.get("auto_delete") or queue.get("exclusive"))


def _arguments_differ(declared: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    differences = []
    actual = dict(actual)
    # RabbitMQ 4 reports the queue type even when the client did not ask for one.
    if "x-queue-type" not in declared and actual.get("x-queue-type") == "classic":
        actual.pop("x-queue-type")
    for key in sorted(set(declared) | set(actual)):
        if declared.get(key) != actual.get(key):
            differences.append(
                f"{key} declared {declared.get(key)!r}, broker has {actual.get(key)!r}"
            )
    return differences


def verify_topology(
    topology: Topology,
    management: ManagementAPI,
    vhost: str,
    *,
    check_consumers: bool = True,
    live_counts: Mapping[str, tuple[int, int]] | None = None,
) -> list[Problem]:
    """Every difference between ``topology`` and the broker's ``vhost``.

    ``live_counts`` (queue -> ready, consumers, from AMQP) wins over the
    management API's consumer statistics, which lag behind."""
    problems: list[Problem] = []
    exchanges = {exchange["name"]: exchange for exchange in management.exchanges(vhost)}
    queues = {queue["name"]: queue for queue in management.queues(vhost)}
    for name, (ready, consumers) in (live_counts or {}).items():
        if name in queues:
            queues[name] = {**queues[name], "messages_ready": ready, "consumers": consumers}
    bindings = [
        binding for binding in management.bindings(vhost) if binding["source"] in topology.exchanges
    ]

    for name, exchange in topology.exchanges.items():
        actual = exchanges.get(name)
        if actual is None:
            problems.append(Problem("missing-exchange", name, f"{exchange.type} exchange absent"))
            continue
        for difference in _arguments_differ(
            dict(exchange.arguments or {}), actual.get("arguments") or {}
        ):
            problems.append(Problem("exchange-argument-mismatch", name, difference))
        if actual["type"] != exchange.type or bool(actual["durable"]) != bool(exchange.durable):
            problems.append(
                Problem(
                    "exchange-mismatch",
                    name,
                    f"declared {exchange.type} durable={exchange.durable}, broker has "
                    f"{actual['type']} durable={actual['durable']}",
                )
            )

    for name, declared in topology.queues.items():
        actual = queues.get(name)
        if actual is None:
            problems.append(Problem("missing-queue", name, "queue absent"))
            continue
        if bool(actual["durable"]) != bool(declared.queue.durable):
            problems.append(
                Problem(
                    "queue-mismatch",
                    name,
                    f"declared durable={declared.queue.durable}, broker has "
                    f"durable={actual['durable']}",
                )
            )
        for difference in _arguments_differ(declared.arguments, actual.get("arguments") or {}):
            problems.append(Problem("argument-mismatch", name, difference))

    declared_bindings = {(b.exchange, b.queue, b.routing_key) for b in topology.bindings}
    actual_bindings = {
        (b["source"], b["destination"], b["routing_key"])
        for b in bindings
        if b["destination_type"] == "queue"
    }
    for exchange, queue, key in sorted(declared_bindings - actual_bindings):
        problems.append(
            Problem("missing-binding", f"{exchange} -> {queue}", f"routing key {key!r} not bound")
        )
    for binding in bindings:
        key = (binding["source"], binding["destination"], binding["routing_key"])
        if binding["destination_type"] == "queue" and key in declared_bindings:
            continue
        problems.append(
            Problem(
                "extra-binding",
                f"{binding['source']} -> {binding['destination']}",
                f"routing key {binding['routing_key']!r} bound on the broker, not declared",
            )
        )

    if check_consumers:
        fed = topology.routed_queues()
        for name, declared in topology.queues.items():
            actual = queues.get(name)
            if actual is None or declared.unconsumed_on_purpose:
                continue
            if not actual.get("consumers"):
                ready = actual.get("messages_ready", 0)
                problems.append(
                    Problem(
                        "unconsumed-queue",
                        name,
                        f"no consumer ({ready} message(s) ready); expected: "
                        + (" | ".join(declared.consumers) or "no worker selection covers it"),
                    )
                )
        for name, actual in sorted(queues.items()):
            if _internal(actual) or name in fed or not actual.get("consumers"):
                continue
            problems.append(
                Problem(
                    "unrouted-consumed-queue",
                    name,
                    f"{actual['consumers']} consumer(s), but no task route or the default "
                    "queue feeds it",
                )
            )
    return problems


def quorum_problems(health: ClusterHealth) -> list[Problem]:
    """A ``below-quorum`` problem for each quorum queue with fewer members
    online than a majority: RabbitMQ keeps it, with its messages, but it
    accepts and delivers nothing until enough members are back."""
    return [
        Problem(
            "below-quorum",
            queue.name,
            f"{len(queue.online)} of {len(queue.members)} members online "
            f"({', '.join(queue.online) or 'none'}), {queue.needed} needed; offline: "
            f"{', '.join(queue.offline)}",
        )
        for queue in health.below_quorum
    ]


def alarm_problems(alarms: list[Alarm]) -> list[Problem]:
    """A ``resource-alarm`` problem for each alarm a broker node reports:
    the topology may match, but no publisher gets a message in."""
    return [Problem("resource-alarm", alarm.node, str(alarm)) for alarm in alarms]
