"""The tables of the README and of docs/ say what the code does: checked, so they cannot drift."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import routing_demo.conf.celeryconfig as settings
from routing_demo.topology import TASK_QUEUES, TASK_ROUTES, dead_letter_queue, unroutable_queue
from routing_demo.workers import worker_nodes

ROOT = Path(__file__).parents[2]
#: The front door: the topology table.
README = ROOT / "README.md"
#: The settings table, seed names and values, and the settings added beyond it.
SETTINGS_PAGE = ROOT / "docs" / "settings.md"


def table_after(page: Path, heading: str) -> list[list[str]]:
    """Cells of the first Markdown table under ``heading`` in ``page``, header row dropped.

    ``heading`` is a whole line, e.g. a page's ``# Title`` on its first line.
    """
    text = "\n" + page.read_text()
    marker = f"\n{heading}\n"
    if marker not in text:
        raise LookupError(f"{page.relative_to(ROOT)} has no line {heading!r}")
    lines = text.split(marker, 1)[1].splitlines()
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


SETTINGS_ROWS = table_after(SETTINGS_PAGE, "# Settings: the seed's list in Celery 5 form")
ADDED_ROWS = table_after(SETTINGS_PAGE, "Added beyond the seed, for safety:")


def test_when_settings_page_is_read_then_both_tables_have_rows() -> None:
    # An empty parameter set would skip the value checks below instead of failing them.
    assert len(SETTINGS_ROWS) > 1
    assert len(ADDED_ROWS) > 1


@pytest.mark.parametrize(
    ("name", "value"),
    [(code(row[1]), row[2]) for row in SETTINGS_ROWS if row[1] != "none"]
    + [(code(row[0]), row[1]) for row in ADDED_ROWS],
)
def test_when_settings_page_lists_a_setting_then_config_has_it(name: str, value: str) -> None:
    assert getattr(settings, name) == ast.literal_eval(code(value))


def test_when_seed_setting_removed_then_config_does_not_set_it() -> None:
    removed = [row for row in SETTINGS_ROWS if row[2] == "removed"]
    assert [code(row[0]) for row in removed] == ["C_FORCE_ROOT"]
    assert not hasattr(settings, "C_FORCE_ROOT")


def test_when_readme_shows_topology_then_it_is_the_declared_one() -> None:
    rows = table_after(README, "## Topology")
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
