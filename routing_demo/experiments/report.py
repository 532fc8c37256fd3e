"""Outcomes as text for a terminal, as a Markdown report, as JSON, and as a chart.

The chart needs matplotlib (an optional dependency): without it the report
is written without the PNG and says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .lab import Outcome

__all__ = ["render_markdown", "render_text", "to_json", "write_chart", "write_report"]


def _task_columns(outcome: Outcome) -> list[str]:
    return sorted({task for worker in outcome.workers.values() for task in worker["ran"]})


def _worker_rows(outcome: Outcome) -> tuple[list[str], list[list[str]]]:
    tasks = _task_columns(outcome)
    header = ["worker", "consumes", *tasks]
    rows = [
        [base, ",".join(worker["queues"]) or "-", *(str(worker["ran"].get(t, 0)) for t in tasks)]
        for base, worker in outcome.workers.items()
    ]
    return header, rows


def _queue_rows(outcome: Outcome) -> tuple[list[str], list[list[str]]]:
    header = ["queue", "ready", "consumers", "published", "delivered", "acked"]
    rows = [
        [name, *(str(v) for v in asdict(counters).values())]
        for name, counters in outcome.queues.items()
    ]
    return header, rows


def _text_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Columns padded to their widest cell; the first ``left`` ones are text."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _findings_lines(value: Any, indent: str = "  ") -> list[str]:
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item and not _flat(item):
                lines.append(f"{indent}{key}:")
                lines.extend(_findings_lines(item, indent + "  "))
            else:
                lines.append(f"{indent}{key}: {_inline(item)}")
        return lines
    if isinstance(value, list):
        lines = []
        for item in value:
            if _flat(item):
                lines.append(f"{indent}- {_inline(item)}")
            else:
                # One item per "- ", its keys indented under it.
                item_lines = _findings_lines(item, indent + "  ")
                lines.append(f"{indent}- {item_lines[0].strip()}")
                lines.extend(item_lines[1:])
        return lines
    return [f"{indent}{_inline(value)}"]


def _flat(value: Any) -> bool:
    if isinstance(value, dict):
        return (
            all(not isinstance(v, (dict, list)) for v in value.values())
            and len(value) <= 4
            and len(_inline(value)) <= 100
        )
    if isinstance(value, list):
        return all(not isinstance(v, (dict, list)) for v in value)
    return True


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_inline(v)}" for k, v in value.items()) or "-"
    if isinstance(value, list):
        return ", ".join(_inline(v) for v in value) or "(none)"
    return str(value)


def render_text(outcome: Outcome) -> str:
    """One outcome for a terminal: tallies, broker counters, findings, checks."""
    lines = [
        f"== {outcome.name}: {outcome.title}",
        f"settings {outcome.config_module}, vhost {outcome.vhost}, {outcome.sent} tasks sent",
        "",
        "workers (their own inspect stats totals):",
        *("  " + line for line in _text_table(*_worker_rows(outcome), left=2)),
        "",
        "queues (broker: passive declare and management message_stats):",
        *("  " + line for line in _text_table(*_queue_rows(outcome))),
        "",
        "findings:",
        *_findings_lines(outcome.findings),
        "",
        "checks:",
    ]
    for check in outcome.checks:
        lines.append(f"  {'ok  ' if check.passed else 'FAIL'}  {check.claim}")
        if not check.passed:
            lines.append(f"        observed: {check.observed}")
    passed = sum(check.passed for check in outcome.checks)
    lines.append(f"{passed}/{len(outcome.checks)} checks passed")
    return "\n".join(lines)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows),
    ]


def render_markdown(outcomes: Sequence[Outcome], *, chart: str | None = None) -> str:
    """The report: a summary table, then each experiment's tallies and checks."""
    summary = [
        [
            f"[{o.name}](#{o.name})",
            o.title,
            str(o.sent),
            "; ".join(
                f"{base}: " + ", ".join(f"{t} {n}" for t, n in w["ran"].items())
                for base, w in o.workers.items()
            ),
            f"{sum(c.passed for c in o.checks)}/{len(o.checks)}",
        ]
        for o in outcomes
    ]
    lines = [
        "# Routing experiments",
        "",
        "Each experiment ran in a throw-away RabbitMQ vhost with real `celery worker` "
        "processes; the tallies are the workers' own `inspect stats` totals, the queue "
        "counters the broker's.",
        "",
        *_md_table(["experiment", "what", "sent", "tasks run per worker", "checks"], summary),
        "",
    ]
    if chart:
        lines += [f"![prefetch and priority, tallies per worker]({chart})", ""]
    for o in outcomes:
        lines += [
            f"## {o.name}",
            "",
            f"{o.title}. Settings `{o.config_module}`, {o.sent} tasks sent.",
            "",
            *_md_table(*_worker_rows(o)),
            "",
            *_md_table(*_queue_rows(o)),
            "",
            "```text",
            *_findings_lines(o.findings, ""),
            "```",
            "",
            *(f"- {'✅' if c.passed else '❌'} {c.claim}" for c in o.checks),
            "",
        ]
    return "\n".join(lines)


def to_json(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [{**asdict(o), "passed": o.passed} for o in outcomes]


def write_chart(outcomes: Sequence[Outcome], path: Path) -> bool:
    """A PNG: the priority experiment's execution order per prefetch count,
    and every experiment's tasks per worker. ``False`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    priority = next((o for o in outcomes if o.name == "priority"), None)
    others = [o for o in outcomes if o.workers and o is not priority]
    columns = max(1, min(3, len(others)))
    rows = (1 if priority else 0) + -(-len(others) // columns)
    figure = plt.figure(figsize=(4 * columns, 3 * rows))
    grid = figure.add_gridspec(rows, columns)
    row = 0
    if priority:
        axis = figure.add_subplot(grid[0, :])
        colours = {"G": "#999999", "L": "#4c72b0", "H": "#dd5555"}
        phases = priority.findings["by prefetch"]
        for line, phase in enumerate(phases.values()):
            for position, letter in enumerate(phase["order"]):
                axis.barh(line, 1, left=position, color=colours[letter], edgecolor="white")
        axis.set_yticks(range(len(phases)), [f"prefetch {p}" for p in phases])
        axis.set_xlabel("execution order on the worker (grey: hold, blue: low, red: high priority)")
        axis.set_title("priority: high-priority tasks overtake only what was not prefetched")
        axis.invert_yaxis()
        row = 1
    tasks = sorted({t for o in others for t in _task_columns(o)})
    palette = plt.get_cmap("tab10")
    colour_of = {task: palette(i % 10) for i, task in enumerate(tasks)}
    for index, outcome in enumerate(others):
        axis = figure.add_subplot(grid[row + index // columns, index % columns])
        bases = list(outcome.workers)
        bottom = [0] * len(bases)
        for task in _task_columns(outcome):
            counts = [outcome.workers[b]["ran"].get(task, 0) for b in bases]
            axis.bar(bases, counts, bottom=bottom, label=task, color=colour_of[task])
            bottom = [a + b for a, b in zip(bottom, counts, strict=True)]
        axis.set_title(f"{outcome.name}: tasks run per worker", fontsize=9)
        axis.tick_params(axis="x", labelsize=7)
        axis.legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write_report(outcomes: Sequence[Outcome], directory: Path) -> dict[str, Path]:
    """``report.md``, ``report.json`` and (with matplotlib) ``report.png``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    chart = directory / "report.png"
    if write_chart(outcomes, chart):
        written["png"] = chart
    markdown = directory / "report.md"
    markdown.write_text(render_markdown(outcomes, chart=chart.name if "png" in written else None))
    written["markdown"] = markdown
    data = directory / "report.json"
    data.write_text(json.dumps(to_json(outcomes), indent=2, default=str) + "\n")
    written["json"] = data
    return written
