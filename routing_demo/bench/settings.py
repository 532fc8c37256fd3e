"""What one benchmarked configuration is, and how a worker and a client get it.

A :class:`Variant` differs from the shipped configuration (``conf/celeryconfig.py``)
in the few settings the bench sweeps. The worker reads the difference from
the environment through :mod:`routing_demo.bench.workerconf`, the client
from :func:`client_settings`; neither edits a file. The queue type travels
as the project's own ``ROUTING_DEMO_QUEUE_TYPE``, so a bench worker declares
exactly what a worker started with that variable would.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from celery import Celery

from ..celery import DEFAULT_CONFIG_MODULE
from ..topology import QUEUE_TYPE_ENV, QUEUE_TYPES, TASK_ROUTES, build_queues, routed_queue_names
from ..transports import LIBRABBITMQ_TRANSPORT

__all__ = [
    "SETTINGS_ENV",
    "TOPOLOGY_ENV",
    "TRANSPORTS",
    "Transport",
    "Variant",
    "client_settings",
    "settings_from_environ",
    "shipped_variant",
    "topology_settings",
    "worker_environ",
]

#: JSON object of Celery settings a bench worker applies over the shipped ones.
SETTINGS_ENV = "ROUTING_DEMO_BENCH_SETTINGS"
#: ``routed`` (the shipped topology) or ``single`` (everything on ``default``).
TOPOLOGY_ENV = "ROUTING_DEMO_BENCH_TOPOLOGY"


@dataclass(frozen=True)
class Transport:
    """How a transport is selected: the URL scheme, Celery settings, and
    whether it needs the py-amqp build with Cython speedups on the path."""

    scheme: str
    settings: Mapping[str, Any]
    kombu_transport: str | None = None
    speedups: bool = False


#: The transports the bench compares. librabbitmq goes through the project's
#: kombu 5.7 adapter, chosen by class path (never by kombu's amqp:// switch).
TRANSPORTS: dict[str, Transport] = {
    "pyamqp": Transport("pyamqp", {}),
    "pyamqp-speedups": Transport("pyamqp", {}, speedups=True),
    "librabbitmq": Transport(
        "librabbitmq",
        {"broker_transport": LIBRABBITMQ_TRANSPORT},
        kombu_transport=LIBRABBITMQ_TRANSPORT,
    ),
}


@dataclass(frozen=True)
class Variant:
    """The swept settings. ``concurrency=None`` means one pool process (or
    thread) per CPU core, as the shipped ``worker_concurrency = None`` does."""

    topology: str = "routed"
    pool: str = "prefork"
    concurrency: int | None = None
    prefetch_multiplier: int = 4
    acks_late: bool = True
    confirm_publish: bool = False
    transport: str = "pyamqp"
    #: ``classic`` or ``quorum``: the type of every durable queue
    #: (``routing_demo.topology.build_queues``).
    queue_type: str = "classic"
    #: Task events (``-E``): off in Celery's defaults and as shipped.
    events: bool = False

    def __post_init__(self) -> None:
        if self.topology not in ("routed", "single"):
            raise ValueError(f"topology must be 'routed' or 'single', not {self.topology!r}")
        if self.queue_type not in QUEUE_TYPES:
            raise ValueError(
                f"queue_type must be one of {', '.join(QUEUE_TYPES)}, not {self.queue_type!r}"
            )
        if self.pool not in ("prefork", "threads", "solo"):
            raise ValueError(f"pool must be prefork, threads or solo, not {self.pool!r}")
        if self.transport not in TRANSPORTS:
            raise ValueError(
                f"transport must be one of {sorted(TRANSPORTS)}, not {self.transport!r}"
            )
        if self.prefetch_multiplier < 1:
            raise ValueError("prefetch_multiplier must be at least 1")

    def with_(self, **changes: Any) -> Variant:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def queues(self) -> list[str]:
        """The queues this variant's tasks travel through (and its worker consumes)."""
        queues = build_queues(self.queue_type)
        return routed_queue_names() if self.topology == "routed" else [queues.default.name]

    def effective_concurrency(self) -> int:
        if self.pool == "solo":
            return 1
        return self.concurrency or os.cpu_count() or 1

    def setting_overrides(self, shipped_transport_options: Mapping[str, Any]) -> dict[str, Any]:
        """The Celery settings (lowercase names) this variant sets."""
        transport_options = dict(shipped_transport_options)
        if self.confirm_publish:
            transport_options["confirm_publish"] = True
        else:
            transport_options.pop("confirm_publish", None)
        return {
            **TRANSPORTS[self.transport].settings,
            "task_acks_late": self.acks_late,
            "worker_prefetch_multiplier": self.prefetch_multiplier,
            "worker_pool": self.pool,
            "worker_concurrency": self.concurrency,
            "broker_transport_options": transport_options,
        }

    def worker_options(self) -> list[str]:
        """The same settings as explicit ``celery worker`` options."""
        options = [f"--pool={self.pool}", f"--prefetch-multiplier={self.prefetch_multiplier}"]
        if self.pool != "solo":
            options.append(f"--concurrency={self.effective_concurrency()}")
        if self.events:
            options.append("--events")
        return options


def _shipped_app() -> Celery:
    app = Celery("routing_demo-bench-shipped", set_as_current=False)
    app.config_from_object(DEFAULT_CONFIG_MODULE)
    return app


def shipped_variant() -> Variant:
    """The shipped configuration, read from the config module through Celery
    (so Celery's own defaults fill what the module leaves out)."""
    conf = _shipped_app().conf
    queue_type = conf.task_default_queue_type
    return Variant(
        topology="routed",
        pool=conf.worker_pool if conf.worker_pool in ("prefork", "threads", "solo") else "prefork",
        concurrency=conf.worker_concurrency,
        prefetch_multiplier=conf.worker_prefetch_multiplier,
        acks_late=bool(conf.task_acks_late),
        confirm_publish=bool((conf.broker_transport_options or {}).get("confirm_publish")),
        queue_type=queue_type if queue_type in QUEUE_TYPES else "classic",
    )


def shipped_transport_options() -> dict[str, Any]:
    return dict(_shipped_app().conf.broker_transport_options or {})


def topology_settings(topology: str, queue_type: str = "classic") -> dict[str, Any]:
    """The queues of ``queue_type`` (``build_queues``) and the routes.
    ``single``: one queue, no routes, so every task lands on ``default``.

    Worker and sender get the same declarations: RabbitMQ refuses to
    redeclare a queue with another type or other arguments.
    """
    queues = build_queues(queue_type)
    by_type = {"task_default_queue_type": queue_type}
    if topology == "single":
        return {"task_queues": (queues.default,), "task_routes": {}, **by_type}
    return {"task_queues": queues.task_queues, "task_routes": dict(TASK_ROUTES), **by_type}


def worker_environ(variant: Variant) -> dict[str, str]:
    """Environment entries that make a worker (and the measuring child) load
    ``variant``. ``ROUTING_DEMO_QUEUE_TYPE`` is always set, so a value left
    in the shell cannot turn a classic measurement into a quorum one."""
    overrides = variant.setting_overrides(shipped_transport_options())
    return {
        "CELERY_CONFIG_MODULE": "routing_demo.bench.workerconf",
        SETTINGS_ENV: json.dumps(overrides),
        TOPOLOGY_ENV: variant.topology,
        QUEUE_TYPE_ENV: variant.queue_type,
    }


def settings_from_environ(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What :mod:`routing_demo.bench.workerconf` applies over the shipped settings."""
    environ = os.environ if environ is None else environ
    settings = dict(json.loads(environ.get(SETTINGS_ENV) or "{}"))
    settings.update(
        topology_settings(
            environ.get(TOPOLOGY_ENV, "routed"),
            environ.get(QUEUE_TYPE_ENV, "classic").strip().lower() or "classic",
        )
    )
    return settings


def client_settings(variant: Variant) -> dict[str, Any]:
    """Settings for the sending app: the shipped ones, then the variant's."""
    return {
        **variant.setting_overrides(shipped_transport_options()),
        **topology_settings(variant.topology, variant.queue_type),
    }
