"""The ``routes`` tools for an app that is not routing_demo (``tests.other_app``),
as a user runs them: ``celery -A tests.other_app routes …`` subprocesses
against the real broker in a throw-away vhost, and a real ``celery worker -Q
emails`` of that app for the tools to find when the app declares no worker
selection."""

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
from celery.utils.nodenames import gethostname, nodename

from routing_demo.cli._common import EXIT_FAILED, EXIT_MISMATCH
from routing_demo.polling import wait_until
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.workers import pid_alive
from tests.other_app import make_app, parked_queue

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class OtherCli:
    """Runs ``celery -A <app> …`` for the other app against one vhost."""

    broker_url: str
    vhost: str

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "CELERY_BROKER_URL": self.broker_url, "PYTHONPATH": path}

    def __call__(
        self, *args: str, app: str = "tests.other_app", timeout: float = 90
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", app, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str, app: str = "tests.other_app") -> tuple[int, Any]:
        done = self("routes", *args, "--json", app=app)
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)


def declare_other_app(broker_url: str) -> None:
    """Declare what the other app declares: its task queues (with their
    exchange and bindings) and its holding queue, through kombu."""
    client = make_app(broker_url=broker_url)
    with client.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in [*client.amqp.queues.values(), parked_queue]:
            queue(channel).declare()


@pytest.fixture
def declared(vhost_factory: Callable[[str], str]) -> OtherCli:
    """A vhost holding the other app's queues, and no worker."""
    broker_url = vhost_factory("any-app")
    declare_other_app(broker_url)
    return OtherCli(broker_url, broker_url.rsplit("/", 1)[1])


def problems(document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["kind"], p["subject"]) for p in document["problems"]]


def test_when_the_other_apps_queues_are_declared_then_verify_passes_on_its_wiring(
    declared: OtherCli,
) -> None:
    done = declared("routes", "verify", "--skip-consumers")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "matches the declared topology" in done.stdout
    # No worker, none declared: both task queues lack a consumer, the
    # holding queue is left alone.
    code, document = declared.json("verify")
    assert code == EXIT_MISMATCH
    assert problems(document) == [("unconsumed-queue", "emails"), ("unconsumed-queue", "reports")]
    assert document["workers"]["source"] == "none"
    assert document["workers"]["description"] == "no selection declared and no worker answered"


def test_when_a_binding_of_the_other_app_is_removed_then_verify_names_it(
    declared: OtherCli, management: ManagementAPI
) -> None:
    management.unbind_queue(declared.vhost, "jobs", "reports", "reports")
    code, document = declared.json("verify", "--skip-consumers")
    assert code == EXIT_MISMATCH
    assert problems(document) == [("missing-binding", "jobs -> reports")]


@dataclass
class LiveWorker:
    cli: OtherCli
    hostname: str
    log: Path


@pytest.fixture(scope="module")
def emails_worker(
    vhost_factory: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveWorker]:
    """One real ``celery -A tests.other_app worker -Q emails`` on the other
    app's declared queues; nothing consumes ``reports``."""
    broker_url = vhost_factory("any-app-live")
    declare_other_app(broker_url)
    cli = OtherCli(broker_url, broker_url.rsplit("/", 1)[1])
    name = f"mail-{uuid.uuid4().hex[:6]}"
    hostname = nodename(name, gethostname())
    log = tmp_path_factory.mktemp("any-app-worker") / "worker.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "tests.other_app", "worker"),
                *("-Q", "emails", "-n", f"{name}@%h", "--pool", "solo", "--loglevel", "INFO"),
                *("--without-mingle", "--without-gossip"),
            ],
            env=cli.env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = make_app(broker_url=broker_url)
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or client.control.ping(destination=[hostname], timeout=1.0)
            ),
            timeout=60,
            message=f"the worker did not answer a ping (log: {log})",
        )
        assert process.poll() is None, log.read_text()
        yield LiveWorker(cli, hostname, log)
    finally:
        if pid_alive(process.pid):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_when_no_selection_is_declared_then_topology_names_the_live_worker(
    emails_worker: LiveWorker,
) -> None:
    code, document = emails_worker.cli.json("topology")
    assert code == 0, document
    assert document["workers"]["source"] == "live"
    queues = {q["name"]: q for q in document["queues"]}
    assert queues["emails"]["consumed_by"] == [f"{emails_worker.hostname} (live worker)"]
    assert queues["reports"]["consumed_by"] == []
    assert queues["parked"]["unconsumed_on_purpose"] is True
    done = emails_worker.cli("routes", "topology")
    assert "workers: from the 1 live worker (inspect active_queues)" in done.stdout


def test_when_a_task_goes_to_a_queue_the_live_worker_consumes_then_explain_names_it(
    emails_worker: LiveWorker,
) -> None:
    code, document = emails_worker.cli.json("explain", "send_email", "x@example.org")
    assert code == 0, document
    assert document["consumed_by"] == {"emails": [emails_worker.hostname]}
    code, document = emails_worker.cli.json("explain", "report", "3")
    assert code == EXIT_FAILED
    assert document["delivered_to"] == ["reports"]
    assert document["error"] == "it lands in reports, which no live worker consumes"


def test_when_one_live_worker_runs_then_verify_misses_only_the_other_queues_consumer(
    emails_worker: LiveWorker,
) -> None:
    code, document = emails_worker.cli.json("verify")
    assert code == EXIT_MISMATCH
    assert problems(document) == [("unconsumed-queue", "reports")]
    assert document["workers"]["source"] == "live"


def test_when_the_app_declares_selections_then_verify_names_the_missing_workers_command(
    emails_worker: LiveWorker,
) -> None:
    code, document = emails_worker.cli.json("verify", app="tests.other_app:planned_app")
    assert code == EXIT_MISMATCH
    assert problems(document) == [("unconsumed-queue", "reports")]
    assert document["problems"][0]["detail"].endswith(
        "expected: celery -A tests.other_app:planned_app worker -X emails -n reporter@%h"
    )
    assert document["workers"]["source"] == "declared"


def test_when_no_selection_is_declared_then_workers_status_shows_the_live_worker(
    emails_worker: LiveWorker,
) -> None:
    code, document = emails_worker.cli.json("workers", "status")
    assert code == 0, document
    (node,) = document["nodes"]
    assert node["node"] == emails_worker.hostname
    assert [(q["name"], q["consumers"]) for q in node["queues"]] == [("emails", 1)]
    assert document["workers"]["source"] == "live"
