"""One measurement in a process of its own: ``python -m routing_demo.bench.child SPEC``.

The bench starts this with the variant in the environment (the same
``CELERY_CONFIG_MODULE`` and settings as the worker, the vhost's broker URL,
the transport's ``PYTHONPATH``), so every measurement starts from a fresh
interpreter, connection pool and result consumer. It prints one JSON object:
the raw per-round figures.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["amqp_compiled", "main", "run"]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    if kind == "raw":
        out = raw_ceiling(spec)
        return {**out, "amqp_speedups": amqp_compiled()}
    if kind == "raw-amqp":
        from .raw_amqp import rounds

        out = rounds(
            spec["url"],
            mode=spec["mode"],
            count=spec["count"],
            rounds=spec["rounds"],
            seed=spec["seed"],
            queue_type=spec["queue_type"],
        )
        return {**out, "amqp_speedups": amqp_compiled()}
    if kind == "dramatiq":
        from .measure import dramatiq_rounds
        from .peers.dramatiq_app import add as dramatiq_add
        from .peers.dramatiq_app import broker

        try:
            out = dramatiq_rounds(
                dramatiq_add,
                url=spec["url"],
                processes=spec["processes"],
                count=spec["count"],
                rounds=spec["rounds"],
                seed=spec["seed"],
            )
        finally:
            broker.close()
        return {**out, "amqp_speedups": amqp_compiled()}

    from .measure import celery_rounds, e2e_rounds, latency_samples

    if kind == "plain-celery":
        from .peers.plain_celery import add as plain_add
        from .peers.plain_celery import app

        tasks: tuple[Any, ...] = (plain_add,)
    else:
        from ..celery import app
        from ..tasks import add, sub

        tasks = (add, sub)

    common = {
        "node": spec["node"],
        "queues": spec["queues"],
        "count": spec["count"],
        "rounds": spec["rounds"],
        "seed": spec["seed"],
    }
    try:
        if kind in ("celery", "plain-celery"):
            out: dict[str, Any] = celery_rounds(
                app,
                tasks,
                results=spec.get("results", False),
                batch_sends=spec.get("batch_sends", False),
                **common,
            )
        elif kind == "e2e":
            out = e2e_rounds(app, tasks, with_no_results=spec["with_no_results"], **common)
            out["latency"] = latency_samples(
                app, tasks, samples=spec["latency_samples"], seed=spec["seed"]
            )
        else:
            raise ValueError(f"unknown measurement kind {kind!r}")
        out["amqp_speedups"] = amqp_compiled()
        return out
    finally:
        app.close()


def raw_ceiling(spec: dict[str, Any]) -> dict[str, Any]:
    """Per-round raw kombu rates: the project's ``benchmarks/raw_kombu.py``
    when the checkout has it (one call per round, after a small warm-up
    call), else :mod:`routing_demo.bench.raw`."""
    raw_kombu = load_raw_kombu()
    if raw_kombu is None:
        from .raw import raw_rounds

        out: dict[str, Any] = raw_rounds(
            spec["url"],
            count=spec["count"],
            rounds=spec["rounds"],
            seed=spec["seed"],
            transport=spec.get("kombu_transport"),
        )
        out["source"] = "routing_demo.bench.raw"
        return out
    raw_kombu.raw_rates(spec["url"], max(spec["count"] // 5, 100), rounds=1)
    rates = [
        raw_kombu.raw_rates(spec["url"], spec["count"], rounds=1) for _ in range(spec["rounds"])
    ]
    return {
        "publish": [r.publish_per_s for r in rates],
        "consume_ack": [r.consume_ack_per_s for r in rates],
        "source": "benchmarks/raw_kombu.py",
    }


def load_raw_kombu() -> Any:
    """``benchmarks/raw_kombu.py`` of this checkout, or ``None`` outside one."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "raw_kombu.py"
    if not path.is_file():
        return None
    module_spec = importlib.util.spec_from_file_location("routing_demo_raw_kombu", path)
    module = importlib.util.module_from_spec(module_spec)
    # dataclasses look their module up in sys.modules while the class is made.
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


def amqp_compiled() -> bool:
    """Whether this process runs py-amqp's Cython-compiled modules."""
    import amqp.serialization

    return amqp.serialization.__file__.endswith(".so")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    print(json.dumps(run(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
