"""The PNG: throughput of every measurement against its ceiling, and latency.

matplotlib is optional (the ``bench`` dependency group): without it the
bench writes the table and the JSON and says that the chart was skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_chart"]


def write_chart(document: Mapping[str, Any], path: Path) -> str | None:
    """Write the chart; return why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"chart skipped: matplotlib is not installed ({exc})"

    rows: Sequence[Mapping[str, Any]] = document["rows"]
    rates = [r for r in rows if r["unit"] != "ms"]
    latencies = [r for r in rows if r["unit"] == "ms"]
    fig, (top, bottom) = plt.subplots(
        2,
        1,
        figsize=(11, 3 + 0.28 * len(rates)),
        gridspec_kw={"height_ratios": [max(len(rates), 1), max(len(latencies), 1) / 2 + 2]},
    )
    labels = [f"{r['measurement']}  {r['metric']}" for r in rates]
    values = [r["value"] for r in rates]
    colours = [
        "#888888" if r["measurement"].startswith("raw/")
        else "#d62728" if r["measurement"] in ("celery/default", "e2e/rpc")
        else "#1f77b4"
        for r in rates
    ]  # fmt: skip
    top.barh(range(len(rates)), values, color=colours)
    top.set_yticks(range(len(rates)), labels, fontsize=7)
    top.invert_yaxis()
    top.set_xlabel("messages or tasks per second (median over rounds)")
    for index, row in enumerate(rates):
        note = "" if row["over_ceiling"] is None else f" {row['over_ceiling']:.2f}x ceiling"
        top.text(row["value"], index, f" {row['value']:.0f}{note}", va="center", fontsize=6)
    top.set_title(
        f"routing_demo bench ({document['mode']}, seed {document['seed']}); "
        "grey: raw kombu ceiling, red: shipped defaults",
        fontsize=9,
    )
    bottom.barh(range(len(latencies)), [r["value"] for r in latencies], color="#2ca02c")
    bottom.set_yticks(
        range(len(latencies)),
        [f"{r['measurement']}  {r['metric']}" for r in latencies],
        fontsize=7,
    )
    bottom.invert_yaxis()
    bottom.set_xlabel("send -> result latency, ms")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
