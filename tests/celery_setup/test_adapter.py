"""The local containers themselves: what pytest-celery relies on must be true.

A stopped container leaves no process behind (checked by PID), its logs
survive a restart, ``status`` follows the process, and a shared service
refuses to be stopped.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import psutil
import pytest
from kombu import Connection, Queue
from pytest_celery import CeleryTestNode, CeleryTestSetup

from routing_demo.testing.defaults import RABBITMQ_SERVER, REDIS_SERVER
from routing_demo.testing.process import LocalProcessContainer, ProcessFailed, wait_until
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.testing.redis import PrivateRedisServer
from routing_demo.testing.services import require_executable

#: Prints its PID and its child's, says "ready", then waits to be stopped.
PARENT_AND_CHILD = (
    "import os, subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print(f'run pid={os.getpid()} child={child.pid}', flush=True)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def gone(pid: int) -> bool:
    """No such process (a zombie waiting for its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports some of ``pids`` listen on. (Whether a port answers after a
    stop says nothing: another session may have taken it meanwhile.)"""
    return {
        connection.laddr.port
        for connection in psutil.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids
    }


def run_pids(container: LocalProcessContainer) -> tuple[int, int]:
    """The PIDs the current run printed: its own and its child's."""
    line = next(line for line in container.current_logs().splitlines() if line.startswith("run "))
    fields = dict(field.split("=") for field in line.split()[1:])
    return int(fields["pid"]), int(fields["child"])


@pytest.fixture
def process(tmp_path: Path) -> LocalProcessContainer:
    container = LocalProcessContainer(
        [sys.executable, "-c", PARENT_AND_CHILD],
        name="parent-and-child",
        log_path=tmp_path / "process.log",
        ready_prompt="ready",
        stop_timeout=5,
    )
    yield container
    container.teardown()


def test_when_torn_down_then_no_process_of_its_group_is_left(
    process: LocalProcessContainer,
) -> None:
    assert process.status == "created"
    process.start()
    assert process.ready()
    pid, child = run_pids(process)
    assert pid == process.pid
    assert {member.pid for member in process.group_processes()} == {pid, child}

    process.teardown()

    assert process.status == "exited"
    assert gone(pid)
    assert gone(child)
    assert process.group_processes() == []


def test_when_stopped_gracefully_then_leftover_children_go_too(
    process: LocalProcessContainer,
) -> None:
    process.start()
    process.ready()
    pid, child = run_pids(process)

    process.stop()

    assert process.status == "exited"
    assert gone(pid)
    assert gone(child)


def test_when_restarted_then_the_logs_of_every_run_survive(
    process: LocalProcessContainer,
) -> None:
    process.start()
    process.ready()
    first_pid, _ = run_pids(process)
    identity = process.id

    process.restart()

    second_pid, _ = run_pids(process)
    assert second_pid != first_pid
    assert gone(first_pid)
    assert f"run pid={first_pid} " in process.logs()
    assert f"run pid={second_pid} " in process.logs()
    assert f"run pid={first_pid} " not in process.current_logs()
    assert process.id == identity
    assert process.runs == 2


def test_when_the_process_dies_on_its_own_then_status_says_exited(
    process: LocalProcessContainer,
) -> None:
    process.start()
    process.ready()
    assert process.status == "running"

    os.kill(process.pid, signal.SIGKILL)  # a crash nobody asked for

    wait_until(lambda: process.status == "exited", timeout=5, message="status still running")
    with pytest.raises(ProcessFailed, match="exited with -9"):
        process.ready(timeout=1)


def test_when_pytest_celery_kills_and_restarts_the_node_then_it_keeps_its_hostname(
    process: LocalProcessContainer,
) -> None:
    process.start()
    process.ready()
    node = CeleryTestNode(process)
    hostname = node.hostname()
    pid, child = run_pids(process)

    node.kill()  # SIGKILL, to the whole group

    assert process.status == "exited"
    assert gone(pid)
    assert gone(child)

    node.restart()

    assert process.status == "running"
    assert node.hostname() == hostname
    assert "ready" in process.current_logs()


def test_when_the_command_fails_at_start_then_ready_raises_with_its_output(
    tmp_path: Path,
) -> None:
    failing = LocalProcessContainer(
        [sys.executable, "-c", "print('cannot start: no config'); raise SystemExit(3)"],
        name="failing",
        log_path=tmp_path / "failing.log",
        ready_prompt="ready",
    )
    failing.start()
    with pytest.raises(ProcessFailed, match="no config"):
        failing.ready(timeout=10)
    assert failing.status == "exited"


@pytest.mark.integration
def test_when_a_worker_is_torn_down_then_its_main_and_pool_processes_are_gone(
    celery_setup: CeleryTestSetup,
) -> None:
    for worker in celery_setup.worker_cluster:
        pids = [member.pid for member in worker.container.group_processes()]
        assert worker.container.pid in pids
        assert len(pids) >= 2, "main process and its pool child"

        worker.teardown()

        assert worker.container.status == "exited"
        assert all(gone(pid) for pid in pids)


@pytest.mark.integration
def test_when_the_shared_broker_is_asked_to_stop_then_it_refuses(
    celery_setup: CeleryTestSetup,
) -> None:
    with pytest.raises(RuntimeError, match="shared"):
        celery_setup.broker.kill()
    with pytest.raises(RuntimeError, match="shared"):
        celery_setup.broker.restart()
    assert celery_setup.broker.container.status == "running"
    assert celery_setup.ready(ping=True)


@pytest.mark.integration
def test_private_rabbitmq_node_keeps_durable_queues_over_a_restart_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    node = PrivateRabbitMQNode(tmp_path, server=require_executable(RABBITMQ_SERVER, "RabbitMQ"))
    queue = Queue("survivor", durable=True)
    try:
        node.start()
        node.ready()
        with Connection(node.url) as connection:
            queue(connection.default_channel).declare()
        first_pid = node.pid

        node.restart()

        assert node.status == "running"
        assert gone(first_pid)
        assert node.logs().count("Starting broker... completed") == 2
        with Connection(node.url) as connection:
            channel = connection.default_channel
            assert channel.queue_declare(queue=queue.name, passive=True).queue == queue.name
        members = [member.pid for member in node.group_processes()]
        assert node.amqp_port in listening_ports(members)
    finally:
        node.teardown()

    assert node.status == "exited"
    # Every process that held the listener is gone, and the listener with it.
    assert all(gone(pid) for pid in members)


@pytest.mark.integration
def test_private_redis_server_starts_restarts_and_leaves_nothing(tmp_path: Path) -> None:
    redis = PrivateRedisServer(tmp_path, server=require_executable(REDIS_SERVER, "Redis"))
    try:
        redis.start()
        redis.ready()
        assert redis.client.ping()
        first_pid = redis.pid

        redis.restart()

        assert gone(first_pid)
        assert redis.client.set("answer", 42)
        assert redis.logs().count("Ready to accept connections") == 2
        assert redis.port in listening_ports([redis.pid])
    finally:
        redis.teardown()

    assert gone(redis.pid)
