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

from celery import Celery, group
from celery.result import AsyncResult, ResultSet

from ..polling import wait_until
from ..rabbitmq import queue_counts

__all__ = [
    "BATCH_SENDS",
    "GateProgress",
    "batch_senders",
    "celery_rounds",
    "dramatiq_rounds",
    "e2e_rounds",
    "latency_samples",
    "paused_rounds",
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

    def finished(self) -> int:
        """Tasks the worker has accepted since it started."""
        return self.worker()["accepted"]

    def ready_messages(self) -> int:
        return sum(queue_counts(self.channel, queue)[0] for queue in self.queues)

    def wait_finished(self, accepted: int, timeout: float) -> None:
        """Return once ``accepted`` tasks were accepted and none is still in hand."""
        deadline = time.monotonic() + timeout
        # 5 ms: pacing between two broker polls, not a wait for an event.
        wait_until(
            lambda: not self.ready_messages(),
            timeout=timeout,
            message="queue not drained in time",
            interval=0.005,
        )
        wait_until(
            self.worker,
            done=lambda state: state["accepted"] >= accepted and not state["reserved"],
            timeout=max(deadline - time.monotonic(), 0.0),
            message=f"worker still busy (want {accepted} accepted)",
            interval=0,
        )

    def pause(self) -> None:
        for queue in self.queues:
            self.app.control.cancel_consumer(queue, destination=[self.node], reply=True)
        self._until_consuming(set())

    def resume(self) -> None:
        for queue in self.queues:
            self.app.control.add_consumer(queue, destination=[self.node], reply=True)
        self._until_consuming(set(self.queues))

    def _until_consuming(self, wanted: set[str], timeout: float = 30.0) -> None:
        """Ask until the worker consumes exactly ``wanted`` of our queues:
        ``add_consumer``/``cancel_consumer`` reply before the worker acts
        (see :mod:`routing_demo.bench.control`), and each ask wakes its loop."""
        wait_until(
            lambda: set(self.worker().get("consuming", [])) & set(self.queues) == wanted,
            timeout=timeout,
            message=f"{self.node} does not consume {sorted(wanted)} in time",
            interval=0,
        )


#: Ways to send a whole batch, besides one ``apply_async`` per task (``send``):
#: a metric ``send_<name>`` each, timed like ``send``.
BATCH_SENDS = ("group", "send_all", "pipelined")


def batch_senders(app: Celery, *, results: bool) -> tuple[dict[str, Callable], dict[str, str]]:
    """``send`` and the batch ways this app has: name -> ``f(jobs) -> results``;
    and name -> why it is missing (``routing_demo.batch`` not importable)."""
    senders: dict[str, Callable[[Sequence[Job]], list[AsyncResult]]] = {
        "send": lambda jobs: send(jobs, results=results),
        "group": lambda jobs: group(task.s(x, y) for task, x, y in jobs).apply_async().results,
    }
    missing: dict[str, str] = {}
    try:
        from routing_demo import batch
    except ImportError as exc:
        for name in ("send_all", "pipelined"):
            missing[name] = f"routing_demo.batch is not importable ({exc})"
        return senders, missing
    if hasattr(batch, "send_all"):
        senders["send_all"] = lambda jobs: list(
            batch.send_all([task.s(x, y) for task, x, y in jobs])
        )
    else:
        missing["send_all"] = "routing_demo.batch has no send_all"
    if hasattr(batch, "pipelined"):

        def pipelined(jobs: Sequence[Job]) -> list[AsyncResult]:
            with batch.pipelined(app):
                return [task.s(x, y).apply_async() for task, x, y in jobs]

        senders["pipelined"] = pipelined
    else:
        missing["pipelined"] = "routing_demo.batch has no pipelined"
    return senders, missing


def send_metric(way: str) -> str:
    """The metric a send way is reported as: ``send_group``, ``send_all``,
    ``send_pipelined``."""
    return way if way.startswith("send") else f"send_{way}"


def celery_rounds(
    app: Celery,
    tasks: Sequence[Any],
    *,
    node: str,
    queues: Sequence[str],
    count: int,
    rounds: int,
    seed: int,
    results: bool = False,
    batch_sends: bool = False,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Per round: send ``count`` tasks while the worker's consumers are
    paused, then resume them and time the drain. ``score`` is the whole
    batch's rate, ``count / (send + drain)``. ``results``: sent with results
    stored (the backend's cost lands in the drain). ``batch_sends``: the
    same again through each batch way (``send_group``, ``send_all``,
    ``send_pipelined``; their drains are waited for, not recorded). A first,
    smaller round warms up the pool and the connections and is not kept."""
    senders, missing = batch_senders(app, results=results)
    if not batch_sends:
        senders = {"send": senders["send"]}
        missing = {}
    progress = Progress(app, node, queues)
    try:
        out = paused_rounds(
            progress, senders, tasks=tasks, count=count, rounds=rounds, seed=seed,
            timeout=timeout, forget=lambda sent: _forget(app, sent),
        )  # fmt: skip
    finally:
        progress.close()
    if missing:
        out["missing"] = {send_metric(name): why for name, why in missing.items()}
    return out


def paused_rounds(
    progress: Any,
    senders: dict[str, Callable[[Sequence[Job]], Any]],
    *,
    tasks: Sequence[Any],
    count: int,
    rounds: int,
    seed: int,
    timeout: float,
    forget: Callable[[list[Any]], None] | None = None,
) -> dict[str, Any]:
    """The round loop shared by every worker kind. ``progress`` pauses and
    resumes the worker and knows how many tasks it has finished; ``senders``
    maps a send way to ``f(jobs)`` (``send`` first: it alone gets ``drain``
    and ``score``)."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {"send": [], "drain": [], "score": []}
    out.update({send_metric(name): [] for name in senders if name != "send"})
    for index in range(rounds + 1):
        for name, sender in senders.items():
            batch = task_mix(tasks, count if index else max(count // 5, 10), rng)
            progress.pause()
            finished = progress.finished() + len(batch)
            send_s, sent = _timed(lambda batch=batch, sender=sender: sender(batch))
            started = time.perf_counter()
            progress.resume()
            progress.wait_finished(finished, timeout)
            drain_s = time.perf_counter() - started
            if forget is not None and sent:
                forget(list(sent))
            if not index:
                continue
            if name == "send":
                out["send"].append(len(batch) / send_s)
                out["drain"].append(len(batch) / drain_s)
                out["score"].append(len(batch) / (send_s + drain_s))
            else:
                out[send_metric(name)].append(len(batch) / send_s)
    return out


def dramatiq_rounds(
    actor: Any, *, url: str, processes: int, count: int, rounds: int, seed: int,
    timeout: float = 300.0,
) -> dict[str, Any]:  # fmt: skip
    """``send`` (``actor.send`` per task), ``drain`` and ``score`` for a
    Dramatiq worker, paused and counted through the bench's gate."""
    from .peers.gate import GateClient

    progress = GateProgress(GateClient(url, processes), actor.queue_name)
    try:
        return paused_rounds(
            progress,
            {"send": lambda jobs: [actor.send(x, y) for _, x, y in jobs] and None},
            tasks=(actor,), count=count, rounds=rounds, seed=seed, timeout=timeout,
        )  # fmt: skip
    finally:
        progress.close()


class GateProgress:
    """:class:`Progress` for a worker behind the bench's gate (Dramatiq)."""

    def __init__(self, client: Any, queue: str) -> None:
        self.client = client
        self.queue = queue

    def close(self) -> None:
        self.client.close()

    def pause(self) -> None:
        self.client.call("pause")

    def resume(self) -> None:
        self.client.call("resume")

    def finished(self) -> int:
        return self.client.done()

    def wait_finished(self, finished: int, timeout: float) -> None:
        """Like :meth:`Progress.wait_finished`: the broker's ready count
        first (no load on the worker), then the processes' own counts."""
        deadline = time.monotonic() + timeout
        channel = self.client.channel
        # 5 ms: pacing between two broker polls, not a wait for an event.
        wait_until(
            lambda: not queue_counts(channel, self.queue)[0],
            timeout=timeout,
            message="queue not drained in time",
            interval=0.005,
        )
        wait_until(
            self.client.done,
            done=lambda done: done >= finished,
            timeout=max(deadline - time.monotonic(), 0.0),
            message=f"Dramatiq worker did not finish {finished} in time",
            interval=0,
        )


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
