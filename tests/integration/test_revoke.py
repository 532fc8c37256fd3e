"""``routes revoke`` on real workers: an add worker (prefork, one process) in
a throw-away vhost with Redis results, and a revoke that outlives a SIGKILL
of the worker holding the task.

A revoked task is shown never to have run by what running it would have
left: the marker file ``write_marker`` writes, the worker's own log line
("Discarding revoked task"), and the broker's count of the queue's messages.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from celery import Celery, states
from celery.result import AsyncResult

from routing_demo.celery import client_app
from routing_demo.cli._common import EXIT_OK, EXIT_UNKNOWN
from routing_demo.polling import pid_alive, wait_until
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.sent_state import SENT, install
from routing_demo.tasks import add
from routing_demo.topology import QUEUES, add_queue
from routing_demo.workers import WorkerGroup, WorkerNode, worker_nodes
from tests.slow_tasks import SLEEP_THEN_ADD, WRITE_MARKER

from .conftest import TEST_WORKER_OPTIONS

pytestmark = pytest.mark.integration

#: The repository root, on the workers' ``PYTHONPATH`` for ``tests.slow_tasks``.
ROOT = Path(__file__).parents[2]
#: Seconds a revoked task is held back (its countdown) or keeps the worker
#: busy (a sleep ahead of it): well beyond one run of ``routes revoke``
#: (start-up, then a ``query_task`` and a ``revoke`` broadcast of 1 s each).
HOLD = 10.0
#: Seconds any single wait in these tests may take.
TIMEOUT = 60.0


@dataclass
class RevokeStack:
    """One add worker in a vhost of its own, a client app that records SENT,
    and the ``routes revoke`` command pointed at both."""

    app: Celery
    workers: WorkerGroup
    node: WorkerNode
    env: dict[str, str]
    vhost: str
    management: ManagementAPI
    markers: Path

    def revoke(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "celery", "-A", "routing_demo", "routes", "revoke", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def revoke_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.revoke(*args, "--json")
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)

    def send_marker(self, countdown: float | None = None) -> AsyncResult:
        return self.app.send_task(
            WRITE_MARKER, (str(self.markers),), queue=add_queue.name, countdown=countdown
        )

    def ran(self, task_id: str) -> bool:
        return (self.markers / task_id).exists()

    def log(self) -> str:
        return self.workers.log_path(self.node).read_text()

    def wait_held(self, task_id: str, how: str) -> None:
        """Until the worker says it holds ``task_id`` as ``how`` (``query_task``)."""

        def held() -> bool:
            inspect = self.app.control.inspect(destination=[self.node.hostname], timeout=0.5)
            replies = inspect.query_task(task_id) or {}
            return (replies.get(self.node.hostname) or {}).get(task_id, [None])[0] == how

        wait_until(
            held, timeout=TIMEOUT, message=f"{self.node.hostname} never held {task_id} {how}"
        )

    def wait_state(self, result: AsyncResult, state: str) -> None:
        wait_until(
            lambda: result.state == state, timeout=TIMEOUT, message=f"{result.id} never {state}"
        )

    def wait_discarded(self, task_id: str, since: int = 0) -> None:
        """Until the worker logs that it dropped ``task_id`` as revoked (in the
        log written after offset ``since``); fails at once if the task ran."""
        line = f"Discarding revoked task: {WRITE_MARKER}[{task_id}]"
        wait_until(
            lambda: line in self.log()[since:] or self.ran(task_id),
            timeout=TIMEOUT,
            message=f"{self.node.hostname} neither ran nor discarded {task_id}",
        )
        assert not self.ran(task_id), f"{task_id} ran: {self.node.hostname} forgot the revoke"
        assert line in self.log()[since:]

    def wait_add_queue_empty(self) -> None:
        """Until the broker holds no message of the add queue, ready or
        unacknowledged (the management API's figures lag by seconds)."""
        wait_until(
            lambda: self.management.queue(self.vhost, add_queue.name).get("messages") == 0,
            timeout=TIMEOUT,
            message=f"{add_queue.name} still holds messages",
        )


def kill_now(pid: int) -> None:
    """SIGKILL a worker and its pool processes, and wait until they are gone."""
    main = psutil.Process(pid)
    processes = [main, *main.children(recursive=True)]
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=TIMEOUT)


def start_stack(
    vhost_factory: Callable[[str], str],
    redis_url: str,
    management: ManagementAPI,
    run_dir: Path,
) -> RevokeStack:
    broker_url = vhost_factory("revoke")
    env = {
        "CELERY_BROKER_URL": broker_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    node = worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}")[0]
    assert node.queue_names == add_queue.name
    workers = WorkerGroup(
        [node],
        run_dir,
        env=env,
        worker_options=(*TEST_WORKER_OPTIONS, "--include=tests.slow_tasks"),
    )
    app = client_app(broker_url, redis_url, queues=QUEUES)
    install(app)
    markers = run_dir / "markers"
    markers.mkdir(parents=True)
    stack = RevokeStack(
        app=app,
        workers=workers,
        node=node,
        env={**os.environ, **env},
        vhost=broker_url.rsplit("/", 1)[1],
        management=management,
        markers=markers,
    )
    workers.start()
    try:
        workers.wait_ready(app)
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: RevokeStack) -> None:
    started = stack.workers.running()
    try:
        stack.workers.stop()
    finally:
        for pid in started.values():  # only what this module started, by PID
            if pid_alive(pid):
                kill_now(pid)
        stack.app.close()


@pytest.fixture(scope="module")
def stack(
    vhost_factory: Callable[[str], str],
    redis_url: str,
    management: ManagementAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RevokeStack]:
    started = start_stack(vhost_factory, redis_url, management, tmp_path_factory.mktemp("revoke"))
    yield started
    stop_stack(started)


def test_when_a_countdown_task_held_by_its_worker_is_revoked_then_it_reads_revoked_and_never_runs(
    stack: RevokeStack,
) -> None:
    sent = time.monotonic()
    result = stack.send_marker(countdown=HOLD)
    stack.wait_held(result.id, "scheduled")

    code, document = stack.revoke_json(result.id)

    assert code == EXIT_OK, document
    assert document["acknowledged_by"] == [stack.node.hostname]
    (task,) = document["tasks"]
    assert task["held_by"] == [{"worker": stack.node.hostname, "as": "scheduled"}]
    assert (task["state_before"], task["state"], task["marked_revoked"]) == (
        SENT,
        states.REVOKED,
        True,
    )
    # Read here, before the countdown ends: the worker has not touched it yet.
    assert result.state == states.REVOKED
    assert time.monotonic() - sent < HOLD
    assert not stack.ran(result.id)
    # At its ETA the worker drops it, and acknowledges its message.
    stack.wait_discarded(result.id)
    stack.wait_add_queue_empty()
    assert not stack.ran(result.id)
    assert result.state == states.REVOKED


def test_when_a_task_queued_behind_a_busy_worker_is_revoked_then_it_reads_revoked_and_never_runs(
    stack: RevokeStack,
) -> None:
    busy = stack.app.send_task(SLEEP_THEN_ADD, (HOLD, 1, 2), queue=add_queue.name)
    stack.wait_state(busy, states.STARTED)
    queued = stack.send_marker()

    code, document = stack.revoke_json(queued.id)

    assert code == EXIT_OK, document
    (task,) = document["tasks"]
    # Prefetched by the worker (its one process is busy), or still in the queue.
    assert task["held_by"] in ([], [{"worker": stack.node.hostname, "as": "reserved"}])
    assert (task["state_before"], task["state"], task["marked_revoked"]) == (
        SENT,
        states.REVOKED,
        True,
    )
    assert queued.state == states.REVOKED
    assert busy.state == states.STARTED  # the worker has not reached it yet
    assert busy.get(timeout=TIMEOUT) == 3
    stack.wait_discarded(queued.id)
    stack.wait_add_queue_empty()
    assert not stack.ran(queued.id)
    assert queued.state == states.REVOKED


def test_when_a_running_task_is_revoked_with_terminate_then_it_stops_and_reads_revoked(
    stack: RevokeStack,
) -> None:
    seconds = 6 * HOLD
    running = stack.app.send_task(SLEEP_THEN_ADD, (seconds, 1, 2), queue=add_queue.name)
    stack.wait_state(running, states.STARTED)
    started = time.monotonic()

    code, document = stack.revoke_json(running.id, "--terminate")

    assert code == EXIT_OK, document
    assert document["signal"] == "SIGTERM"
    (task,) = document["tasks"]
    assert task["held_by"] == [{"worker": stack.node.hostname, "as": "active"}]
    assert (task["state_before"], task["state"], task["marked_revoked"]) == (
        states.STARTED,
        states.REVOKED,
        False,  # the worker wrote it as it stopped the task
    )
    assert running.state == states.REVOKED
    assert str(running.result) == "terminated"
    # The pool's only process was freed, not left sleeping: the next task runs now.
    after = stack.app.send_task(add.name, (2, 2), queue=add_queue.name)
    assert after.get(timeout=TIMEOUT) == 4
    assert time.monotonic() - started < seconds
    log = stack.log()
    assert f"Terminating {running.id}" in log
    assert f"[{running.id}] succeeded" not in log
    stack.wait_add_queue_empty()  # acknowledged: it does not come back
    assert running.state == states.REVOKED


def test_when_an_unknown_id_is_revoked_then_it_says_so_and_exits_4(stack: RevokeStack) -> None:
    unknown = str(uuid.uuid4())

    done = stack.revoke(unknown)

    assert done.returncode == EXIT_UNKNOWN, done.stdout + done.stderr
    assert f"revoke acknowledged by: {stack.node.hostname}" in done.stdout
    assert "not held by any worker" in done.stdout
    assert "unknown id: no result, no SENT record, and no worker holds it" in done.stdout
    assert "a task with this id that arrives later is discarded" in done.stdout


def test_when_a_worker_is_sigkilled_after_a_revoke_then_on_restart_it_still_discards_the_task(
    vhost_factory: Callable[[str], str],
    redis_url: str,
    management: ManagementAPI,
    tmp_path: Path,
) -> None:
    """Celery writes a worker's ``--statedb`` only at a clean exit; here each
    revoke is written as it arrives (``routing_demo.revokes``). The killed
    worker's unacknowledged message comes back to the same node, restarted
    with the same state file, which drops it on receipt."""
    stack = start_stack(vhost_factory, redis_url, management, tmp_path)
    try:
        result = stack.send_marker(countdown=3 * HOLD)
        stack.wait_held(result.id, "scheduled")
        code, document = stack.revoke_json(result.id)
        assert code == EXIT_OK, document
        assert result.state == states.REVOKED

        kill_now(stack.workers.pids()[stack.node.name])
        before_restart = len(stack.log())
        stack.workers.start()
        stack.workers.wait_ready(stack.app)

        # The broker gave the message back, and the restarted worker dropped it.
        stack.wait_discarded(result.id, since=before_restart)
        assert f"[{result.id}] received" in stack.log()[before_restart:]
        stack.wait_add_queue_empty()
        assert not stack.ran(result.id)
        assert result.state == states.REVOKED
    finally:
        stop_stack(stack)
