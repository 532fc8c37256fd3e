"""The PNG: each configuration's send and drain side by side (peers and
ceilings included, the shipped app highlighted), and latency.

matplotlib is optional (the ``report`` dependency group): without it the
bench writes the table and the JSON and says that the chart was skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["grouped_rates", "write_chart"]

#: (row kind, colour) of the two bars of a configuration.
SEND = ("send", "#1f77b4")
DRAIN = ("drain", "#ff7f0e")
#: Which metric is a configuration's send bar and which its drain bar.
SEND_METRICS = ("send", "publish", "send_group", "send_all", "send_pipelined")
DRAIN_METRICS = ("drain", "consume_ack")
#: Measurements that run the shipped app.
SHIPPED_IDS = ("celery/default", "shipped/rpc", "shipped/redis")


def grouped_rates(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One group per configuration with its send and drain rows (``None``
    where not measured), in table order. A batch send way of the shipped
    app (``send_group`` …) is a group of its own, send only."""
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        metric, mid = row["metric"], row["measurement"]
        if metric in DRAIN_METRICS:
            key, kind = mid, "drain"
        elif metric in SEND_METRICS:
            key = mid if metric in ("send", "publish") else f"{mid} {metric}"
            kind = "send"
        else:
            continue
        group = groups.setdefault(
            key,
            {
                "label": f"{key}  [{row.get('keeps', '?')}]",
                "shipped": mid in SHIPPED_IDS,
                "peer": mid.startswith("peer/"),
                "send": None,
                "drain": None,
            },
        )
        group[kind] = row
    return list(groups.values())


def write_chart(document: Mapping[str, Any], path: Path) -> str | None:
    """Write the chart; return why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"chart skipped: matplotlib is not installed ({exc})"

    rows: Sequence[Mapping[str, Any]] = document["rows"]
    groups = grouped_rates(rows)
    latencies = [r for r in rows if r["unit"] == "ms"]
    # The latency panel only when the run measured latency (not in --only subsets without e2e).
    if latencies:
        fig, (top, bottom) = plt.subplots(
            2,
            1,
            figsize=(11, 3 + 0.42 * len(groups)),
            gridspec_kw={"height_ratios": [max(len(groups), 1), len(latencies) / 3 + 2]},
        )
    else:
        fig, top = plt.subplots(1, 1, figsize=(11, 1.5 + 0.42 * len(groups)))
        bottom = None
    height = 0.4
    for index, group in enumerate(groups):
        if group["shipped"]:
            top.axhspan(index - 0.5, index + 0.5, color="#ffe9a8", zorder=0)
        for offset, (kind, colour) in ((-height / 2, SEND), (height / 2, DRAIN)):
            row = group[kind]
            if row is None:
                continue
            top.barh(index + offset, row["value"], height=height, color=colour, zorder=2)
            top.text(row["value"], index + offset, f" {row['value']:.0f}", va="center", fontsize=6)
    top.set_yticks(range(len(groups)), [g["label"] for g in groups], fontsize=7)
    for tick, group in zip(top.get_yticklabels(), groups, strict=True):
        if group["shipped"]:
            tick.set_fontweight("bold")
        elif group["peer"]:
            tick.set_color("#6a3d9a")
    top.invert_yaxis()
    top.set_xlabel("messages or tasks per second (median over rounds)")
    top.legend(
        handles=[
            plt.Rectangle((0, 0), 1, 1, color=SEND[1]),
            plt.Rectangle((0, 0), 1, 1, color=DRAIN[1]),
            plt.Rectangle((0, 0), 1, 1, color="#ffe9a8"),
        ],
        labels=["send / publish", "drain / consume+ack", "shipped app"],
        fontsize=7,
        loc="lower right",
    )
    top.set_title(
        f"routing_demo bench ({document['mode']}, seed {document['seed']}); "
        "bold on yellow: the shipped app; purple: peers; [C P L R]: guarantees kept",
        fontsize=9,
    )
    if bottom is not None:
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
