"""Workers that die or stop mid-task, with a ledger of what ran.

The project acknowledges a message after its task ran (``task_acks_late``)
and gives it back when the pool process dies (``task_reject_on_worker_lost``):
RabbitMQ redelivers whatever a dead worker held unacknowledged, so nothing
sent is lost. A task that finished just before the kill, whose ack never
reached the broker, runs again: such duplicates are counted, not hidden.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import uuid
from pathlib import Path

import psutil
import pytest
from celery import Celery

from routing_demo.tasks import add
from routing_demo.testing.checks import queue_counts
from routing_demo.testing.ledger import Ledger
from routing_demo.testing.process import wait_until
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.topology import add_queue
from routing_demo.workers import PidboxLocked, WorkerGroup, WorkerNode, worker_nodes
from tests.slow_tasks import SLEEP_THEN_ADD

from .conftest import RUN_TIMEOUT, WORKER_INCLUDES, show, start_workers

pytestmark = pytest.mark.integration


def send_slow_adds(app: Celery, ledger: Ledger, seconds: list[float]) -> list[str]:
    """One ``sleep_then_add(seconds[i], i, 1)`` per entry, to the add queue."""
    ids = [
        app.send_task(SLEEP_THEN_ADD, (pause, index, 1), queue=add_queue.name).id
        for index, pause in enumerate(seconds)
    ]
    ledger.sent(ids)
    return ids


def received_ids(log: str, ids: list[str]) -> set[str]:
    return {task_id for task_id in ids if f"[{task_id}] received" in log}


def test_when_worker_is_sigkilled_mid_stream_then_every_task_completes(
    celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    victim, survivor = start_workers(
        [
            local_worker_factory(WorkerNode(name, "-Q", add_queue.name), concurrency=2)
            for name in ("add-victim", "add-survivor")
        ]
    )
    ids = send_slow_adds(celery_setup_app, ledger, [0.25] * 40)
    # Mid-stream: the victim has finished some tasks and holds more.
    wait_until(
        lambda: sum(run.hostname == victim.hostname() for run in ledger.executions()) >= 2,
        timeout=RUN_TIMEOUT,
        message="the victim ran no task",
    )

    victim.kill()

    assert victim.container.status == "exited"
    assert victim.container.group_processes() == []
    report = ledger.wait_for(timeout=RUN_TIMEOUT)
    show("worker SIGKILL mid-stream", report)
    assert report.lost == frozenset()
    assert ledger.wrong_results() == []
    victim_ran = {run.task_id for run in ledger.executions() if run.hostname == victim.hostname()}
    taken_over = received_ids(victim.logs(), ids) - victim_ran
    # The kill interrupted work: messages the victim had received but not
    # finished ran on the survivor.
    assert taken_over
    assert received_ids(survivor.logs(), ids) >= taken_over
    # A duplicate needs a task finished but not yet acknowledged at the kill:
    # at most what the victim held (2 processes x prefetch multiplier 4).
    assert report.extra_runs <= 8


def test_when_worker_gets_sigterm_mid_task_then_running_task_finishes_and_rest_wait(
    celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    first = local_worker_factory(WorkerNode("add-first", "-Q", add_queue.name))
    first.ready()
    ids = send_slow_adds(celery_setup_app, ledger, [2.0] + [0.05] * 9)
    running = celery_setup_app.AsyncResult(ids[0])
    wait_until(
        lambda: running.state == "STARTED", timeout=RUN_TIMEOUT, message="first task never started"
    )
    # The worker has prefetched more than the task it runs.
    wait_until(
        lambda: len(received_ids(first.logs(), ids)) > 1,
        timeout=RUN_TIMEOUT,
        message="the worker prefetched nothing beside its running task",
    )

    first.container.kill("SIGTERM", timeout=RUN_TIMEOUT)

    runs = ledger.runs()
    assert runs == {ids[0]: 1}
    assert [run.hostname for run in ledger.executions()] == [first.hostname()]
    assert "Warm shutdown" in first.logs()
    # The prefetched, unstarted tasks went back to the queue for others.
    assert queue_counts(celery_setup_app, add_queue.name).messages == len(ids) - 1

    second = local_worker_factory(WorkerNode("add-second", "-Q", add_queue.name))
    second.ready()
    report = ledger.wait_for(timeout=RUN_TIMEOUT)
    show("worker SIGTERM mid-task", report)
    assert report.lost == frozenset()
    assert report.duplicated == {}
    assert ledger.wrong_results() == []
    assert {run.hostname for run in ledger.executions()[1:]} == {second.hostname()}


def kill_group_now(pid: int) -> None:
    """SIGKILL a detached worker and its pool processes, and wait until they are gone."""
    main = psutil.Process(pid)
    processes = [main, *main.children(recursive=True)]
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=30)


def test_when_node_restarts_under_its_name_right_after_a_kill_then_it_comes_up_clean(
    broker_node: PrivateRabbitMQNode, celery_setup_app: Celery, ledger: Ledger, tmp_path: Path
) -> None:
    """The project's start path (``WorkerGroup.start``, ``celery multi``)
    waits for the broker to drop the killed run's pidbox queue."""
    node = worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}")[0]
    group = WorkerGroup(
        [node],
        tmp_path,
        env={"CELERY_BROKER_URL": broker_node.url, **ledger.env},
        worker_options=[
            "--concurrency=1",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            f"--include={','.join(WORKER_INCLUDES)}",
        ],
    )
    pidbox = f"{node.hostname}.celery.pidbox"
    try:
        # While another connection holds the pidbox queue, start refuses to
        # launch a worker that would fail on it, and says why.
        with celery_setup_app.connection_for_write() as holder:
            holder.default_channel.queue_declare(queue=pidbox, exclusive=True)
            with pytest.raises(PidboxLocked, match="still holds"):
                group.start(pidbox_timeout=1)
        assert group.running() == {}

        group.start()
        group.wait_ready(celery_setup_app)
        ids = [celery_setup_app.send_task(add.name, (index, 1)).id for index in range(20)]
        ledger.sent(ids)
        ledger.wait_for(timeout=RUN_TIMEOUT)
        log = group.log_path(node)
        first_run = log.stat().st_size

        ready_line = f"{node.hostname} ready."
        for run in range(1, 4):
            kill_group_now(group.pids()[node.name])
            group.start()
            group.wait_ready(celery_setup_app)
            # A node can answer ``ping`` a moment before it logs "ready." (the
            # pidbox consumer starts first); wait for the line before the next
            # kill so that each run is seen to come all the way up.
            wait_until(
                lambda run=run: log.read_text()[first_run:].count(ready_line) >= run,
                timeout=RUN_TIMEOUT,
                message=f"restart {run} never logged {ready_line!r} (log: {log})",
            )
        more = [celery_setup_app.send_task(add.name, (index, 2)).id for index in range(20)]
        ledger.sent(more)
        report = ledger.wait_for(timeout=RUN_TIMEOUT)
        show("same node name restarted right after SIGKILL (x3)", report)

        assert report.lost == frozenset()
        assert ledger.wrong_results() == []
        later_runs = log.read_text()[first_run:]
        assert later_runs.count(ready_line) == 3
        assert "RESOURCE_LOCKED" not in later_runs
        assert "Unrecoverable error" not in later_runs
    finally:
        for pid in group.running().values():
            kill_group_now(pid)


def test_when_pidbox_is_held_then_start_waits_and_the_node_starts_once_released(
    broker_node: PrivateRabbitMQNode,
    celery_setup_app: Celery,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    node = WorkerNode(f"add-{uuid.uuid4().hex[:6]}", "-Q", add_queue.name)
    group = WorkerGroup(
        [node],
        tmp_path,
        env={"CELERY_BROKER_URL": broker_node.url},
        worker_options=["--concurrency=1", "--without-mingle", "--without-gossip"],
    )
    pidbox = f"{node.hostname}.celery.pidbox"
    holder = celery_setup_app.connection_for_write()
    holder.default_channel.queue_declare(queue=pidbox, exclusive=True)
    starting = threading.Thread(target=group.start)
    caplog.set_level(logging.WARNING, logger="routing_demo.workers")
    try:
        starting.start()
        wait_until(
            lambda: f"{pidbox} is held by another connection" in caplog.text,
            timeout=RUN_TIMEOUT,
            message="start() did not notice the held pidbox queue",
        )
        # Blocked before launching anything: no worker meets the lock.
        assert starting.is_alive()
        assert group.running() == {}

        holder.release()
        starting.join(timeout=RUN_TIMEOUT)

        assert not starting.is_alive()
        group.wait_ready(celery_setup_app)
        assert "RESOURCE_LOCKED" not in group.log_path(node).read_text()
    finally:
        holder.release()
        for pid in group.running().values():
            kill_group_now(pid)
