"""The ``routes`` commands without a broker: topology, explain, definitions,
worker options, status answers, and verify against a stubbed management API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import requests
from celery.bin.base import CLIContext
from celery.bin.celery import celery
from click.testing import CliRunner, Result

from routing_demo import celery_app
from routing_demo.cli import routes
from routing_demo.cli._common import EXIT_FAILED, EXIT_MISMATCH, EXIT_UNKNOWN
from routing_demo.cli.definitions import (
    DEFAULT_DEFINITIONS_PATH,
    DEFINITIONS_PATHS,
    PERMISSIONS_PATHS,
    render_definitions,
)
from routing_demo.cli.model import read_topology
from routing_demo.cli.revoke_cmd import Revoked
from routing_demo.cli.revoke_cmd import explain as explain_revoke
from routing_demo.cli.tasks_cmd import describe_state
from routing_demo.cli.verify import verify_topology
from routing_demo.cli.workers_cmd import split_per_node
from routing_demo.tasks import add, sub
from routing_demo.topology import (
    QUEUE_TYPE_ENV,
    TASK_QUEUES,
    TASK_ROUTES,
    default_queue,
    worker_selections,
)
from routing_demo.workers import WorkerGroup, worker_nodes

ROOT = Path(__file__).resolve().parents[2]


def invoke(*args: str) -> Any:
    celery_app.loader.import_default_modules()
    context = CLIContext(app=celery_app, no_color=True, workdir=None)
    return CliRunner().invoke(routes, list(args), obj=context, catch_exceptions=False)


def explain_json(*args: str) -> tuple[int, dict[str, Any]]:
    result = invoke("explain", *args, "--json")
    return result.exit_code, json.loads(result.output)


def test_when_celery_loads_plugins_then_routes_is_a_celery_subcommand() -> None:
    result = CliRunner().invoke(celery, ["-A", "routing_demo", "routes", "topology", "--json"])
    assert result.exit_code == 0, result.output
    assert {q["name"] for q in json.loads(result.output)["queues"]} >= {"add", "sub", "default"}


@pytest.mark.parametrize(
    "command",
    [
        ["topology"],
        ["explain"],
        ["verify"],
        ["definitions"],
        ["send"],
        ["status"],
        ["workers"],
        ["workers", "start"],
        ["workers", "stop"],
        ["workers", "status"],
    ],
)
def test_when_asking_for_help_then_every_command_shows_runnable_examples(
    command: list[str],
) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.output
    assert "celery -A routing_demo routes " + command[0] in result.output


def test_when_showing_topology_then_every_declared_queue_has_its_worker_command() -> None:
    result = invoke("topology", "--json")
    assert result.exit_code == 0
    document = json.loads(result.output)
    queues = {queue["name"]: queue for queue in document["queues"]}
    for base, (option, names) in worker_selections().items():
        command = f"celery -A routing_demo worker {option} {names} -n {base}@%h"
        consumed = next(n for n in worker_nodes() if n.name == base).consumed_queues()
        for name in consumed:
            assert command in queues[name]["consumed_by"]
    for queue in TASK_QUEUES:
        assert queues[queue.name]["consumed_by"], queue.name
    assert {(r["pattern"], r["queue"]) for r in document["routes"]} == {
        (name, route["queue"]) for name, route in TASK_ROUTES.items()
    }
    holding = [q["name"] for q in document["queues"] if q["unconsumed_on_purpose"]]
    assert holding == ["dead_letter", "unroutable"]


def test_when_showing_topology_as_text_then_it_names_exchanges_queues_and_routes() -> None:
    output = invoke("topology").output
    for word in ("routing_demo", "topic", "x-dead-letter-exchange", "-Q add -n add@%h"):
        assert word in output


@pytest.mark.parametrize(
    ("task", "exchange"),
    [
        (add.name, "routing_demo"),
        (sub.name, "routing_demo"),
        ("mul", "routing_demo"),
    ],
)
def test_when_explaining_then_the_queue_is_the_routers_own_answer(task: str, exchange: str) -> None:
    name = task if "." in task else f"routing_demo.tasks.{task}"
    expected = celery_app.amqp.router.route({}, name, (1, 2), {})["queue"].name
    code, document = explain_json(task, "1", "2")
    assert code == 0
    assert document["queue"] == expected
    assert document["delivered_to"] == [expected]
    # Through the task exchange, never the default one that bypasses bindings.
    assert document["exchange"] == exchange
    assert document["routing_key"] == expected


def test_when_a_task_has_no_route_then_explain_names_the_default_queue() -> None:
    code, document = explain_json("mul", "2", "3")
    assert code == 0
    assert document["queue"] == default_queue.name
    assert "no task_routes rule" in document["rule"]
    assert document["consumed_by"] == {"default": ["default"]}


def test_when_a_route_matches_then_explain_names_the_rule() -> None:
    code, document = explain_json("add", "2", "3")
    assert code == 0
    assert "task_routes['routing_demo.tasks.add']" in document["rule"]


def test_when_a_queue_override_is_given_then_it_wins_over_the_route() -> None:
    code, document = explain_json("add", "2", "3", "--queue", "sub")
    assert code == 0
    assert document["queue"] == "sub"
    assert document["consumed_by"] == {"sub": ["sub"]}


def test_when_an_override_names_an_undeclared_queue_then_explain_fails() -> None:
    code, document = explain_json("add", "2", "3", "--queue", "nope")
    assert code == EXIT_FAILED
    assert "missing from task_queues" in document["error"]


def test_when_a_routing_key_matches_no_binding_then_it_goes_to_the_alternate_exchange() -> None:
    code, document = explain_json(
        "add", "2", "3", "--exchange", "routing_demo", "--routing-key", "typo"
    )
    assert code == EXIT_FAILED
    assert document["delivered_to"] == ["unroutable"]
    assert "alternate exchange" in document["note"]


def test_when_the_worker_selection_excludes_the_queue_then_explain_says_no() -> None:
    code, document = explain_json("add", "2", "3", "-X", "add,sub")
    assert code == EXIT_FAILED
    assert document["selection"]["queues"] == ["default"]
    assert document["selection"]["consumes"] is False


def test_when_x_names_an_unknown_queue_then_explain_warns() -> None:
    code, document = explain_json("mul", "2", "3", "-X", "add,sub,typo")
    assert code == 0
    assert document["selection"]["consumes"] is True
    assert any("typo" in warning for warning in document["selection"]["warnings"])


def test_when_x_excludes_everything_then_explain_warns_the_worker_consumes_nothing() -> None:
    code, document = explain_json("mul", "2", "3", "-X", "add,sub,default")
    assert code == EXIT_FAILED
    assert document["selection"]["queues"] == []
    assert any("no queue at all" in w for w in document["selection"]["warnings"])


def test_when_q_names_an_unknown_queue_then_explain_says_the_worker_refuses_to_start() -> None:
    code, document = explain_json("add", "2", "3", "-Q", "typo")
    assert code == EXIT_FAILED
    assert "refuses to start" in document["selection"]["error"]


def test_when_the_task_is_unknown_then_explain_is_a_usage_error() -> None:
    result = invoke("explain", "nosuchtask")
    assert result.exit_code == 2
    assert "no task 'nosuchtask'" in result.output


def test_when_definitions_are_regenerated_then_the_committed_file_is_current() -> None:
    committed = (ROOT / DEFAULT_DEFINITIONS_PATH).read_text()
    assert committed == render_definitions(read_topology(celery_app))
    result = invoke("definitions", "-o", str(ROOT / DEFAULT_DEFINITIONS_PATH), "--check")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("command", ["definitions", "permissions"])
def test_when_quorum_files_are_regenerated_then_the_committed_files_are_current(
    command: str,
) -> None:
    """The cluster's files: ``ROUTING_DEMO_QUEUE_TYPE`` is read once, when the
    topology is imported, so the command runs in a process of its own."""
    paths = DEFINITIONS_PATHS if command == "definitions" else PERMISSIONS_PATHS
    check = ["-o", str(paths["quorum"]), "--check"]
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "routing_demo", "routes", command, *check],
        cwd=ROOT,
        env={**os.environ, QUEUE_TYPE_ENV: "quorum"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        done.stdout + done.stderr + f"\nregenerate: {QUEUE_TYPE_ENV}=quorum celery -A routing_demo "
        f"routes {command} -o {paths['quorum']}"
    )
    queues = json.loads((ROOT / DEFINITIONS_PATHS["quorum"]).read_text())["queues"]
    assert {q["arguments"].get("x-queue-type") for q in queues} == {"quorum"}


def test_when_the_definitions_file_is_stale_then_check_fails(tmp_path: Path) -> None:
    stale = tmp_path / "definitions.json"
    stale.write_text("{}\n")
    result = invoke("definitions", "-o", str(stale), "--check")
    assert result.exit_code == EXIT_MISMATCH
    assert "out of date" in result.output


def test_when_definitions_are_generated_then_they_hold_every_queue_and_binding() -> None:
    document = json.loads(render_definitions(read_topology(celery_app)))
    assert {q["name"] for q in document["queues"]} == {
        *(q.name for q in TASK_QUEUES),
        "dead_letter",
        "unroutable",
    }
    assert {(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"]} >= {
        ("routing_demo", q.name, q.routing_key) for q in TASK_QUEUES
    }
    assert "users" not in document


def test_when_options_name_a_node_then_only_that_node_gets_them() -> None:
    names = [node.name for node in worker_nodes()]
    common, by_node = split_per_node(
        {"concurrency": ("2", "add=4"), "pool": ("sub=threads",)}, names, ""
    )
    assert common == ["--concurrency=2"]
    assert by_node == {"add": ["--concurrency=4"], "sub": ["--pool=threads"]}
    group = WorkerGroup(worker_nodes(), Path("run"), worker_options=common, node_options=by_node)
    argv = group.multi_argv("start")
    assert "--concurrency:add=4" in argv
    assert "--pool:sub=threads" in argv


def test_when_an_option_names_an_unknown_node_then_start_refuses() -> None:
    result = invoke("workers", "start", "--concurrency", "mul=2")
    assert result.exit_code == 2
    assert "no node 'mul'" in result.output


def test_when_the_backend_is_rpc_then_status_says_it_cannot_know() -> None:
    document, code = describe_state(celery_app, "0" * 32)
    assert celery_app.conf.result_backend.startswith("rpc")
    assert code == EXIT_UNKNOWN
    assert document["state"] is None
    assert "cannot know" in document["meaning"]


def http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} error", response=response)


class StubManagement:
    """The management API's answers for one vhost, as plain data: one node
    and classic queues unless a test says otherwise."""

    def __init__(self, definitions: dict[str, Any], consumers: int = 1) -> None:
        self._exchanges = [{**e, "arguments": e["arguments"]} for e in definitions["exchanges"]]
        self._queues = [
            {
                **q,
                "type": "classic",
                "consumers": consumers,
                "messages_ready": 0,
                "exclusive": False,
            }
            for q in definitions["queues"]
        ]
        for queue in self._queues:
            queue.setdefault("type", "classic")
        self._bindings = list(definitions["bindings"])
        self._nodes: list[dict[str, Any]] | Exception = [
            {"name": "rabbit@localhost", "running": True, "partitions": []}
        ]
        #: What ``/api/health/checks/alarms`` lists: none unless a test says so.
        self._alarms: list[dict[str, str]] = []

    def alarms(self) -> list[dict[str, str]]:
        return self._alarms

    def nodes(self) -> list[dict[str, Any]]:
        if isinstance(self._nodes, Exception):
            raise self._nodes
        return self._nodes

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        for queue in self._queues:
            if queue["name"] == name:
                return queue
        raise http_error(404)

    def exchanges(self, vhost: str) -> list[dict[str, Any]]:
        return self._exchanges

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        return self._queues

    def bindings(self, vhost: str) -> list[dict[str, Any]]:
        return self._bindings


@pytest.fixture
def broker_as_declared() -> StubManagement:
    """A broker wired as declared, a worker on each task queue, none on the holding queues."""
    stub = StubManagement(json.loads(render_definitions(read_topology(celery_app))))
    for queue in stub._queues:
        if queue["name"] in ("dead_letter", "unroutable"):
            queue["consumers"] = 0
    return stub


def kinds(stub: StubManagement, **options: Any) -> list[tuple[str, str]]:
    problems = verify_topology(read_topology(celery_app), stub, "v", **options)
    return [(p.kind, p.subject) for p in problems]


def test_when_the_broker_matches_then_verify_finds_nothing(
    broker_as_declared: StubManagement,
) -> None:
    assert kinds(broker_as_declared) == []


def test_when_a_binding_is_missing_then_verify_names_it(
    broker_as_declared: StubManagement,
) -> None:
    broker_as_declared._bindings = [
        b for b in broker_as_declared._bindings if b["destination"] != "add"
    ]
    assert kinds(broker_as_declared) == [("missing-binding", "routing_demo -> add")]


def test_when_a_binding_is_extra_then_verify_names_it(broker_as_declared: StubManagement) -> None:
    broker_as_declared._bindings.append(
        {
            "source": "routing_demo",
            "destination": "add",
            "destination_type": "queue",
            "routing_key": "sub",
        }
    )
    assert kinds(broker_as_declared) == [("extra-binding", "routing_demo -> add")]


def test_when_queue_arguments_differ_then_verify_names_the_argument(
    broker_as_declared: StubManagement,
) -> None:
    add = next(q for q in broker_as_declared._queues if q["name"] == "add")
    add["arguments"] = {**add["arguments"], "x-max-priority": 10}
    problems = verify_topology(read_topology(celery_app), broker_as_declared, "v")
    assert [(p.kind, p.subject) for p in problems] == [("argument-mismatch", "add")]
    assert "x-max-priority" in problems[0].detail


def test_when_nobody_consumes_a_task_queue_then_verify_says_which_worker_should(
    broker_as_declared: StubManagement,
) -> None:
    problems = verify_topology(
        read_topology(celery_app), broker_as_declared, "v", live_counts={"sub": (3, 0)}
    )
    assert [(p.kind, p.subject) for p in problems] == [("unconsumed-queue", "sub")]
    assert "-Q sub -n sub@%h" in problems[0].detail
    assert kinds(broker_as_declared, check_consumers=False) == []


def test_when_a_consumed_queue_has_no_route_then_verify_reports_it(
    broker_as_declared: StubManagement,
) -> None:
    broker_as_declared._queues.append(
        {
            "name": "legacy",
            "durable": True,
            "auto_delete": False,
            "exclusive": False,
            "arguments": {},
            "consumers": 2,
        }
    )
    # Celery's own per-process queues (pidbox, rpc replies) are auto-delete: not reported.
    broker_as_declared._queues.append(
        {
            "name": "add@host.celery.pidbox",
            "durable": False,
            "auto_delete": True,
            "exclusive": False,
            "arguments": {},
            "consumers": 1,
        }
    )
    assert kinds(broker_as_declared) == [("unrouted-consumed-queue", "legacy")]


def test_when_run_as_a_command_then_a_mismatch_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    broker_as_declared._bindings = []
    monkeypatch.setattr(
        "routing_demo.cli.topology_cmd.management_api", lambda app, url: broker_as_declared
    )
    result = invoke("verify", "--skip-consumers", "--json")
    assert result.exit_code == EXIT_MISMATCH
    document = json.loads(result.output)
    assert document["ok"] is False
    assert {p["kind"] for p in document["problems"]} == {"missing-binding"}


def test_when_a_node_has_a_memory_alarm_then_verify_reports_it_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    broker_as_declared._alarms = [{"node": "rabbit@localhost", "resource": "memory"}]
    monkeypatch.setattr(
        "routing_demo.cli.topology_cmd.management_api", lambda app, url: broker_as_declared
    )
    result = invoke("verify", "--skip-consumers")
    assert result.exit_code == EXIT_MISMATCH
    assert "matches the declared topology" in result.output
    assert (
        "error: resource-alarm: rabbit@localhost: memory alarm on rabbit@localhost: "
        "RabbitMQ blocks every publishing connection"
    ) in result.output


def test_when_a_value_is_json_then_arguments_are_typed() -> None:
    from routing_demo.cli._common import parse_value

    assert parse_value("2") == 2
    assert parse_value("2.5") == 2.5
    assert parse_value("word") == "word"
    assert parse_value('"2"') == "2"
    with pytest.raises(click.BadParameter):
        from routing_demo.cli._common import resolve_task

        resolve_task(celery_app, "nosuch")


#: The nodes of the stubbed cluster.
CLUSTER_NODES = ("rabbit@rabbitmq-1", "rabbit@rabbitmq-2", "rabbit@rabbitmq-3")


def on_a_cluster(stub: StubManagement, *, down: tuple[str, ...] = ()) -> StubManagement:
    """``stub`` as three nodes, ``down`` not running, with every declared
    queue a quorum queue replicated on all three (its leader the first
    online member, as RabbitMQ elects one)."""
    stub._nodes = [
        {"name": name, "running": name not in down, "partitions": []} for name in CLUSTER_NODES
    ]
    online = [name for name in CLUSTER_NODES if name not in down]
    for queue in stub._queues:
        queue.update(
            type="quorum",
            members=list(CLUSTER_NODES),
            online=online,
            leader=online[0] if online else CLUSTER_NODES[0],
        )
    return stub


def verify_with(monkeypatch: pytest.MonkeyPatch, stub: StubManagement, *options: str) -> Result:
    monkeypatch.setattr("routing_demo.cli.topology_cmd.management_api", lambda app, url: stub)
    return invoke("verify", "--skip-consumers", *options)


def test_when_one_node_holds_classic_queues_then_verify_says_nothing_of_a_cluster(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    result = verify_with(monkeypatch, broker_as_declared)
    assert result.exit_code == 0, result.output
    assert result.output == (
        "vhost '/': matches the declared topology (exchanges, queues, arguments, bindings)\n"
    )
    document = json.loads(verify_with(monkeypatch, broker_as_declared, "--json").output)
    assert set(document) == {"vhost", "ok", "problems"}


def test_when_every_node_runs_then_verify_lists_them_and_each_quorum_queue_whole(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    on_a_cluster(broker_as_declared)
    result = verify_with(monkeypatch, broker_as_declared)
    assert result.exit_code == 0, result.output
    assert "cluster: 3 node(s), 3 running" in result.output
    assert "warning" not in result.output
    for name in CLUSTER_NODES:
        assert f"  {name}  running" in result.output
    assert "add          leader rabbit@rabbitmq-1  3/3 members online (2 needed)" in result.output

    document = json.loads(verify_with(monkeypatch, broker_as_declared, "--json").output)
    assert document["ok"] is True
    assert document["warnings"] == []
    assert [n["running"] for n in document["cluster"]["nodes"]] == [True, True, True]
    queues = {q["name"]: q for q in document["cluster"]["quorum_queues"]}
    assert set(queues) == {q["name"] for q in broker_as_declared._queues}
    assert queues["add"]["leader"] == "rabbit@rabbitmq-1"
    assert queues["add"]["online"] == list(CLUSTER_NODES)


def test_when_one_node_is_down_then_verify_warns_and_passes(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    on_a_cluster(broker_as_declared, down=("rabbit@rabbitmq-1",))
    result = verify_with(monkeypatch, broker_as_declared)
    assert result.exit_code == 0, result.output
    assert "  rabbit@rabbitmq-1  DOWN" in result.output
    assert "warning: node rabbit@rabbitmq-1 is down" in result.output
    assert (
        "warning: quorum queue(s) default, add, sub, dead_letter, unroutable: member(s) "
        "rabbit@rabbitmq-1 offline, quorum kept (2/3 online, 2 needed)" in result.output
    )
    assert "leader rabbit@rabbitmq-2  2/3 members online (2 needed): quorum kept" in result.output

    document = json.loads(verify_with(monkeypatch, broker_as_declared, "--json").output)
    assert document["ok"] is True
    assert document["problems"] == []
    add = next(q for q in document["cluster"]["quorum_queues"] if q["name"] == "add")
    assert add["offline"] == ["rabbit@rabbitmq-1"]
    assert add["below_quorum"] is False


def test_when_two_nodes_are_down_then_verify_names_every_queue_below_quorum(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    on_a_cluster(broker_as_declared, down=("rabbit@rabbitmq-1", "rabbit@rabbitmq-2"))
    result = verify_with(monkeypatch, broker_as_declared)
    assert result.exit_code == EXIT_MISMATCH, result.output
    assert "1/3 members online (2 needed): BELOW QUORUM" in result.output
    assert (
        "error: below-quorum: add: 1 of 3 members online (rabbit@rabbitmq-3), 2 needed; "
        "offline: rabbit@rabbitmq-1, rabbit@rabbitmq-2" in result.output
    )
    # The broker names the last leader: a queue below quorum has none serving.
    assert "leader rabbit@rabbitmq-1" not in result.output

    document = json.loads(verify_with(monkeypatch, broker_as_declared, "--json").output)
    assert document["ok"] is False
    below = {p["subject"] for p in document["problems"] if p["kind"] == "below-quorum"}
    assert below == {q["name"] for q in broker_as_declared._queues}


def test_when_the_user_may_not_list_nodes_then_verify_still_checks_the_quorum_queues(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    on_a_cluster(broker_as_declared, down=("rabbit@rabbitmq-1", "rabbit@rabbitmq-2"))
    broker_as_declared._nodes = http_error(401)
    result = verify_with(monkeypatch, broker_as_declared)
    assert result.exit_code == EXIT_MISMATCH, result.output
    assert "cluster: nodes unknown" in result.output
    assert "monitoring tag" in result.output
    assert "error: below-quorum: add" in result.output


def test_when_the_user_may_not_list_nodes_of_one_classic_node_then_nothing_changes(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement
) -> None:
    broker_as_declared._nodes = http_error(403)
    result = verify_with(monkeypatch, broker_as_declared)
    assert result.exit_code == 0, result.output
    assert "cluster" not in result.output


def test_when_workers_status_runs_on_a_cluster_then_it_shows_queues_below_quorum(
    monkeypatch: pytest.MonkeyPatch, broker_as_declared: StubManagement, tmp_path: Path
) -> None:
    """No worker runs here (exit 1 for that alone); the cluster part is the
    broker's answer."""

    class NoReplies:
        def active_queues(self) -> dict[str, Any]:
            return {}

    monkeypatch.setattr(celery_app.control, "inspect", lambda **options: NoReplies())
    monkeypatch.setattr(
        "routing_demo.cli.workers_cmd.management_api", lambda app, url: broker_as_declared
    )
    on_a_cluster(broker_as_declared, down=("rabbit@rabbitmq-2", "rabbit@rabbitmq-3"))
    result = invoke("workers", "status", "--run-dir", str(tmp_path))
    assert result.exit_code == EXIT_FAILED
    assert "cluster: 3 node(s), 1 running" in result.output
    assert "error: quorum queue add is below quorum" in result.output
    assert "warning: node rabbit@rabbitmq-2 is down" in result.output

    document = json.loads(invoke("workers", "status", "--run-dir", str(tmp_path), "--json").output)
    assert document["healthy"] is False
    assert {q["name"] for q in document["cluster"]["quorum_queues"] if q["below_quorum"]} == {
        q["name"] for q in broker_as_declared._queues
    }

    on_a_cluster(broker_as_declared)
    document = json.loads(invoke("workers", "status", "--run-dir", str(tmp_path), "--json").output)
    assert document["warnings"] == []
    assert not any(q["below_quorum"] for q in document["cluster"]["quorum_queues"])


@pytest.mark.parametrize(
    ("flags", "events"),
    [((), False), (("-E",), True), (("--events",), True), (("--no-events",), False)],
)
def test_when_workers_start_then_task_events_are_off_unless_asked_for(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, flags: tuple[str, ...], events: bool
) -> None:
    started: list[list[str]] = []
    monkeypatch.setattr(WorkerGroup, "running", lambda self: {})
    monkeypatch.setattr(WorkerGroup, "start", lambda self: started.append(self.multi_argv("start")))
    result = invoke("workers", "start", "--no-wait", "--run-dir", str(tmp_path), *flags)
    assert result.exit_code == 0, result.output
    (argv,) = started
    assert ("--events" in argv) is events
    assert f"--statedb={tmp_path}/%n.state" in argv


class StubControl:
    """``app.control`` answering ``query_task`` and ``revoke`` from data."""

    def __init__(self, held: dict[str, Any], acknowledged: list[str]) -> None:
        self.held = held
        self.acknowledged = acknowledged
        self.revoked: list[tuple[list[str], dict[str, Any]]] = []

    def inspect(self, **_: Any) -> Any:
        held = self.held

        class Inspect:
            def query_task(self, *ids: str) -> dict[str, Any]:
                return held

        return Inspect()

    def revoke(self, ids: list[str], **options: Any) -> list[dict[str, Any]]:
        self.revoked.append((ids, options))
        return [{worker: {"ok": "flagged"}} for worker in self.acknowledged]


def test_when_revoking_with_rpc_results_then_it_says_the_backend_cannot_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    control = StubControl({}, ["add@host"])
    monkeypatch.setattr(celery_app, "control", control)
    result = invoke("revoke", "a" * 32, "--terminate", "--signal", "kill")
    assert result.exit_code == EXIT_UNKNOWN, result.output
    assert control.revoked == [
        (["a" * 32], {"terminate": True, "signal": "SIGKILL", "reply": True, "timeout": 1.0})
    ]
    assert "revoke acknowledged by: add@host" in result.output
    assert "not held by any worker" in result.output
    assert "cannot tell whether this id is queued, finished or unknown" in result.output


def test_when_a_worker_holds_the_revoked_task_then_revoke_says_where(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task_id = "b" * 32
    info = {"name": add.name, "delivery_info": {"routing_key": "add"}}
    control = StubControl({"add@host": {task_id: ["scheduled", info]}}, ["add@host", "sub@host"])
    monkeypatch.setattr(celery_app, "control", control)
    result = invoke("revoke", task_id, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["acknowledged_by"] == ["add@host", "sub@host"]
    (task,) = document["tasks"]
    assert task["held_by"] == [{"worker": "add@host", "as": "scheduled"}]
    assert task["name"] == add.name
    assert task["known"] is True


def test_when_no_worker_acknowledges_a_revoke_then_it_exits_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(celery_app, "control", StubControl({}, []))
    result = invoke("revoke", "c" * 32)
    assert result.exit_code == EXIT_FAILED
    assert "acknowledged by no worker" in result.output
    assert "No worker heard the revoke" in result.output


def test_when_a_signal_is_misspelt_then_revoke_refuses() -> None:
    result = invoke("revoke", "d" * 32, "--terminate", "--signal", "TERMINATE")
    assert result.exit_code == 2
    assert "no such signal" in result.output


def test_when_a_task_finishes_between_the_reads_then_revoke_says_it_finished() -> None:
    raced = Revoked("e" * 32, state_before="RETRY")
    raced.state = "SUCCESS"
    meaning, known = explain_revoke(raced, object(), acknowledged=True)
    assert known
    assert meaning == "it finished (SUCCESS) before the revoke reached it: its record stays"
    waiting = Revoked("f" * 32, state_before="RETRY")
    waiting.state = "REVOKED"
    assert (
        explain_revoke(waiting, object(), acknowledged=True)[0]
        == "it was waiting to be retried: revoked"
    )
