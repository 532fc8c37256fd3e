"""compose.yaml's worker commands and healthchecks, run as local processes
against the local RabbitMQ (no container engine here): each stack's workers
(the single broker's, the cluster profile's) in a vhost of their own, loaded
first with the definitions that stack's brokers load at boot."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from celery import Celery

from routing_demo.cli.definitions import DEFINITIONS_PATHS
from routing_demo.polling import wait_until
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.topology import QUEUE_TYPE_ENV, worker_selections

from ..unit.test_compose import STACKS, base_name, interpolate, workers

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

#: Where compose mounts the workers' state volume (``--statedb`` files).
STATE_MOUNT = "/home/routing_demo/state"


@pytest.fixture(scope="module", params=list(STACKS), ids=lambda p: p or "default")
def compose_workers(
    request: pytest.FixtureRequest,
    vhost_factory: Callable[[str], str],
    redis_url: str,
    management: ManagementAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[dict[str, str], dict[str, list[str]]]]:
    """Every worker service of one stack, its command started as it is
    written (plus the start-up options that do not change routing), with the
    stack's queue type; the vhost holds what the stack's brokers load. The
    state volume's mount point becomes a directory of the test's."""
    profile = request.param
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    variables = {"WORKER_CONCURRENCY": "1", "RABBITMQ_PASSWORD": "unused"}
    volume = str(tmp_path_factory.mktemp("worker-state"))
    commands = {
        name: [interpolate(arg, variables).replace(STATE_MOUNT, volume) for arg in command]
        for name, command in workers(compose, profile).items()
    }
    assert all(any(volume in arg for arg in command) for command in commands.values())
    environment = compose["services"][next(iter(commands))]["environment"]
    queue_type = environment.get(QUEUE_TYPE_ENV, "classic")
    assert queue_type == STACKS[profile]["queue_type"]
    broker_url = vhost_factory(f"compose-{queue_type}")
    management.import_definitions(
        broker_url.rsplit("/", 1)[1],
        json.loads((ROOT / DEFINITIONS_PATHS[queue_type]).read_text()),
    )
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "HOSTNAME": socket.gethostname(),
        QUEUE_TYPE_ENV: queue_type,
    }
    processes = []
    try:
        for command in commands.values():
            assert command[0] == "celery"
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", *command, "--without-mingle", "--without-gossip"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield (
            env,
            {
                name: [interpolate(arg, variables) for arg in service["healthcheck"]["test"]]
                for name, service in compose["services"].items()
                if name in commands
            },
        )
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_serving(env: dict[str, str], timeout: float = 60) -> None:
    """Until every node reports exactly its own queue (``inspect active_queues``)."""
    host = env["HOSTNAME"]
    expected = {f"{name}@{host}": [name] for name in worker_selections()}
    app = Celery(broker=env["CELERY_BROKER_URL"], set_as_current=False)

    def serving() -> dict[str, list[str]]:
        replies = app.control.inspect(destination=list(expected), timeout=1).active_queues()
        return {node: sorted(q["name"] for q in qs) for node, qs in (replies or {}).items()}

    try:
        wait_until(
            serving,
            done=lambda seen: seen == expected,
            timeout=timeout,
            message=f"workers do not serve {expected}",
            interval=0,
        )
    finally:
        app.close()


def test_when_compose_worker_commands_run_then_each_runs_its_queues_tasks(
    compose_workers: tuple[dict[str, str], dict[str, list[str]]],
) -> None:
    env, _ = compose_workers
    host = env["HOSTNAME"]
    for task in ("add", "sub", "mul"):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "routing_demo",
                "routes",
                "send",
                task,
                "1",
                "2",
                "--json",
                "--timeout",
                "30",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        sent = json.loads(done.stdout)
        queue = sent["queue"]
        assert sent["worker"] == f"{queue}@{host}"


def test_when_compose_healthchecks_run_then_each_worker_answers(
    compose_workers: tuple[dict[str, str], dict[str, list[str]]],
) -> None:
    env, healthchecks = compose_workers
    for service, test in healthchecks.items():
        name = base_name(service)
        kind, command = test
        assert kind == "CMD-SHELL"
        done = subprocess.run(
            ["sh", "-c", command.replace("celery ", f"{sys.executable} -m celery ", 1)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        assert f"{name}@{env['HOSTNAME']}: OK" in done.stdout
