"""The experiments without a broker: their settings as Celery's own router
reads them, the command line, and the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from celery import Celery
from click.testing import CliRunner
from kombu.common import Broadcast

from routing_demo.experiments import lab
from routing_demo.experiments.catalogue import EXPERIMENTS
from routing_demo.experiments.cli import experiment
from routing_demo.experiments.lab import Outcome, QueueCounters, wait_until
from routing_demo.experiments.quorum import _delay_queues
from routing_demo.experiments.report import render_markdown, render_text, write_report


def app_for(config_module: str) -> Celery:
    app = Celery("experiment-under-test", set_as_current=False)
    app.config_from_object(config_module)
    return app


def route(app: Celery, task: str, **options: object) -> dict:
    return app.amqp.router.route(dict(options), task)


@pytest.mark.parametrize("experiment", EXPERIMENTS.values(), ids=list(EXPERIMENTS))
def test_when_experiment_settings_load_then_every_route_names_a_declared_queue(
    experiment,
) -> None:
    app = app_for(experiment.config_module)
    for task, target in app.conf.task_routes.items():
        options = route(app, task)
        if "queue" in target:
            assert options["queue"].name in {q.name for q in app.conf.task_queues}
        else:
            assert options["exchange"] and options["routing_key"], task


def test_when_direct_then_its_exchange_is_direct_whatever_the_shipped_one() -> None:
    app = app_for("routing_demo.conf.experiments.direct")
    assert {q.exchange.type for q in app.conf.task_queues} == {"direct"}
    assert route(app, lab.ADD)["queue"].name == "add"


def test_when_topic_then_add_and_sub_are_published_by_routing_key() -> None:
    app = app_for("routing_demo.conf.experiments.topic")
    add = route(app, lab.ADD)
    assert (add["exchange"], add["routing_key"]) == ("routing_demo.arith", "arith.add")
    assert route(app, lab.SUB)["routing_key"] == "arith.sub"
    assert route(app, lab.ADD, routing_key="calc.add")["routing_key"] == "calc.add"
    bindings = {q.name: q.routing_key for q in app.conf.task_queues}
    assert bindings["arith_all"] == "arith.#" and bindings["arith_add"] == "*.add"


def test_when_fanout_then_clear_cache_goes_to_the_broadcast_queue() -> None:
    app = app_for("routing_demo.conf.experiments.fanout")
    queue = route(app, lab.CLEAR_CACHE)["queue"]
    assert isinstance(queue, Broadcast)
    assert (queue.exchange.name, queue.exchange.type) == ("broadcast_tasks", "fanout")
    assert queue.name.startswith("bcast.")


def test_when_priority_then_queue_has_max_priority_and_confirms() -> None:
    app = app_for("routing_demo.conf.experiments.priority")
    queue = route(app, lab.RECORD)["queue"]
    assert queue.name == "priority" and queue.queue_arguments["x-max-priority"] == 10
    assert route(app, lab.HOLD)["queue"].name == "priority"
    assert app.conf.broker_transport_options == {"confirm_publish": True}


def test_when_quorum_then_queues_are_quorum_on_a_topic_exchange_with_confirms() -> None:
    app = app_for("routing_demo.conf.experiments.quorum")
    for task, name in ((lab.ADD, "add"), (lab.SUB, "sub"), (lab.MUL, "default")):
        queue = route(app, task)["queue"]
        assert queue.name == name
        assert queue.queue_arguments["x-queue-type"] == "quorum"
        assert queue.exchange.type == "topic"
    assert app.conf.broker_transport_options == {"confirm_publish": True}


def test_when_delay_is_3s_then_kombu_routes_through_levels_1_and_0() -> None:
    assert _delay_queues(3) == ["celery_delayed_1", "celery_delayed_0"]
    assert _delay_queues(4) == ["celery_delayed_2"]


def test_when_experiment_tasks_registered_then_names_match_the_drivers() -> None:
    """In a separate interpreter: registering them here would add tasks to the
    project's app for every other test of the session."""
    code = (
        "import routing_demo.experiments.tasks; from routing_demo import celery_app; "
        "print('\\n'.join(sorted(celery_app.tasks)))"
    )
    names = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert {lab.CLEAR_CACHE, lab.HOLD, lab.RECORD} <= set(names)


def test_when_never_done_then_wait_until_names_what_and_last_value() -> None:
    with pytest.raises(TimeoutError, match=r"answer \(after .*last seen: 41"):
        wait_until(lambda: 41, done=lambda value: value == 42, timeout=0, message="answer")


def test_when_list_then_every_experiment_with_its_settings_module() -> None:
    result = CliRunner().invoke(experiment, ["list", "--json"])
    assert result.exit_code == 0
    listed = json.loads(result.output)
    assert [item["name"] for item in listed] == [
        "direct",
        "topic",
        "fanout",
        "priority",
        "quorum",
        "deadletter",
        "rerouting",
    ]
    assert all(
        item["config_module"].startswith("routing_demo.conf.experiments.") for item in listed
    )


def test_when_help_then_examples_are_shown() -> None:
    for argv in ([], ["run"], ["all"]):
        result = CliRunner().invoke(experiment, [*argv, "--help"])
        assert result.exit_code == 0 and "Examples:" in result.output


def test_when_unknown_experiment_then_usage_error() -> None:
    result = CliRunner().invoke(experiment, ["run", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def sample_outcome(passed: bool = True) -> Outcome:
    outcome = Outcome(
        "topic", "topic exchange", "routing_demo.conf.experiments.topic", "vh", sent=3
    )
    outcome.workers = {
        "all": {"hostname": "all@h", "queues": ["arith_all"], "ran": {"add": 2, "sub": 1}},
        "addonly": {"hostname": "addonly@h", "queues": ["arith_add"], "ran": {"add": 2}},
    }
    outcome.queues = {"arith_all": QueueCounters(0, 1, 3, 3, 3)}
    outcome.findings = {"matches": {"arith.add": ["arith.#", "*.add"], "calc.sub": []}}
    outcome.check("the add-only queue's worker ran no sub", passed, "{'sub': 1}")
    return outcome


def test_when_rendered_then_tallies_counters_and_failed_checks_show() -> None:
    text = render_text(sample_outcome(passed=False))
    assert "addonly  arith_add    2    0" in text
    assert "arith_all      0          1          3" in text
    assert "FAIL  the add-only queue's worker ran no sub" in text
    assert "calc.sub: (none)" in text
    markdown = render_markdown([sample_outcome()])
    assert "| [topic](#topic) | topic exchange | 3 | all: add 2, sub 1; addonly: add 2 | 1/1 |" in (
        markdown
    )
    assert "| addonly | arith_add | 2 | 0 |" in markdown


def test_when_report_written_then_markdown_and_json_agree(tmp_path: Path) -> None:
    written = write_report([sample_outcome()], tmp_path)
    data = json.loads(written["json"].read_text())
    assert data[0]["workers"]["addonly"]["ran"] == {"add": 2}
    assert data[0]["passed"] is True
    assert "## topic" in written["markdown"].read_text()
