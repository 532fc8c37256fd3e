"""Celery's task message, built once per task and stamped for every call of a batch.

Building a task message costs Celery far more than publishing it: routing,
the configuration lookups, ``saferepr`` of the arguments, kombu's entity
copies and retry wrappers. In a pipelined batch (``routing_demo.batch``)
that cost is the whole cost. So the first send of each task (with the same
options) goes through Celery unchanged, and the message it published
becomes the template: later sends copy its headers and properties and put
in only what differs per call (task id, root/parent/group ids, the
arguments and their ``argsrepr``). Exchange, routing key, delivery mode and
priority are Celery's own answer for that task.

Only what cannot differ is stamped. A send falls back to Celery when any
option would change more than the per-call fields (a countdown, ETA,
expiry, link, chord or custom header), when a router function may route on
the arguments, when a ``before_task_publish`` receiver may rewrite the
message, when ``task-sent`` events are on, or when the body is not JSON.
``after_task_publish`` fires for every stamped message, as Celery fires it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from amqp import Message
from celery import Celery
from celery.app.routes import MapRoute
from celery.signals import after_task_publish, before_task_publish
from celery.utils import uuid
from celery.utils.saferepr import saferepr
from kombu.utils.json import dumps, loads

__all__ = ["Published", "Stamped", "TaskTemplates"]

#: Options that differ per call and are stamped into the template's copy.
PER_CALL = frozenset(
    {"task_id", "group_id", "group_index", "root_id", "parent_id", "producer", "add_to_parent"}
)
#: Options that must be unset (``None``) for a send to be stamped.
UNSET = frozenset(
    {"countdown", "eta", "expires", "link", "link_error", "chord", "chain", "headers"}
    | {"compression"}
)
#: Options kept as they are (they pick the template), when hashable.
KEYED = frozenset(
    {
        "result_cls",
        "shadow",
        "task_type",
        "queue",
        "routing_key",
        "exchange",
        "priority",
        "serializer",
        "delivery_mode",
        "time_limit",
        "soft_time_limit",
        "immediate",
        "mandatory",
        "reply_to",
        "ignore_result",
        "retry",
    }
)
#: Argument types whose ``repr`` is what ``saferepr`` would give.
_PLAIN = (int, float, str, bool, type(None))


@dataclass(frozen=True)
class Published:
    """One message as it left for the broker."""

    message: Message
    exchange: str
    routing_key: str
    mandatory: bool = False
    immediate: bool = False


@dataclass(frozen=True)
class Stamped:
    """A template's copy for one call."""

    published: Published
    task_id: str
    ignore_result: bool
    #: The body as Celery hands it to ``after_task_publish``.
    body: tuple[Any, Any, Any]


@dataclass(frozen=True)
class _Template:
    published: Published
    embed: Any
    ignore_result: bool


class TaskTemplates:
    """The templates of one batch, by task name and options."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._templates: dict[Hashable, _Template] = {}
        routes = app.amqp.router.routes
        #: Routes that look at the name only: the route of one call is the
        #: route of every call.
        self._static_routes = all(isinstance(route, MapRoute) for route in routes)
        #: ``task-sent`` events carry per-call fields Celery alone fills in.
        self._sent_events = bool(app.conf.task_send_sent_event)
        self._argsrepr_maxsize = app.amqp.argsrepr_maxsize
        self._kwargsrepr_maxsize = app.amqp.kwargsrepr_maxsize

    def key(self, name: str, options: Mapping[str, Any]) -> Hashable | None:
        """The template key of a send, or ``None`` when it must go through Celery."""
        if not self._static_routes or self._sent_events or before_task_publish.receivers:
            return None
        keyed = []
        for option, value in options.items():
            if option in PER_CALL or option in ("retry_policy", "confirm_timeout"):
                continue
            if option in UNSET:
                if value is not None:
                    return None
            elif option in KEYED:
                if not isinstance(value, Hashable):
                    return None
                keyed.append((option, value))
            elif value is not None:
                return None
        return (name, tuple(sorted(keyed, key=lambda item: item[0])))

    def learn(self, key: Hashable, published: Published) -> None:
        """Keep ``published`` (Celery's message for ``key``) as its template."""
        message = published.message
        headers = message.properties.get("application_headers") or {}
        if message.properties.get("content_type") != "application/json" or headers.get(
            "compression"
        ):
            return
        body = message.body
        args_kwargs_embed = loads(body.decode() if isinstance(body, bytes) else body)
        self._templates[key] = _Template(
            published, args_kwargs_embed[2], bool(headers.get("ignore_result"))
        )

    def stamp(
        self, key: Hashable, args: Any, kwargs: Any, options: Mapping[str, Any]
    ) -> Stamped | None:
        """A copy of the template for this call; ``None`` without a template
        for ``key``."""
        template = self._templates.get(key)
        if template is None:
            return None
        args = tuple(args or ())
        kwargs = dict(kwargs or {})
        task_id = options.get("task_id") or uuid()
        parent_id, root_id = options.get("parent_id"), options.get("root_id")
        if not (parent_id and root_id):
            parent = self.app.current_worker_task
            if parent is not None:
                root_id = root_id or parent.request.root_id or parent.request.id
                parent_id = parent_id or parent.request.id
        source = template.published.message
        headers = {
            **source.properties["application_headers"],
            "id": task_id,
            "root_id": root_id or task_id,
            "parent_id": parent_id,
            "group": options.get("group_id"),
            "group_index": options.get("group_index"),
            "argsrepr": self._repr(args, self._argsrepr_maxsize),
            "kwargsrepr": self._repr(kwargs, self._kwargsrepr_maxsize),
        }
        properties = {
            **source.properties,
            "application_headers": headers,
            "correlation_id": task_id,
        }
        body = dumps([args, kwargs, template.embed])
        message = Message(body.encode(), **properties)
        published = Published(
            message,
            template.published.exchange,
            template.published.routing_key,
            template.published.mandatory,
            template.published.immediate,
        )
        return Stamped(published, task_id, template.ignore_result, (args, kwargs, template.embed))

    @staticmethod
    def announce(name: str, stamped: Stamped) -> None:
        """``after_task_publish``, as Celery sends it for every message."""
        if after_task_publish.receivers:
            published = stamped.published
            after_task_publish.send(
                sender=name,
                body=stamped.body,
                headers=published.message.properties["application_headers"],
                exchange=published.exchange,
                routing_key=published.routing_key,
            )

    def _repr(self, value: Any, maxsize: int) -> str:
        if all(isinstance(item, _PLAIN) for item in _items(value)):
            text = repr(value)
            if len(text) <= maxsize:
                return text
        return saferepr(value, maxsize, maxlevels=self.app.conf.task_repr_maxlevels)


def _items(value: Any) -> Any:
    return value.values() if isinstance(value, dict) else value
