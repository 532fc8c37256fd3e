"""The bench's arithmetic: medians, percentiles, ratios, targets and the table.

Pure functions over plain dicts and lists: no broker, no worker, no clock.
The measuring code produces *measurements*; everything a reader sees (the
ratio table, the guarantees each row keeps, the JSON document; the verdicts
are in :mod:`routing_demo.bench.targets`) is computed here from them, so it
can be checked without RabbitMQ.

A measurement is a dict::

    {"id": "celery/default", "kind": "celery", "group": "sweep",
     "variant": {...}, "transport": "pyamqp",
     "metrics": {"send": {"unit": "tasks/s", "median": 3900.0, "rounds": [...]},
                 "latency_rpc": {"unit": "ms", "p50": 1.2, "p95": 2.0, "p99": 3.1,
                                 "samples": 600}}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "CEILING_OF",
    "CLASSIC_ID",
    "DEFAULT_E2E_ID",
    "DEFAULT_ID",
    "GUARANTEES",
    "QUORUM_ID",
    "SCHEMA_VERSION",
    "build_rows",
    "compare_queue_types",
    "flags",
    "format_queue_types",
    "format_table",
    "latency_summary",
    "median",
    "percentile",
    "rate_summary",
    "ratio",
    "to_json",
]

#: Bumped when the JSON document changes shape.
SCHEMA_VERSION = 2

#: The measurement that runs the shipped configuration (``conf/celeryconfig.py``).
DEFAULT_ID = "celery/default"
#: The end-to-end measurement on the shipped configuration (``rpc://`` results).
DEFAULT_E2E_ID = "e2e/rpc"

#: The shipped app as an application uses it: results stored (``rpc://`` as
#: shipped, then Redis), one confirmed ``apply_async`` per task, and batches.
SHIPPED_RPC_ID = "shipped/rpc"
SHIPPED_REDIS_ID = "shipped/redis"
#: The peers: plain Celery on its defaults (per result backend), Dramatiq.
PLAIN_RPC_ID = "peer/celery-rpc"
PLAIN_REDIS_ID = "peer/celery-redis"
DRAMATIQ_ID = "peer/dramatiq"
DRAMATIQ_CONFIRMS_ID = "peer/dramatiq-confirms"
#: The raw py-amqp publish ceilings: a confirm per message, pipelined confirms.
RAW_CONFIRM_EACH_ID = "raw/amqp-confirm-each"
RAW_PIPELINED_ID = "raw/amqp-pipelined"
#: The raw kombu ceiling on py-amqp (transient messages, no confirms).
RAW_PYAMQP_ID = "raw/pyamqp"

#: What a measurement may keep, in the order of its flags (``C P L R``):
#: publisher confirms, persistent messages, late acks, results.
GUARANTEES = ("confirms", "persistent", "late_acks", "results")

#: The queue-type pair: the shipped configuration with classic, then quorum queues.
CLASSIC_ID = "celery/classic"
QUORUM_ID = "celery/quorum"

#: Which raw-kombu rate bounds each Celery metric: sending is publishing;
#: draining a queue, and finishing tasks end to end, is consuming and acking.
CEILING_OF: dict[str, str] = {
    "send": "publish",
    "drain": "consume_ack",
    "score": "consume_ack",
    "e2e_no_results": "consume_ack",
    "e2e_join_native": "consume_ack",
    "e2e_naive_get": "consume_ack",
    "send_group": "publish",
    "send_all": "publish",
    "send_pipelined": "publish",
    "publish": "publish",
    "consume_ack": "consume_ack",
}


def median(values: Sequence[float]) -> float:
    """The middle value (mean of the two middle ones for an even count)."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2.0


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolated linearly between the two
    nearest ranks: numpy's default ("linear") method, without numpy."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def rate_summary(rounds: Sequence[float], unit: str = "tasks/s") -> dict[str, Any]:
    """A rate metric: the median over rounds, and every round for the record."""
    return {"unit": unit, "median": median(rounds), "rounds": [float(r) for r in rounds]}


def latency_summary(samples_s: Sequence[float]) -> dict[str, Any]:
    """A latency metric in milliseconds from samples in seconds."""
    samples_ms = [s * 1000.0 for s in samples_s]
    return {
        "unit": "ms",
        "p50": percentile(samples_ms, 50),
        "p95": percentile(samples_ms, 95),
        "p99": percentile(samples_ms, 99),
        "samples": len(samples_ms),
    }


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or ``None`` when either is missing or the
    reference is not positive."""
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def _by_id(measurements: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    return {m["id"]: m for m in measurements}


def _metric_value(metric: Mapping[str, Any]) -> float | None:
    return metric.get("median", metric.get("p50"))


def ceiling_for(
    measurements: Iterable[Mapping[str, Any]], transport: str, metric: str
) -> float | None:
    """The raw-kombu rate on ``transport`` that bounds ``metric``, if measured."""
    raw = _by_id(measurements).get(f"raw/{transport}")
    kind = CEILING_OF.get(metric)
    if raw is None or kind is None or kind not in raw.get("metrics", {}):
        return None
    return raw["metrics"][kind]["median"]


def build_rows(measurements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured figure, with its ratio over the ceiling (the raw
    kombu rate on the same transport) and over the shipped defaults: the same
    metric measured on the shipped configuration (``celery/default`` and
    ``e2e/rpc``); for latencies the same percentile with ``rpc://`` (smaller
    is better there)."""
    by_id = _by_id(measurements)
    default = {
        **by_id.get(DEFAULT_E2E_ID, {}).get("metrics", {}),
        **by_id.get(DEFAULT_ID, {}).get("metrics", {}),
    }
    rows: list[dict[str, Any]] = []
    for measurement in measurements:
        transport = measurement.get("transport", "pyamqp")
        keeps = flags(measurement.get("guarantees"))
        for name, metric in measurement.get("metrics", {}).items():
            if metric.get("unit") == "ms":
                for pct in ("p50", "p95", "p99"):
                    reference = default.get("latency_rpc", {}).get(pct)
                    rows.append(
                        {
                            "measurement": measurement["id"],
                            "keeps": keeps,
                            "metric": f"{name}.{pct}",
                            "value": metric[pct],
                            "unit": "ms",
                            "over_ceiling": None,
                            "over_default": ratio(metric[pct], reference),
                        }
                    )
                continue
            value = _metric_value(metric)
            rows.append(
                {
                    "measurement": measurement["id"],
                    "keeps": keeps,
                    "metric": name,
                    "value": value,
                    "unit": metric.get("unit", "tasks/s"),
                    "over_ceiling": ratio(value, ceiling_for(measurements, transport, name)),
                    "over_default": ratio(value, _metric_value(default[name]))
                    if name in default
                    else None,
                }
            )
    return rows


def flags(guarantees: Mapping[str, bool] | None) -> str:
    """``C P L R`` with ``-`` for each guarantee not kept; ``?`` unknown."""
    if guarantees is None:
        return "?"
    return " ".join(
        letter if guarantees.get(name) else "-"
        for letter, name in zip("CPLR", GUARANTEES, strict=True)
    )


def _queue_summary(measurement: Mapping[str, Any]) -> dict[str, Any]:
    """One measurement's queues: their names and types, the nodes holding
    them (a quorum queue's leader) and the fewest copies any of them has."""
    placement: Mapping[str, Mapping[str, Any]] = measurement.get("queue_placement") or {}
    return {
        "queues": sorted(placement),
        "types": sorted({str(q.get("type")) for q in placement.values()}),
        "nodes": sorted({q["node"] for q in placement.values() if q.get("node")}),
        "members": sorted({m for q in placement.values() for m in q.get("members", [])}),
        "copies": min((len(q.get("members", [])) for q in placement.values()), default=0),
    }


def compare_queue_types(measurements: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Quorum over classic queues, measured in the same run: the ratio of each
    rate (send, drain, score), and where each measurement's queues lived.
    ``None`` unless both ``celery/classic`` and ``celery/quorum`` ran."""
    by_id = _by_id(measurements)
    classic, quorum = by_id.get(CLASSIC_ID), by_id.get(QUORUM_ID)
    if classic is None or quorum is None:
        return None
    ratios = {}
    for name in ("send", "drain", "score"):
        ours = quorum.get("metrics", {}).get(name)
        theirs = classic.get("metrics", {}).get(name)
        if ours is not None and theirs is not None:
            ratios[name] = ratio(_metric_value(ours), _metric_value(theirs))
    return {
        "over": CLASSIC_ID,
        "measured": QUORUM_ID,
        "ratios": ratios,
        "classic": _queue_summary(classic),
        "quorum": _queue_summary(quorum),
    }


def format_queue_types(comparison: Mapping[str, Any] | None) -> str:
    """The quorum/classic line, then where each queue type's queues lived."""
    if not comparison:
        return ""
    figures = ", ".join(
        f"{name} {_fmt_ratio(value)}" for name, value in comparison["ratios"].items()
    )
    lines = [f"quorum/classic ({comparison['measured']} over {comparison['over']}): {figures}"]
    classic, quorum = comparison["classic"], comparison["quorum"]
    if classic["queues"]:
        lines.append(
            f"  classic queues {', '.join(classic['queues'])}: one copy each, on "
            f"{', '.join(classic['nodes']) or 'an unknown node'}"
        )
    if quorum["queues"]:
        copies = quorum["copies"]
        spread = (
            f"replicated on {copies} nodes ({', '.join(quorum['members'])})"
            if copies > 1
            else "on one node only (no replicas: a single node)"
        )
        lines.append(
            f"  quorum queues {', '.join(quorum['queues'])}: leader on "
            f"{', '.join(quorum['nodes']) or 'an unknown node'}, {spread}"
        )
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The ratio table as fixed-width text, one figure a line."""
    header = ("measurement", "keeps", "metric", "value", "unit", "/ceiling", "/default")
    lines = [
        (
            row["measurement"],
            row.get("keeps", "?"),
            row["metric"],
            _fmt(row["value"], 2 if row["unit"] == "ms" else 0),
            row["unit"],
            _fmt_ratio(row["over_ceiling"]),
            _fmt_ratio(row["over_default"]),
        )
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    aligns = ("<", "<", "<", ">", "<", ">", ">")

    def render(cells: Sequence[str]) -> str:
        cells_aligned = zip(cells, aligns, widths, strict=True)
        return "  ".join(f"{cell:{align}{width}}" for cell, align, width in cells_aligned).rstrip()

    rule = "-" * len(render(header))
    legend = (
        "keeps: C publisher confirms, P persistent messages, L late acks, R results (- not kept)"
    )
    return "\n".join([render(header), rule, *(render(line) for line in lines), "", legend])


def to_json(document: Mapping[str, Any]) -> str:
    """The JSON document, stable key order, finite numbers only."""
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
