"""The ``routes`` tools read the app ``-A`` names, not routing_demo's topology:
``tests.other_app`` (its own exchange, queues, routes and worker selections)
through the same commands, with no broker (live workers are stubbed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.bin.base import CLIContext
from celery.bin.celery import celery
from click.testing import CliRunner, Result

from routing_demo.cli import routes
from routing_demo.cli._common import EXIT_FAILED, EXIT_MISMATCH
from routing_demo.cli.definitions import app_permissions
from routing_demo.cli.model import read_topology
from routing_demo.workers import WorkerGroup, parse_selection, worker_nodes
from tests import other_app
from tests.other_app import PLANNED_SELECTIONS, make_app


def invoke(app: Celery, *args: str) -> Result:
    context = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    return CliRunner().invoke(routes, list(args), obj=context, catch_exceptions=False)


def as_json(app: Celery, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke(app, *args, "--json")
    return result.exit_code, json.loads(result.output)


class Replies:
    """``app.control.inspect()`` answering ``active_queues`` from data."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = replies
        self.asked: list[dict[str, Any]] = []

    def __call__(self, **options: Any) -> Replies:
        self.asked.append(options)
        return self

    def active_queues(self) -> dict[str, list[dict[str, str]]]:
        return {node: [{"name": name} for name in names] for node, names in self.replies.items()}


@pytest.fixture
def planned() -> Celery:
    """The other app, declaring ``mailer: -Q emails`` and ``reporter: -X emails``."""
    return make_app(routes_worker_selections=PLANNED_SELECTIONS)


def live(monkeypatch: pytest.MonkeyPatch, replies: dict[str, list[str]]) -> Celery:
    """The other app without selections, whose live workers answer ``replies``."""
    app = make_app()
    monkeypatch.setattr(app.control, "inspect", Replies(replies))
    return app


def test_when_another_app_shows_its_topology_then_it_is_its_own(planned: Celery) -> None:
    code, document = as_json(planned, "topology")
    assert code == 0
    assert [e["name"] for e in document["exchanges"]] == ["jobs", "jobs.parked"]
    queues = {q["name"]: q for q in document["queues"]}
    assert list(queues) == ["emails", "reports", "parked"]
    assert queues["emails"]["consumed_by"] == [
        "celery -A tests.other_app worker -Q emails -n mailer@%h"
    ]
    assert queues["reports"]["consumed_by"] == [
        "celery -A tests.other_app worker -X emails -n reporter@%h"
    ]
    # Dead-lettered to by emails and reports, outside task_queues: held, not run.
    assert [name for name, q in queues.items() if q["unconsumed_on_purpose"]] == ["parked"]
    assert document["routes"] == [
        {"router": 0, "pattern": "tests.other_app.report", "queue": "reports", "options": {}}
    ]
    assert document["default_queue"] == "emails"
    assert document["workers"]["source"] == "declared"
    assert "routing_demo" not in json.dumps(document)


def test_when_another_app_shows_its_topology_as_text_then_no_routing_demo_name_appears(
    planned: Celery,
) -> None:
    output = invoke(planned, "topology").output
    assert "celery -A tests.other_app worker -Q emails -n mailer@%h" in output
    assert "nobody, on purpose" in output
    assert "workers: from the app's routes_worker_selections" in output
    assert "routing_demo" not in output
    assert "add" not in output.split()


def test_when_another_app_declares_no_selection_then_topology_asks_the_live_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = live(monkeypatch, {"mail@box": ["emails"]})
    code, document = as_json(app, "topology")
    assert code == 0
    queues = {q["name"]: q for q in document["queues"]}
    assert queues["emails"]["consumed_by"] == ["mail@box (live worker)"]
    assert queues["reports"]["consumed_by"] == []
    assert document["workers"]["source"] == "live"
    output = invoke(app, "topology").output
    assert "workers: from the 1 live worker (inspect active_queues)" in output
    assert "NOBODY: no live worker consumes it" in output
    assert "routing_demo" not in output


def test_when_no_selection_is_declared_and_no_worker_answers_then_topology_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    output = invoke(live(monkeypatch, {}), "topology").output
    assert "workers: no selection declared and no worker answered" in output
    assert "NOBODY" not in output  # unknown is not nobody


def test_when_another_app_explains_a_routed_task_then_its_route_and_worker_answer(
    planned: Celery,
) -> None:
    code, document = as_json(planned, "explain", "report", "3")
    assert code == 0, document
    assert document["task"] == "tests.other_app.report"
    assert document["rule"] == "task_routes['tests.other_app.report'] (router #0)"
    assert (
        document["queue"] == planned.amqp.router.route({}, "tests.other_app.report")["queue"].name
    )
    assert document["delivered_to"] == ["reports"]
    assert document["consumed_by"] == {"reports": ["reporter"]}
    assert document["error"] is None
    output = invoke(planned, "explain", "report", "3").output
    assert "consumed by: reporter@%h (queue reports)" in output
    assert "routing_demo" not in output


def test_when_another_app_explains_an_unrouted_task_then_it_names_its_default_queue(
    planned: Celery,
) -> None:
    code, document = as_json(planned, "explain", "send_email", "x@example.org")
    assert code == 0, document
    assert document["queue"] == "emails"
    assert "task_default_queue 'emails'" in document["rule"]
    assert document["consumed_by"] == {"emails": ["mailer"]}


def test_when_a_live_worker_consumes_the_queue_then_explain_names_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = live(monkeypatch, {"mail@box": ["emails"], "reports@box": ["reports"]})
    code, document = as_json(app, "explain", "report", "3")
    assert code == 0, document
    assert document["consumed_by"] == {"reports": ["reports@box"]}
    assert document["workers"]["description"] == ("from the 2 live workers (inspect active_queues)")
    assert (
        "consumed by: reports@box (queue reports)" in invoke(app, "explain", "report", "3").output
    )


def test_when_no_live_worker_consumes_the_queue_then_explain_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, document = as_json(live(monkeypatch, {"mail@box": ["emails"]}), "explain", "report", "3")
    assert code == EXIT_FAILED
    assert document["error"] == "it lands in reports, which no live worker consumes"


def test_when_no_worker_is_known_then_explain_warns_without_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = live(monkeypatch, {})
    code, document = as_json(app, "explain", "report", "3")
    assert code == 0
    assert document["error"] is None
    assert "which worker consumes it is unknown" in document["warning"]
    output = invoke(app, "explain", "report", "3").output
    assert "workers:     no selection declared and no worker answered" in output


def test_when_a_selection_is_declared_then_no_live_worker_is_asked(
    monkeypatch: pytest.MonkeyPatch, planned: Celery
) -> None:
    asked = Replies({"stray@box": ["emails"]})
    monkeypatch.setattr(planned.control, "inspect", asked)
    invoke(planned, "topology")
    invoke(planned, "explain", "report", "3")
    assert asked.asked == []


def test_when_another_app_generates_definitions_then_they_hold_its_own_entities(
    planned: Celery,
) -> None:
    result = invoke(planned, "definitions")
    assert result.exit_code == 0
    document = json.loads(result.output)
    assert document["vhosts"] == [{"name": "/"}]  # its broker URL's, not routing_demo's
    assert {e["name"] for e in document["exchanges"]} == {"jobs", "jobs.parked"}
    assert {q["name"]: q["arguments"] for q in document["queues"]} == {
        "emails": {"x-dead-letter-exchange": "jobs.parked"},
        "reports": {"x-dead-letter-exchange": "jobs.parked"},
        "parked": {},
    }
    assert {(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"]} == {
        ("jobs", "emails", "emails"),
        ("jobs", "reports", "reports"),
        ("jobs.parked", "parked", ""),
    }
    assert "routing_demo" not in result.output


def test_when_another_apps_definitions_file_is_stale_then_check_names_its_own_command(
    planned: Celery, tmp_path: Path
) -> None:
    stale = tmp_path / "definitions.json"
    stale.write_text("{}\n")
    result = invoke(planned, "definitions", "-o", str(stale), "--check")
    assert result.exit_code == EXIT_MISMATCH
    assert f"celery -A tests.other_app routes definitions -o {stale}" in result.output


def test_when_another_app_asks_for_permissions_then_they_cover_its_queues_and_nodes(
    planned: Celery,
) -> None:
    code, document = as_json(planned, "permissions")
    assert code == 0
    granted = app_permissions(planned)
    for name in ("emails", "reports", "jobs", "jobs.parked", "parked"):
        assert granted.allows("configure", name), name
        assert granted.allows("write", name), name
    assert granted.allows("read", "emails") and granted.allows("read", "reports")
    assert not granted.allows("read", "parked")  # held: read by an operator only
    assert granted.allows("configure", "mailer-x@host.celery.pidbox")
    assert not granted.allows("configure", "add@host.celery.pidbox")
    for name in ("routing_demo", "add", "dead_letter", "unroutable"):
        assert not granted.allows("configure", name), name
    assert "routing_demo" not in json.dumps(document)


def test_when_no_selection_is_declared_then_permissions_let_any_node_run_a_worker() -> None:
    granted = app_permissions(make_app())
    assert granted.allows("configure", "anything@host.celery.pidbox")
    output = invoke(make_app(), "permissions").output
    assert "any node name: the app declares no routes_worker_selections" in output


def test_when_a_holding_queue_is_a_task_queue_then_its_arguments_still_make_it_one() -> None:
    """No routes_holding_queues: ``parked`` is known as a holding queue only
    because the task queues dead-letter to its exchange."""
    app = make_app(
        task_queues=[other_app.emails_queue, other_app.reports_queue, other_app.parked_queue],
        routes_holding_queues=None,
        routes_worker_selections={"mailer": "-Q emails", "reporter": "-Q reports"},
    )
    queues = read_topology(app).queues
    assert [name for name, q in queues.items() if q.unconsumed_on_purpose] == ["parked"]
    # A task queue: a worker without -Q consumes it, so it keeps read access.
    assert app_permissions(app).allows("read", "parked")
    # Once a selection consumes it, it is consumed, not held on purpose.
    app.conf.routes_worker_selections = {"all": "-X nothing"}
    assert not read_topology(app).queues["parked"].unconsumed_on_purpose


def test_when_selections_are_declared_then_nodes_consume_the_apps_own_queues(
    planned: Celery,
) -> None:
    consumed = {node.name: node.consumed_queues(planned) for node in worker_nodes(app=planned)}
    assert consumed == {"mailer": ["emails"], "reporter": ["reports"]}
    assert worker_nodes(app=make_app()) == []
    # Without an app: routing_demo's own topology, as before.
    assert [node.name for node in worker_nodes()] == ["add", "sub", "default"]


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("-Q emails", ("-Q", "emails")),
        ("--queues=emails,reports", ("-Q", "emails,reports")),
        ("--exclude-queues emails", ("-X", "emails")),
        (("-X", "a, b"), ("-X", "a,b")),
    ],
)
def test_when_a_selection_is_spelt_like_celery_worker_then_it_parses(
    given: Any, parsed: tuple[str, str]
) -> None:
    assert parse_selection(given) == parsed


@pytest.mark.parametrize("given", ["emails", "-Q", "-n emails", "-Q ,"])
def test_when_a_selection_is_not_a_queue_option_then_it_is_refused(given: str) -> None:
    with pytest.raises(ValueError, match="-Q or -X"):
        parse_selection(given)


def test_when_another_app_starts_workers_then_multi_loads_that_app(
    monkeypatch: pytest.MonkeyPatch, planned: Celery, tmp_path: Path
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(WorkerGroup, "running", lambda self: {})
    monkeypatch.setattr(WorkerGroup, "start", lambda self: started.append(self.multi_argv("start")))
    result = invoke(planned, "workers", "start", "--no-wait", "--run-dir", str(tmp_path), "--beat")
    assert result.exit_code == 0, result.output
    (argv,) = started
    multi = argv[argv.index("multi") :]
    assert multi[:4] == ["multi", "start", "mailer", "reporter"]
    assert multi[multi.index("-A") + 1] == "tests.other_app"
    assert multi[multi.index("-Q:mailer") + 1] == "emails"
    assert multi[multi.index("-X:reporter") + 1] == "emails"
    # Beat runs in the node of the app's default queue (emails).
    assert "--beat:mailer" in multi
    assert "routing_demo" not in " ".join(multi)


def test_when_run_through_celery_then_commands_print_the_a_value_given() -> None:
    result = CliRunner().invoke(
        celery, ["-A", "tests.other_app:planned_app", "routes", "topology", "--json"]
    )
    assert result.exit_code == 0, result.output
    emails = next(q for q in json.loads(result.output)["queues"] if q["name"] == "emails")
    assert emails["consumed_by"] == [
        "celery -A tests.other_app:planned_app worker -Q emails -n mailer@%h"
    ]


@pytest.mark.parametrize("command", ["start", "stop"])
def test_when_an_app_without_selections_starts_or_stops_workers_then_it_is_refused(
    tmp_path: Path, command: str
) -> None:
    result = invoke(make_app(), "workers", command, "--run-dir", str(tmp_path))
    assert result.exit_code == EXIT_FAILED
    assert "the app declares no routes_worker_selections" in result.output
    assert '"emails": "-Q emails"' in result.output


def test_when_an_app_without_selections_asks_status_then_it_sees_the_live_workers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = live(monkeypatch, {"mail@box": ["emails"]})
    monkeypatch.setattr("routing_demo.cli.workers_cmd.live_queue_counts", lambda app, names: {})

    class NoManagement:
        base_url = "http://nowhere"

        def queues(self, vhost: str) -> list[dict[str, Any]]:
            import requests

            raise requests.ConnectionError("no management API in unit tests")

    monkeypatch.setattr(
        "routing_demo.cli.workers_cmd.management_api", lambda app, url: NoManagement()
    )
    code, document = as_json(app, "workers", "status", "--run-dir", str(tmp_path))
    assert code == 0, document
    assert document["workers"]["source"] == "live"
    assert [(n["node"], [q["name"] for q in n["queues"]]) for n in document["nodes"]] == [
        ("mail@box", ["emails"])
    ]
    assert app.control.inspect.asked[0]["destination"] is None  # every worker, not ours

    monkeypatch.setattr(app.control, "inspect", Replies({}))
    result = invoke(app, "workers", "status", "--run-dir", str(tmp_path))
    assert result.exit_code == EXIT_FAILED
    assert "workers: no selection declared and no worker answered" in result.output
