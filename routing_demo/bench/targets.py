"""The benchmark's verdicts: the shipped app against the ceilings and its peers.

Pure functions over the measurements (see :mod:`routing_demo.bench.stats`),
no broker. Each target compares two figures measured in the same run; it is
judged only by a full run (a smoke run's batches are too small and its
measurements overlap), and a target whose figures were not measured is
``n/a``, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import stats

__all__ = ["TARGETS", "Target", "evaluate", "format_targets"]


@dataclass(frozen=True)
class Target:
    """``ours`` over ``theirs`` must reach ``threshold`` (``strict``: exceed it).

    ``ours`` and ``theirs`` are ``(measurement id, metric)``.
    """

    name: str
    ours: tuple[str, str]
    theirs: tuple[str, str]
    threshold: float
    strict: bool
    compares: str

    def verdict(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value > self.threshold if self.strict else value >= self.threshold


#: The targets, in the order they are printed.
TARGETS: tuple[Target, ...] = (
    Target(
        "group_send_at_least_0.5_of_raw_publish",
        (stats.SHIPPED_RPC_ID, "send_group"),
        (stats.RAW_PYAMQP_ID, "publish"),
        0.5,
        False,
        "group(...).apply_async() of the whole batch, confirmed, rpc:// (shipped), over raw "
        "py-amqp publish without confirms (transient)",
    ),
    Target(
        "group_send_ahead_of_dramatiq_send",
        (stats.SHIPPED_RPC_ID, "send_group"),
        (stats.DRAMATIQ_ID, "send"),
        1.0,
        True,
        "group send as above over Dramatiq's actor.send() without confirms (its default)",
    ),
    Target(
        "apply_async_at_least_0.9_of_raw_confirm_each",
        (stats.SHIPPED_RPC_ID, "send"),
        (stats.RAW_CONFIRM_EACH_ID, "publish"),
        0.9,
        False,
        "one confirmed apply_async at a time (results on, rpc://) over raw py-amqp "
        "basic_publish_confirm, one persistent message at a time",
    ),
    Target(
        "drain_at_least_0.9_of_plain_celery_rpc",
        (stats.SHIPPED_RPC_ID, "drain"),
        (stats.PLAIN_RPC_ID, "drain"),
        0.9,
        False,
        "shipped worker drain (results stored, rpc://) over a plain Celery worker on its "
        "defaults with the same pool, concurrency and result backend",
    ),
    Target(
        "drain_at_least_0.9_of_plain_celery_redis",
        (stats.SHIPPED_REDIS_ID, "drain"),
        (stats.PLAIN_REDIS_ID, "drain"),
        0.9,
        False,
        "the same with Redis results",
    ),
    Target(
        "drain_ahead_of_dramatiq",
        (stats.SHIPPED_RPC_ID, "drain"),
        (stats.DRAMATIQ_ID, "drain"),
        1.0,
        True,
        "shipped worker drain (rpc://) over a Dramatiq worker with the same processes x "
        "threads (prefork -c N: -p N -t 1) on Dramatiq's defaults",
    ),
)


def _value(by_id: Mapping[str, Mapping[str, Any]], mid: str, metric: str) -> float | None:
    found = by_id.get(mid, {}).get("metrics", {}).get(metric)
    return None if found is None else found.get("median")


def evaluate(measurements: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every target with its ratio and verdict (``None``: not measured)."""
    by_id = {m["id"]: m for m in measurements}
    out = []
    for target in TARGETS:
        ours, theirs = _value(by_id, *target.ours), _value(by_id, *target.theirs)
        value = stats.ratio(ours, theirs)
        out.append(
            {
                "name": target.name,
                "compares": target.compares,
                "threshold": target.threshold,
                "strict": target.strict,
                "value": value,
                "passed": target.verdict(value),
                "detail": f"{' '.join(target.ours)}: {_fmt(ours)}; "
                f"{' '.join(target.theirs)}: {_fmt(theirs)}",
            }
        )
    return out


def _fmt(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.0f}/s"


def format_targets(targets: Sequence[Mapping[str, Any]], *, judged: bool = True) -> str:
    """One line per target: PASS, FAIL or n/a, the ratio and both figures;
    for a run that does not judge, one line saying so."""
    if not judged:
        return (
            "targets: not judged; targets are judged only by a full run "
            "(this run's batches are a smoke test's)"
        )
    lines = []
    for target in targets:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target["passed"]]
        need = ">" if target.get("strict") else ">="
        value = "-" if target["value"] is None else f"{target['value']:.2f}x"
        lines.append(
            f"{verdict}  {target['name']}: {value} "
            f"(need {need} {target['threshold']:.2f}x; {target['detail']})"
        )
    return "\n".join(lines)
