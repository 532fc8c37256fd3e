"""The ``routes`` commands as a user runs them: subprocesses against the real
broker, in throw-away vhosts, with real workers started by ``celery multi``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Queue

from routing_demo.cli._common import EXIT_FAILED, EXIT_MISMATCH, EXIT_UNKNOWN
from routing_demo.cli.definitions import render_definitions, topology_definitions
from routing_demo.cli.model import read_topology
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.tasks import add
from routing_demo.testing.process import wait_until
from routing_demo.workers import pid_alive

pytestmark = pytest.mark.integration

#: Beat's interval in these tests: short, so its first add shows up quickly.
BEAT_INTERVAL = "1"


@dataclass
class Cli:
    """Runs ``celery -A routing_demo …`` against one vhost and result backend."""

    env: dict[str, str]
    run_dir: Path
    suffix: str

    def __call__(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "routing_demo", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def routes(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return self("routes", *args, timeout=timeout)

    def json(self, *args: str) -> tuple[int, Any]:
        done = self.routes(*args, "--json")
        return done.returncode, json.loads(done.stdout)


def make_cli(broker_url: str, backend_url: str, run_dir: Path) -> Cli:
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": backend_url,
        "ROUTING_DEMO_RUN_DIR": str(run_dir),
        "ROUTING_DEMO_BEAT_INTERVAL": BEAT_INTERVAL,
    }
    return Cli(env, run_dir, f"-{uuid.uuid4().hex[:6]}")


def pidfile_pids(run_dir: Path) -> dict[str, int]:
    return {path.stem: int(path.read_text().strip()) for path in run_dir.glob("*.pid")}


@pytest.fixture(scope="module")
def running(
    vhost_factory: Callable[[str], str], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cli]:
    """Workers per queue, beat in the default-queue node, Redis results."""
    cli = make_cli(vhost_factory("cli"), redis_url, tmp_path_factory.mktemp("cli-workers"))
    started = cli.routes(
        "workers",
        "start",
        "--suffix",
        cli.suffix,
        "--without-mingle",
        "--without-gossip",
        "--beat",
        "--concurrency",
        "add=2",
        "-E",
    )
    pids = pidfile_pids(cli.run_dir)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield cli
    finally:
        cli.routes("workers", "stop", "--suffix", cli.suffix)
        for pid in pids.values():  # only what this fixture started, by PID
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_when_workers_start_then_status_shows_each_node_and_its_queue(running: Cli) -> None:
    code, document = running.json("workers", "status", "--suffix", running.suffix)
    assert code == 0, document
    queues = {node["node"].split("@")[0]: node["queues"] for node in document["nodes"]}
    suffix = running.suffix
    assert {name: [q["name"] for q in qs] for name, qs in queues.items()} == {
        f"add{suffix}": ["add"],
        f"sub{suffix}": ["sub"],
        f"default{suffix}": ["default"],
    }
    assert all(q["consumers"] == 1 for qs in queues.values() for q in qs)


@pytest.mark.parametrize("task", ["add", "sub", "mul"])
def test_when_a_task_is_sent_then_it_runs_where_explain_said(running: Cli, task: str) -> None:
    code, explained = running.json("explain", task, "7", "3")
    assert code == 0, explained
    (queue,) = explained["delivered_to"]
    (node,) = explained["consumed_by"][queue]
    code, sent = running.json("send", task, "7", "3", "--timeout", "30")
    assert code == 0, sent
    assert sent["state"] == "SUCCESS"
    assert sent["queue"] == queue
    assert sent["worker"].split("@")[0] == f"{node}{running.suffix}"


def test_when_a_task_fails_then_send_exits_non_zero(running: Cli) -> None:
    code, sent = running.json("send", "add", "1", "word", "--timeout", "30")
    assert code == EXIT_FAILED
    assert sent["state"] == "FAILURE"
    assert "numbers only" in sent["result"]


def test_when_workers_run_then_verify_passes(running: Cli) -> None:
    done = running.routes("verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches the declared topology" in done.stdout


def test_when_beat_runs_then_its_add_reaches_the_add_worker(running: Cli) -> None:
    log = running.run_dir / f"add{running.suffix}.log"
    beat_log = running.run_dir / f"default{running.suffix}.log"
    wait_until(
        lambda: "Sending due task add-every-interval" in beat_log.read_text(),
        timeout=20,
        message="beat did not send its add",
    )
    wait_until(
        lambda: f"{add.name}[" in log.read_text() and "succeeded" in log.read_text(),
        timeout=20,
        message="the add worker did not run beat's task",
    )


def test_when_workers_stop_then_no_pidfile_process_survives(running: Cli) -> None:
    pids = pidfile_pids(running.run_dir)
    assert len(pids) == 3
    done = running.routes("workers", "stop", "--suffix", running.suffix)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [pid for pid in pids.values() if pid_alive(pid)] == []
    code, document = running.json("workers", "status", "--suffix", running.suffix)
    assert code == EXIT_FAILED
    assert not any(node["running"] for node in document["nodes"])


@pytest.fixture
def wired(
    vhost_factory: Callable[[str], str], management: ManagementAPI, redis_url: str, tmp_path: Path
) -> tuple[Cli, str]:
    """A vhost holding the generated definitions, and no worker."""
    broker_url = vhost_factory("verify")
    vhost = broker_url.rsplit("/", 1)[1]
    management.import_definitions(vhost, topology_definitions(read_topology_app(), vhost))
    return make_cli(broker_url, redis_url, tmp_path), vhost


def read_topology_app() -> Any:
    from routing_demo import celery_app

    return read_topology(celery_app)


def test_when_the_definitions_are_loaded_then_verify_passes_on_the_wiring(
    wired: tuple[Cli, str],
) -> None:
    cli, _ = wired
    done = cli.routes("verify", "--skip-consumers")
    assert done.returncode == 0, done.stdout + done.stderr
    # Without workers the task queues have no consumer: that is a mismatch too.
    code, document = cli.json("verify")
    assert code == EXIT_MISMATCH
    assert {p["subject"] for p in document["problems"] if p["kind"] == "unconsumed-queue"} == {
        "add",
        "sub",
        "default",
    }


def test_when_a_binding_is_removed_then_verify_fails_naming_it(
    wired: tuple[Cli, str], management: ManagementAPI
) -> None:
    cli, vhost = wired
    management.unbind_queue(vhost, "routing_demo", "add", "add")
    code, document = cli.json("verify", "--skip-consumers")
    assert code == EXIT_MISMATCH
    assert [(p["kind"], p["subject"]) for p in document["problems"]] == [
        ("missing-binding", "routing_demo -> add")
    ]


def test_when_a_queue_has_other_arguments_then_verify_names_the_argument(
    wired: tuple[Cli, str], management: ManagementAPI
) -> None:
    cli, vhost = wired
    management.delete_queue(vhost, "sub")
    management.declare_queue(
        vhost, "sub", arguments={"x-dead-letter-exchange": "routing_demo.dlx", "x-max-priority": 10}
    )
    management.bind_queue(vhost, "routing_demo", "sub", "sub")
    code, document = cli.json("verify", "--skip-consumers")
    assert code == EXIT_MISMATCH
    assert [(p["kind"], p["subject"]) for p in document["problems"]] == [
        ("argument-mismatch", "sub")
    ]
    assert "x-max-priority" in document["problems"][0]["detail"]


def test_when_a_consumed_queue_has_no_route_then_verify_reports_it(
    wired: tuple[Cli, str],
) -> None:
    cli, _ = wired
    stray = Queue("legacy", durable=True)
    with Connection(cli.env["CELERY_BROKER_URL"]) as connection:
        stray(connection.default_channel).declare()
        with Consumer(connection, [stray], callbacks=[]):
            code, document = cli.json("verify")
    assert code == EXIT_MISMATCH
    assert ("unrouted-consumed-queue", "legacy") in {
        (p["kind"], p["subject"]) for p in document["problems"]
    }


def test_when_a_task_is_sent_but_not_started_then_status_says_sent_not_unknown(
    wired: tuple[Cli, str],
) -> None:
    cli, _ = wired  # no worker: the task stays in its queue
    code, sent = cli.json("send", "add", "1", "2", "--timeout", "1")
    assert code == EXIT_UNKNOWN
    assert sent["timed_out"] is True
    code, status = cli.json("status", sent["id"])
    assert code == 0, status
    assert status["state"] == "SENT"
    assert status["name"] == add.name
    assert "not started" in status["meaning"]

    code, unknown = cli.json("status", str(uuid.uuid4()))
    assert code == EXIT_UNKNOWN
    assert unknown["state"] == "PENDING"
    assert unknown["expired"] is False
    assert unknown["meaning"].startswith("unknown: no send of this id is on record")

    # Redis expiring the result (result_expires) is the key's deletion.
    redis.Redis.from_url(cli.env["CELERY_RESULT_BACKEND"]).delete(f"celery-task-meta-{sent['id']}")
    code, expired = cli.json("status", sent["id"])
    assert code == EXIT_UNKNOWN
    assert (expired["state"], expired["expired"]) == ("PENDING", True)
    assert expired["date_sent"] == status["date_sent"]
    assert expired["meaning"].startswith("expired: sent at")


def test_when_results_go_through_rpc_then_status_says_another_process_cannot_know(
    wired: tuple[Cli, str],
) -> None:
    cli, _ = wired
    done = cli("--result-backend", "rpc://", "routes", "status", str(uuid.uuid4()))
    assert done.returncode == EXIT_UNKNOWN
    assert "cannot know" in done.stdout
    assert "PENDING" not in done.stdout


def test_when_the_definitions_file_is_loaded_then_it_matches_what_the_cli_generates(
    vhost_factory: Callable[[str], str], management: ManagementAPI
) -> None:
    """conf/rabbitmq/definitions.json, as compose's broker loads it."""
    vhost = vhost_factory("definitions").rsplit("/", 1)[1]
    committed = json.loads(
        (Path(__file__).resolve().parents[2] / "conf/rabbitmq/definitions.json").read_text()
    )
    assert json.dumps(committed, indent=2, sort_keys=True) + "\n" == render_definitions(
        read_topology_app()
    )
    management.import_definitions(vhost, committed)
    names = {queue["name"] for queue in management.queues(vhost)}
    assert names == {"add", "sub", "default", "dead_letter", "unroutable"}


@pytest.mark.parametrize(
    ("command", "exit_code", "says"),
    [
        (("send", "add", "2", "3", "--timeout", "10"), EXIT_FAILED, "ACCESS_REFUSED"),
        (("workers", "status"), EXIT_FAILED, "ACCESS_REFUSED"),
        (("verify",), EXIT_UNKNOWN, "401"),
    ],
    ids=["send", "workers-status", "verify"],
)
def test_when_the_broker_refuses_the_login_then_commands_say_so_without_a_traceback(
    vhost_factory: Callable[[str], str],
    redis_url: str,
    tmp_path: Path,
    command: tuple[str, ...],
    exit_code: int,
    says: str,
) -> None:
    url = vhost_factory("refused").replace("guest:guest@", "guest:not-the-password@", 1)
    assert "not-the-password" in url
    cli = make_cli(url, redis_url, tmp_path)
    done = cli.routes(*command)
    assert done.returncode == exit_code, done.stdout + done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert "not-the-password" not in done.stdout + done.stderr
