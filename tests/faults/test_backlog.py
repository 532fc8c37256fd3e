"""A large backlog: a million small tasks wait in one queue, then the shipped
worker drains it. Memory must stay flat, and every task must run once.

Filling goes through ``send_all`` (pipelined publisher confirms), in chunks:
a few minutes, not hours. The tasks ignore their results, as a bulk
producer's would. Then one ``add`` worker as shipped (prefork, one process per
core) drains the queue while the ledger counts what ran. The broker's and
the worker's resident memory (RSS, the worker's pool processes included) are
sampled all along.

The queue is *lazy* on this node (a policy): RabbitMQ 3.x keeps a classic
queue's messages in memory until it runs short, where 4.x classic queues
keep them on disk and only a small window in memory. The policy gives 3.x
the 4.x behaviour, so the measured memory is what a 4.x broker would show.

Marked ``soak`` (out of the default run): run it on its own with
``pytest -m soak -s tests/faults/test_backlog.py``; ``ROUTING_DEMO_BACKLOG_TASKS``
sets the size (default one million).
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from celery import Celery

from routing_demo.batch import send_all
from routing_demo.tasks import add
from routing_demo.testing.checks import queue_counts
from routing_demo.testing.ledger import Ledger
from routing_demo.testing.process import wait_until
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.topology import add_queue
from routing_demo.workers import WorkerNode

from .conftest import show

pytestmark = [pytest.mark.integration, pytest.mark.soak]

#: Tasks in the backlog.
BACKLOG_TASKS = int(os.environ.get("ROUTING_DEMO_BACKLOG_TASKS", "1000000"))
#: Tasks per ``send_all``: the ledger records each chunk once it is confirmed.
CHUNK = 20_000
#: Seconds the fill, and then the drain, may take.
FILL_DEADLINE = float(os.environ.get("ROUTING_DEMO_BACKLOG_FILL_DEADLINE", "1800"))
DRAIN_DEADLINE = float(os.environ.get("ROUTING_DEMO_BACKLOG_DRAIN_DEADLINE", "3600"))
#: Seconds between memory samples.
SAMPLE_EVERY = 5.0
#: RSS growth (MiB) past which memory does not count as flat: a backlog
#: held in memory grows by about 1 KiB per task, a gigabyte per million.
FLAT_MIB = 256


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MiB."""
    process = psutil.Process(pid)
    processes = [process, *process.children(recursive=True)]
    total = 0
    for each in processes:
        with suppress(psutil.NoSuchProcess):  # a pool process replaced meanwhile
            total += each.memory_info().rss
    return total / 2**20


def beam_pid(node: PrivateRabbitMQNode) -> int:
    """The node's Erlang VM (its pid file), where RabbitMQ's memory is."""
    return int(Path(node.base_dir, "rabbitmq.pid").read_text().strip())


@dataclass(eq=False)  # a thread: hashed by identity
class MemorySampler(threading.Thread):
    """Samples the RSS of named processes every ``SAMPLE_EVERY`` seconds."""

    pids: dict[str, int]
    samples: list[tuple[float, str, dict[str, float]]] = field(default_factory=list)
    phase: str = "fill"

    def __post_init__(self) -> None:
        super().__init__(name="memory sampler", daemon=True)
        self.stopping = threading.Event()
        self.started_at = time.monotonic()

    def sample(self) -> None:
        self.samples.append(
            (
                time.monotonic() - self.started_at,
                self.phase,
                {name: rss_mib(pid) for name, pid in dict(self.pids).items()},
            )
        )

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY):
            self.sample()

    def stop(self) -> None:
        self.stopping.set()
        self.join()
        self.sample()

    def series(self, name: str, phase: str | None = None) -> list[float]:
        return [rss[name] for _, p, rss in self.samples if phase in (None, p)]


def test_backlog_when_a_million_tasks_wait_then_memory_stays_flat_and_each_runs_once(
    broker_node: PrivateRabbitMQNode,
    shipped_app: Celery,
    local_worker_factory,
    ledger: Ledger,
) -> None:
    policy = '{"queue-mode":"lazy"}'
    broker_node.ctl("set_policy", "backlog-lazy", f"^{add_queue.name}$", policy)
    sampler = MemorySampler({"broker": beam_pid(broker_node)})
    sampler.sample()
    sampler.start()

    began = time.monotonic()
    sent = 0
    while sent < BACKLOG_TASKS:
        count = min(CHUNK, BACKLOG_TASKS - sent)
        results = send_all(
            shipped_app.signature(add.name, (sent + i, 1), ignore_result=True) for i in range(count)
        )
        ledger.sent(result.id for result in results)
        sent += count
        assert time.monotonic() - began < FILL_DEADLINE, f"filled {sent} in {FILL_DEADLINE}s"
    fill_seconds = time.monotonic() - began
    waiting = queue_counts(shipped_app, add_queue.name).messages

    # The shipped worker for the queue, started on the full backlog.
    worker = local_worker_factory(WorkerNode("add", "-Q", add_queue.name))
    worker.ready()
    began = time.monotonic()
    sampler.phase = "drain"
    sampler.pids["worker"] = worker.container.pid
    wait_until(
        lambda: ledger.redis.hlen(ledger.runs_key) >= BACKLOG_TASKS,
        timeout=DRAIN_DEADLINE,
        message=f"{BACKLOG_TASKS} tasks ran",
        interval=SAMPLE_EVERY,
    )
    drain_seconds = time.monotonic() - began
    sampler.stop()
    report = ledger.report()

    broker = sampler.series("broker")
    worker_rss = sampler.series("worker", "drain")
    print(
        f"\nBACKLOG {BACKLOG_TASKS} tasks: filled in {fill_seconds:.0f}s "
        f"({BACKLOG_TASKS / fill_seconds:.0f}/s), {waiting} waiting; drained in "
        f"{drain_seconds:.0f}s ({BACKLOG_TASKS / drain_seconds:.0f}/s)\n"
        f"BACKLOG broker RSS MiB: start {broker[0]:.0f}, max {max(broker):.0f}, "
        f"end {broker[-1]:.0f}\n"
        f"BACKLOG worker RSS MiB (pool included): start {worker_rss[0]:.0f}, "
        f"max {max(worker_rss):.0f}, end {worker_rss[-1]:.0f}"
    )
    show(f"backlog of {BACKLOG_TASKS}", report)
    assert waiting == BACKLOG_TASKS
    assert report.lost == frozenset()
    assert report.extra_runs == 0
    assert max(broker) - broker[0] < FLAT_MIB
    assert max(worker_rss) - worker_rss[0] < FLAT_MIB
