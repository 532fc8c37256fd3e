"""Where a task goes, answered by Celery's own router and message sender.

``app.amqp.router.route`` picks the destination exactly as ``apply_async``
does, and the app's real ``send_task_message`` then turns it into an exchange
and routing key, publishing into a recorder instead of the broker. Which
exchange that is matters: a route naming exchange and routing key (as the
project's routes do) is published there and delivered by its bindings; for a
bare queue name on a direct exchange (a task without a route) Celery publishes
to the *default* exchange (``""``) with the queue's name as the routing key,
so the message reaches that queue whatever the bindings say.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.exceptions import QueueNotFound
from kombu import Exchange

from ..sent_state import suppressed
from .model import DECLARED, LIVE, Workers, read_topology, routing_key_matches

__all__ = ["RouteExplanation", "Selection", "explain_route", "select_queues"]


@dataclass
class Selection:
    """The queues a ``celery worker -Q …``/``-X …`` would consume, as Celery
    computes them, and what is wrong with the selection."""

    include: list[str]
    exclude: list[str]
    queues: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: The worker would refuse to start (``-Q`` naming an undeclared queue).
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "include": self.include,
            "exclude": self.exclude,
            "queues": self.queues,
            "warnings": self.warnings,
            "error": self.error,
        }


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in (text or "").split(",") if name.strip()]


def select_queues(app: Celery, include: str | None, exclude: str | None) -> Selection:
    """Apply ``-Q include``/``-X exclude`` to a copy of the app's queues the way
    the worker does (``Queues.select``/``deselect``)."""
    selection = Selection(_names(include), _names(exclude))
    queues = app.amqp.Queues(app.conf.task_queues)
    declared = list(queues)
    try:
        queues.select(selection.include)
    except KeyError as exc:
        selection.error = (
            f"-Q names {exc.args[0]!r}, which task_queues does not declare: "
            "the worker refuses to start"
        )
        return selection
    unknown = [name for name in selection.exclude if name not in declared]
    if unknown:
        selection.warnings.append(
            f"-X names undeclared queue(s) {', '.join(unknown)}: Celery ignores them silently"
        )
    queues.deselect(selection.exclude)
    selection.queues = list(queues.consume_from)
    if not selection.queues:
        selection.warnings.append(
            "this selection leaves the worker no queue at all: it would log 'ready' "
            "and consume nothing"
        )
    return selection


class _RecordingProducer:
    """Stands in for a kombu producer: keeps what would have been published."""

    def __init__(self) -> None:
        self.published: dict[str, Any] = {}

    def publish(self, body: Any, **kwargs: Any) -> None:
        self.published = kwargs


@dataclass
class RouteExplanation:
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    overrides: dict[str, str]
    #: The ``task_routes`` rule that won, or why none did.
    rule: str
    queue: str | None
    exchange: str
    exchange_type: str
    routing_key: str
    #: Queues the broker delivers to, from the declared bindings.
    delivered_to: list[str]
    #: Known workers consuming those queues: node base names of the app's
    #: declared selections, or node names of live workers.
    consumed_by: dict[str, list[str]]
    selection: Selection | None = None
    error: str | None = None
    #: How the broker gets there when it is not a plain binding match.
    note: str | None = None
    #: Where ``consumed_by`` comes from (``Workers.source``) and its wording.
    workers_source: str = DECLARED
    workers: str = ""
    #: Something worth knowing that is not an error (no worker is known).
    warning: str | None = None

    @property
    def selection_consumes(self) -> bool | None:
        if self.selection is None:
            return None
        return bool(set(self.delivered_to) & set(self.selection.queues))

    def as_dict(self) -> dict[str, Any]:
        document = {
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "overrides": self.overrides,
            "rule": self.rule,
            "queue": self.queue,
            "exchange": self.exchange,
            "exchange_type": self.exchange_type,
            "routing_key": self.routing_key,
            "delivered_to": self.delivered_to,
            "consumed_by": self.consumed_by,
            "error": self.error,
            "note": self.note,
            "warning": self.warning,
            "workers": {"source": self.workers_source, "description": self.workers},
        }
        if self.selection is not None:
            document["selection"] = {
                **self.selection.as_dict(),
                "consumes": self.selection_consumes,
            }
        return document


def _winning_rule(app: Celery, name: str, args: list, kwargs: dict, options: dict) -> str:
    """Which rule Celery's router takes, tried in Celery's own order."""
    router = app.amqp.router
    if options.get("queue") is not None:
        return f"explicit queue={options['queue']!r} (apply_async option)"
    task_type = app.tasks.get(name)
    for index, candidate in enumerate(app.amqp.routes):
        route = router.query_router(candidate, name, args, kwargs, options, task_type)
        if route is None:
            continue
        mapping = getattr(candidate, "map", {})
        if name in mapping:
            return f"task_routes[{name!r}] (router #{index})"
        for regex in getattr(candidate, "patterns", {}):
            if regex.match(name):
                return f"task_routes pattern {regex.pattern!r} (router #{index})"
        return f"router #{index} ({candidate!r})"
    return f"no task_routes rule matches: task_default_queue {app.conf.task_default_queue!r}"


def explain_route(
    app: Celery,
    name: str,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    routing_key: str | None = None,
    exchange: str | None = None,
    include: str | None = None,
    exclude: str | None = None,
    workers: Workers | None = None,
) -> RouteExplanation:
    """Explain where ``name`` goes; ``queue``/``routing_key``/``exchange`` are
    the ``apply_async`` options of the same names. ``workers`` (``read_workers``)
    says who consumes what; by default the app's declared selections."""
    args = list(args or [])
    kwargs = dict(kwargs or {})
    overrides = {
        key: value
        for key, value in (("queue", queue), ("routing_key", routing_key), ("exchange", exchange))
        if value is not None
    }
    task = app.tasks.get(name)
    options = {**(task._get_exec_options() if task is not None else {}), **overrides}
    options = {key: value for key, value in options.items() if value is not None}
    rule = _winning_rule(app, name, args, kwargs, options)
    if exchange is not None or routing_key is not None:
        rule += "; the --exchange/--routing-key given decide where it is published"
    selection = select_queues(app, include, exclude) if (include or exclude) else None
    try:
        routed = app.amqp.router.route(dict(options), name, args, kwargs, task)
    except QueueNotFound as exc:
        return RouteExplanation(
            name,
            args,
            kwargs,
            overrides,
            rule,
            None,
            "",
            "",
            "",
            [],
            {},
            selection,
            error=f"{exc.args[0]} (task_create_missing_queues is off: the send would fail)",
        )
    recorder = _RecordingProducer()
    message = app.amqp.create_task_message(str(uuid.uuid4()), name, args, kwargs)
    with suppressed():
        app.amqp.send_task_message(recorder, name, message, retry=False, **routed)
    sent_exchange = recorder.published.get("exchange") or ""
    if isinstance(sent_exchange, Exchange):
        sent_exchange = sent_exchange.name
    sent_key = recorder.published.get("routing_key") or ""
    routed_queue = routed.get("queue")
    topology = read_topology(app, workers=workers)

    note = None
    if sent_exchange == "":
        exchange_type = "direct (default exchange)"
        delivered = [sent_key] if sent_key in topology.queues else []
    else:
        declared = topology.exchanges.get(sent_exchange)
        exchange_type = declared.type if declared is not None else "undeclared"
        delivered = _bound_queues(topology, sent_exchange, sent_key)
        alternate = (declared.arguments or {}).get("alternate-exchange") if declared else None
        if not delivered and alternate:
            note = f"no binding matches: RabbitMQ passes it to alternate exchange {alternate!r}"
            delivered = _bound_queues(topology, alternate, sent_key)
    consumed_by = {
        queue_name: [worker.name for worker in topology.workers.consumers_of(queue_name)]
        for queue_name in delivered
    }
    error, warning = _delivery_error(delivered, consumed_by, topology.workers)
    return RouteExplanation(
        task=name,
        args=args,
        kwargs=kwargs,
        overrides=overrides,
        rule=rule,
        queue=getattr(routed_queue, "name", routed_queue),
        exchange=sent_exchange,
        exchange_type=exchange_type,
        routing_key=sent_key,
        delivered_to=delivered,
        consumed_by=consumed_by,
        selection=selection,
        error=error,
        note=note,
        workers_source=topology.workers.source,
        workers=topology.workers.describe(),
        warning=warning,
    )


def _delivery_error(
    delivered: list[str], consumed_by: dict[str, list[str]], workers: Workers
) -> tuple[str | None, str | None]:
    """(error, warning): a message dropped, or delivered where no known
    worker consumes, is an error; when no worker is known at all (nothing
    declared, nobody answered) that is only said."""
    if not delivered:
        return "no declared binding delivers this message: it is dropped", None
    if any(consumed_by.values()):
        return None, None
    landing = ", ".join(delivered)
    if workers.source == DECLARED:
        return f"it lands in {landing}, which no topology worker consumes", None
    if workers.source == LIVE:
        return f"it lands in {landing}, which no live worker consumes", None
    return (
        None,
        f"it lands in {landing}; which worker consumes it is unknown ({workers.describe()})",
    )


def _bound_queues(topology: Any, exchange: str, routing_key: str) -> list[str]:
    """Queues the declared bindings of ``exchange`` deliver ``routing_key`` to."""
    declared = topology.exchanges.get(exchange)
    if declared is None:
        return []
    return [
        binding.queue
        for binding in topology.bindings
        if binding.exchange == exchange
        and routing_key_matches(declared.type, binding.routing_key, routing_key)
    ]
