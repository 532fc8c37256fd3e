"""A task's live timeline (``routes status/send --follow``) against real
workers started with task events (``--events``), a Redis backend and a
throw-away vhost.

``flaky(n)`` fails its first ``n`` attempts and is retried after 1, 2 and 4
seconds (no jitter here); it is unrouted, so every attempt comes by the
default queue to the default-queue worker. The followers run as the CLI
does, in their own process; what they print is checked against the result
backend's record and the broker's view of the worker's connections.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import states

from routing_demo.celery import client_app
from routing_demo.events import EVENT_CONNECTION_NAME
from routing_demo.polling import wait_until
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.sent_state import SENT
from routing_demo.sent_state import install as install_sent_state
from routing_demo.tasks import flaky
from routing_demo.topology import QUEUES, task_exchange
from routing_demo.workers import WorkerGroup, worker_nodes

from .conftest import TEST_WORKER_OPTIONS
from .stack import Stack, consumers_paused, publishing_channels

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Seconds a follower may take at most: three retries wait 1 + 2 + 4 s.
FOLLOW_TIMEOUT = 60


@pytest.fixture(scope="module")
def events_stack(
    vhost_factory: Any,
    redis_url: str,
    management: ManagementAPI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The topology's three workers with task events on, retries without jitter."""
    broker_url = vhost_factory("timeline")
    workers = WorkerGroup(
        worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}"),
        tmp_path_factory.mktemp("workers-timeline"),
        env={
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": redis_url,
            "ROUTING_DEMO_RETRY_JITTER": "0",
        },
        worker_options=(*TEST_WORKER_OPTIONS, "--events"),
    )
    client = client_app(broker_url, redis_url, queues=QUEUES)
    install_sent_state(client)  # a waiting task reads SENT, as the CLI's do
    vhost = broker_url.rsplit("/", 1)[1]
    stack = Stack("redis", broker_url, redis_url, vhost, client, workers, management)
    workers.start()
    try:
        workers.wait_ready(client)
        yield stack
    finally:
        workers.stop()
        client.close()


class Follower:
    """``celery -A routing_demo routes …`` in its own process, its output read
    line by line as it comes."""

    def __init__(self, stack: Stack, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "routing_demo", "routes", *args],
            env={**os.environ, **stack.env, "PYTHONPATH": str(REPO_ROOT)},
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_lines(self, count: int) -> list[str]:
        return wait_until(
            lambda: self.lines[:count] if len(self.lines) >= count else None,
            timeout=30,
            message=f"the follower printed {self.lines!r}, not {count} lines",
        )

    def finish(self) -> tuple[int, list[str], str]:
        """Exit code, stdout lines and stderr once the process ended."""
        try:
            code = self.process.wait(timeout=FOLLOW_TIMEOUT + 30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        return code, self.lines, self.process.stderr.read()


def changes(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def without_received(timeline: list[dict[str, Any]]) -> list[str]:
    """The states, RECEIVED left out: a retried message is received (and held
    for its countdown) before its previous attempt's RETRY is announced."""
    return [change["state"] for change in timeline if change["state"] != states.RECEIVED]


def assert_every_attempt_on_the_default_worker(
    stack: Stack, timeline: list[dict[str, Any]]
) -> None:
    default_worker = stack.node("default").hostname
    worker_changes = [change for change in timeline if change["source"] == "event"]
    assert worker_changes
    for change in worker_changes:
        assert change["worker"] == default_worker, change
        assert change["queue"] == QUEUES.default.name, change
        assert change["exchange"] == task_exchange.name, change
        assert change["routing_key"] == QUEUES.default.routing_key, change


def test_when_flaky_2_is_followed_from_before_it_starts_then_every_change_shows(
    events_stack: Stack,
) -> None:
    stack = events_stack
    # The task waits in its queue while the follower attaches: it reads SENT.
    with consumers_paused(stack, "default"):
        result = stack.client.send_task(flaky.name, (2,))
        wait_until(
            lambda: stack.client.backend.get_task_meta(result.id)["status"] == SENT,
            timeout=30,
            message="no SENT record",
        )
        follower = Follower(stack, "status", result.id, "--follow", "--json")
        first = follower.wait_lines(1)
    code, lines, stderr = follower.finish()
    timeline = changes(lines)
    assert code == 0, stderr
    assert json.loads(first[0])["state"] == SENT
    assert without_received(timeline) == [
        SENT,
        states.STARTED,
        states.RETRY,
        states.STARTED,
        states.RETRY,
        states.STARTED,
        states.SUCCESS,
    ]
    assert states.RECEIVED in [change["state"] for change in timeline]
    assert timeline[0]["source"] == "backend"
    assert (timeline[0]["exchange"], timeline[0]["routing_key"]) == (
        task_exchange.name,
        QUEUES.default.routing_key,
    )
    assert_every_attempt_on_the_default_worker(stack, timeline)
    retries = [change for change in timeline if change["state"] == states.RETRY]
    assert [retry["exception"] for retry in retries] == [
        "TransientError('attempt 1 failed on purpose (2 planned)')",
        "TransientError('attempt 2 failed on purpose (2 planned)')",
    ]
    assert timeline[-1]["result"] == "3"
    # The backend's own record agrees: third attempt, on the default worker.
    assert result.get(timeout=10) == 3
    assert result.worker == stack.node("default").hostname


def test_when_flaky_5_is_sent_and_followed_then_it_fails_after_three_retries(
    events_stack: Stack,
) -> None:
    stack = events_stack
    code, lines, stderr = Follower(stack, "send", "flaky", "5", "--follow", "--json").finish()
    timeline = changes(lines)
    assert code == 1, stderr
    assert timeline[0]["state"] == SENT and timeline[0]["source"] == "publish"
    assert without_received(timeline) == [
        SENT,
        states.STARTED,
        states.RETRY,
        states.STARTED,
        states.RETRY,
        states.STARTED,
        states.RETRY,
        states.STARTED,
        states.FAILURE,
    ]
    assert "attempt 4 failed" in timeline[-1]["exception"]
    assert_every_attempt_on_the_default_worker(stack, timeline)
    meta = stack.client.backend.get_task_meta(timeline[0]["id"])
    assert meta["status"] == states.FAILURE
    assert "attempt 4 failed" in str(meta["result"])


def test_when_the_task_already_ended_then_following_prints_its_end_at_once(
    events_stack: Stack,
) -> None:
    stack = events_stack
    result = stack.client.send_task(flaky.name, (0,))
    assert result.get(timeout=30) == 1
    code, lines, stderr = Follower(stack, "status", result.id, "--follow").finish()
    assert code == 0, stderr
    assert len(lines) == 1
    assert " SUCCESS " in lines[0] and "(from the backend)" in lines[0]
    assert stack.node("default").hostname in lines[0]
    code, lines, _ = Follower(stack, "status", result.id, "--follow", "--json").finish()
    assert code == 0
    [change] = changes(lines)
    assert (change["state"], change["source"], change["result"]) == (states.SUCCESS, "backend", 1)


def test_when_no_events_come_then_the_follower_gives_up_and_says_why(
    events_stack: Stack,
) -> None:
    never_sent = str(uuid.uuid4())
    follower = Follower(events_stack, "status", never_sent, "--follow", "--timeout", "1")
    code, lines, stderr = follower.finish()
    assert code == 4
    assert lines == []
    assert "no task events came" in stderr and "-E" in stderr and "enable_events" in stderr


def _publishing_channels(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The vhost's channels that published something: (event connections',
    task publishers'). Task publishers are the other channels without a
    consumer: the client's and the worker's pool process's producers (a
    control client's channel, which also consumes its replies, is neither)."""
    channels = publishing_channels(stack)
    events = [channel for owner, channel in channels if owner == EVENT_CONNECTION_NAME]
    others = [
        channel
        for owner, channel in channels
        if owner != EVENT_CONNECTION_NAME and not channel.get("consumer_count")
    ]
    return events, others


def test_when_workers_send_events_then_the_broker_confirms_none_but_every_task(
    events_stack: Stack,
) -> None:
    """The broker's own record: the workers' event channels are not in confirm
    mode, while task publishes (the client's, and the worker's retries) are."""
    stack = events_stack
    result = stack.client.send_task(flaky.name, (1,))
    assert result.get(timeout=30) == 2

    def sampled() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        events, others = _publishing_channels(stack)
        complete = all("confirm" in channel for channel in (*events, *others))
        # One event channel per worker, and the retry's publish among the others.
        return (events, others) if len(events) >= 3 and others and complete else None

    events, others = wait_until(
        sampled, timeout=30, message="the broker never reported the workers' event publishes"
    )
    for channel in events:
        assert channel["confirm"] is False, channel["name"]
        assert not channel["message_stats"].get("confirm"), channel["name"]
    for channel in others:
        assert channel["confirm"] is True, channel["name"]


@pytest.mark.parametrize("stack", ["redis"], indirect=True)
def test_when_workers_run_without_events_then_enable_events_turns_them_on_to_follow(
    stack: Stack,
) -> None:
    """The shared stack's workers start without ``--events`` (as shipped):
    ``--enable-events`` asks each to send them before following."""
    try:
        follower = Follower(stack, "send", "add", "2", "3", "--follow", "--enable-events", "--json")
        code, lines, stderr = follower.finish()
    finally:
        stack.client.control.disable_events()
    assert code == 0, stderr
    assert "task events turned on in 3 worker(s)" in stderr
    timeline = changes(lines)
    assert without_received(timeline) == [SENT, states.STARTED, states.SUCCESS]
    for change in timeline[1:]:
        assert change["worker"] == stack.node("add").hostname, change
        assert change["queue"] == "add", change
    assert timeline[-1]["result"] == "5"
