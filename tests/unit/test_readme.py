"""The README's tables say what the code does: checked, so they cannot drift."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import conf.celeryconfig as settings
from routing_demo.topology import TASK_QUEUES, TASK_ROUTES, dead_letter_queue, unroutable_queue
from routing_demo.workers import worker_nodes

README = Path(__file__).parents[2] / "README.md"


def table_after(heading: str) -> list[list[str]]:
    """Cells of the first Markdown table under ``heading``, header row dropped."""
    lines = README.read_text().split(f"\n{heading}\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def code(cell: str) -> str:
    """The text of the first ``code`` span in a cell."""
    return cell.split("`")[1]


SETTINGS_ROWS = table_after("## Settings: the seed's list in Celery 5 form")
ADDED_ROWS = table_after("Added beyond the seed, for safety:")


@pytest.mark.parametrize(
    ("name", "value"),
    [(code(row[1]), row[2]) for row in SETTINGS_ROWS if row[1] != "none"]
    + [(code(row[0]), row[1]) for row in ADDED_ROWS],
)
def test_when_readme_lists_a_setting_then_config_has_that_value(name: str, value: str) -> None:
    assert getattr(settings, name) == ast.literal_eval(code(value))


def test_when_seed_setting_removed_then_config_does_not_set_it() -> None:
    removed = [row for row in SETTINGS_ROWS if row[2] == "removed"]
    assert [code(row[0]) for row in removed] == ["C_FORCE_ROOT"]
    assert not hasattr(settings, "C_FORCE_ROOT")


def test_when_readme_shows_topology_then_it_is_the_declared_one() -> None:
    rows = table_after("## Topology")
    by_queue = {code(row[1]): row for row in rows}
    holding = (dead_letter_queue, unroutable_queue)
    assert set(by_queue) == {queue.name for queue in (*TASK_QUEUES, *holding)}
    commands = {
        node.consumed_queues()[0]: f"celery -A routing_demo worker {node.queue_option} "
        f"{node.queue_names} -n {node.name}@%h"
        for node in worker_nodes()
    }
    for queue in TASK_QUEUES:
        exchange, _, routing_key, tasks, consumer = by_queue[queue.name]
        assert exchange == f"`{queue.exchange.name}` ({queue.exchange.type})"
        assert code(routing_key) == queue.routing_key
        assert code(consumer) == commands[queue.name]
        routed = [name for name, route in TASK_ROUTES.items() if route["queue"] == queue.name]
        assert [code(tasks)] == routed or (not routed and "without a route" in tasks)
    for queue in holding:
        exchange = by_queue[queue.name][0]
        assert exchange == f"`{queue.exchange.name}` ({queue.exchange.type})"
