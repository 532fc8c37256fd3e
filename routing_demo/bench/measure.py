"""The Celery measurements, run inside a child process whose environment
selects the variant (see :mod:`routing_demo.bench.child`).

Tasks are sent the way an application sends them (``add.apply_async`` on
the project's own app), to the queues the variant's routes pick; the worker
is a real ``celery worker`` process started by the bench.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from celery import Celery
from celery.result import AsyncResult, ResultSet

__all__ = [
    "celery_rounds",
    "e2e_rounds",
    "latency_samples",
    "task_mix",
]

#: (task, x, y): the unit of every batch.
Job = tuple[Any, int, int]


def task_mix(tasks: Sequence[Any], count: int, rng: random.Random) -> list[Job]:
    """``count`` seeded jobs, the tasks drawn evenly at random (add and sub)."""
    return [(rng.choice(tasks), rng.randint(0, 1000), rng.randint(0, 1000)) for _ in range(count)]


def expected(job: Job) -> int:
    task, x, y = job
    return x + y if task.name.endswith(".add") else x - y


def send(jobs: Sequence[Job], *, results: bool) -> list[AsyncResult]:
    """Send every job as an application would: ``task.apply_async((x, y))``."""
    return [task.apply_async((x, y), ignore_result=not results) for task, x, y in jobs]


def _timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


class Progress:
    """Knows when the worker has finished a batch: first the broker's ready
    counts (a passive declare, no load on the worker), then the worker's own
    count through the ``bench_progress`` inspect command."""

    def __init__(self, app: Celery, node: str, queues: Sequence[str]) -> None:
        self.app = app
        self.node = node
        self.queues = list(queues)
        self.connection = app.connection_for_read()
        self.channel = self.connection.default_channel

    def close(self) -> None:
        self.connection.release()

    def worker(self) -> dict[str, int]:
        replies = self.app.control.broadcast(
            "bench_progress", destination=[self.node], reply=True, limit=1, timeout=5.0
        )
        if not replies:
            raise TimeoutError(f"{self.node} did not answer bench_progress")
        return replies[0][self.node]

    def ready_messages(self) -> int:
        return sum(self.channel.queue_declare(q, passive=True).message_count for q in self.queues)

    def wait_finished(self, accepted: int, timeout: float) -> None:
        """Return once ``accepted`` tasks were accepted and none is still in hand."""
        deadline = time.monotonic() + timeout
        while self.ready_messages():
            if time.monotonic() > deadline:
                raise TimeoutError("queue not drained in time")
            time.sleep(0.005)  # pacing between two broker polls, not a wait for an event
        while True:
            state = self.worker()
            if state["accepted"] >= accepted and not state["reserved"]:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker still busy: {state} (want {accepted} accepted)")

    def pause(self) -> None:
        for queue in self.queues:
            self.app.control.cancel_consumer(queue, destination=[self.node], reply=True)

    def resume(self) -> None:
        for queue in self.queues:
            self.app.control.add_consumer(queue, destination=[self.node], reply=True)


def celery_rounds(
    app: Celery,
    tasks: Sequence[Any],
    *,
    node: str,
    queues: Sequence[str],
    count: int,
    rounds: int,
    seed: int,
    timeout: float = 300.0,
) -> dict[str, list[float]]:
    """Per round: send ``count`` tasks (no results) while the worker's
    consumers are paused, then resume them and time the drain. ``score`` is
    the whole batch's rate, ``count / (send + drain)``. A first, smaller
    round warms up the pool and the connections and is not kept."""
    rng = random.Random(seed)
    progress = Progress(app, node, queues)
    out: dict[str, list[float]] = {"send": [], "drain": [], "score": []}
    try:
        for index in range(rounds + 1):
            batch = task_mix(tasks, count if index else max(count // 5, 10), rng)
            progress.pause()
            accepted = progress.worker()["accepted"] + len(batch)
            send_s, _ = _timed(lambda batch=batch: send(batch, results=False))
            started = time.perf_counter()
            progress.resume()
            progress.wait_finished(accepted, timeout)
            drain_s = time.perf_counter() - started
            if index:
                out["send"].append(len(batch) / send_s)
                out["drain"].append(len(batch) / drain_s)
                out["score"].append(len(batch) / (send_s + drain_s))
    finally:
        progress.close()
    return out


def _check(jobs: Sequence[Job], values: Sequence[Any]) -> None:
    if len(values) != len(jobs):
        raise AssertionError(f"{len(values)} results for {len(jobs)} tasks")
    wrong = [
        (job, value) for job, value in zip(jobs, values, strict=True) if value != expected(job)
    ]
    if wrong:
        raise AssertionError(f"{len(wrong)} wrong results, e.g. {wrong[:1]}")


def e2e_rounds(
    app: Celery,
    tasks: Sequence[Any],
    *,
    node: str,
    queues: Sequence[str],
    count: int,
    rounds: int,
    seed: int,
    with_no_results: bool,
    timeout: float = 300.0,
) -> dict[str, list[float]]:
    """End to end, the worker consuming while tasks are sent; per round:

    - ``e2e_no_results``: send ``count`` tasks without results, until the
      worker has run them all;
    - ``e2e_join_native``: send them with results and collect them with
      ``ResultSet.join_native`` (the backend's own bulk path);
    - ``e2e_naive_get``: send them, then ``.get()`` each result in turn.
    """
    rng = random.Random(seed)
    progress = Progress(app, node, queues)
    out: dict[str, list[float]] = {"e2e_join_native": [], "e2e_naive_get": []}
    if with_no_results:
        out["e2e_no_results"] = []
    to_forget: list[AsyncResult] = []
    try:
        for index in range(rounds + 1):
            size = count if index else max(count // 5, 10)
            if with_no_results:
                batch = task_mix(tasks, size, rng)
                accepted = progress.worker()["accepted"] + len(batch)
                started = time.perf_counter()
                send(batch, results=False)
                progress.wait_finished(accepted, timeout)
                if index:
                    out["e2e_no_results"].append(size / (time.perf_counter() - started))

            batch = task_mix(tasks, size, rng)
            started = time.perf_counter()
            results = ResultSet(send(batch, results=True), app=app)
            values = results.join_native(timeout=timeout)
            elapsed = time.perf_counter() - started
            _check(batch, values)
            to_forget.extend(results.results)
            if index:
                out["e2e_join_native"].append(size / elapsed)

            batch = task_mix(tasks, size, rng)
            started = time.perf_counter()
            sent = send(batch, results=True)
            values = [result.get(timeout=timeout) for result in sent]
            elapsed = time.perf_counter() - started
            _check(batch, values)
            to_forget.extend(sent)
            if index:
                out["e2e_naive_get"].append(size / elapsed)
    finally:
        progress.close()
        _forget(app, to_forget)
    return out


def latency_samples(
    app: Celery, tasks: Sequence[Any], *, samples: int, seed: int, timeout: float = 30.0
) -> list[float]:
    """Seconds from ``apply_async`` to the result in hand, one task at a time
    (after a few unrecorded warm-up tasks)."""
    rng = random.Random(seed)
    jobs = task_mix(tasks, samples + 10, rng)
    measured: list[float] = []
    sent: list[AsyncResult] = []
    for index, (task, x, y) in enumerate(jobs):
        started = time.perf_counter()
        result = task.apply_async((x, y))
        value = result.get(timeout=timeout)
        elapsed = time.perf_counter() - started
        _check([(task, x, y)], [value])
        sent.append(result)
        if index >= 10:
            measured.append(elapsed)
    _forget(app, sent)
    return measured


def _forget(app: Celery, results: Sequence[AsyncResult]) -> None:
    """Delete stored results (Redis keys); ``rpc://`` results are gone once read."""
    if results and app.conf.result_backend.startswith("redis"):
        ResultSet(list(results), app=app).forget()
