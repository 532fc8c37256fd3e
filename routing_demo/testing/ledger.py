"""A ledger of task executions in Redis: which task ids ran, how often, with
what result. Fault tests compare it with the ids they sent.

Workers load this module with ``--include=routing_demo.testing.ledger``;
with ``ROUTING_DEMO_LEDGER_URL`` (a Redis URL) and ``ROUTING_DEMO_LEDGER_KEY``
(a key prefix, one per test run) in their environment, every task that
finishes, in whichever pool process runs it, appends its record there from
Celery's ``task_postrun`` signal. No task module changes: the tasks under
test are the project's own. Without the variables the receiver does
nothing.

Delivery is *at least once* (late acks): a task whose worker dies after it
finished but before the broker saw the acknowledgement runs again. The
ledger counts those runs instead of hiding them:

- **lost**: sent (the publish returned), never finished;
- **duplicated**: finished more than once (the extra runs are counted too);
- **unconfirmed**: finished, though its publish raised (the broker had the
  message when the connection dropped before its confirm arrived).

Importing the module connects nothing: the Redis client is made on the first
record, once per process (pool processes are forked).
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.signals import task_postrun
from kombu.exceptions import OperationalError
from redis import Redis

from ..polling import wait_until
from ..tasks import add, sub

__all__ = [
    "KEY_ENV",
    "URL_ENV",
    "Execution",
    "Ledger",
    "LedgerReport",
    "Producer",
    "record_execution",
]

#: Redis URL of the ledger, read by the worker-side receiver.
URL_ENV = "ROUTING_DEMO_LEDGER_URL"
#: Key prefix of one test run's ledger.
KEY_ENV = "ROUTING_DEMO_LEDGER_KEY"

#: How often ``Ledger.wait_for`` reads the ledger again.
_POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Execution:
    """One finished run of a task, as the worker recorded it."""

    task_id: str
    task: str
    args: list[Any]
    state: str
    retval: Any
    hostname: str
    pid: int


@dataclass(frozen=True)
class LedgerReport:
    """Ids sent against ids run, and what differs."""

    sent: int
    ran: int
    executions: int
    lost: frozenset[str]
    duplicated: dict[str, int] = field(default_factory=dict)
    unconfirmed: frozenset[str] = frozenset()
    refused: int = 0

    @property
    def extra_runs(self) -> int:
        """Executions beyond one per id: what at-least-once delivery cost."""
        return sum(count - 1 for count in self.duplicated.values())

    def row(self) -> str:
        """The fault table's (docs/reliability.md) ``sent / ran / lost / duplicated`` cells."""
        return f"{self.sent} | {self.ran} | {len(self.lost)} | {len(self.duplicated)}"

    def __str__(self) -> str:
        text = (
            f"sent={self.sent} ran={self.ran} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} (extra runs={self.extra_runs}, "
            f"executions={self.executions})"
        )
        if self.refused or self.unconfirmed:
            text += f" publish raised={self.refused} (of which ran={len(self.unconfirmed)})"
        return text


class Ledger:
    """One test run's ledger: ``<key>:runs`` (id -> finished runs, a hash) and
    ``<key>:log`` (one JSON record per run, a list)."""

    def __init__(self, url: str, key: str | None = None) -> None:
        self.url = url
        self.key = key or f"routing_demo:ledger:{uuid.uuid4().hex}"
        self.redis = Redis.from_url(url, decode_responses=True)
        #: Ids whose publish returned, in sending order.
        self.sent_ids: list[str] = []
        #: Ids whose publish raised: the sender knows they were not sent.
        self.refused_ids: list[str] = []

    @property
    def runs_key(self) -> str:
        return f"{self.key}:runs"

    @property
    def log_key(self) -> str:
        return f"{self.key}:log"

    @property
    def env(self) -> dict[str, str]:
        """What a worker's environment needs to record into this ledger."""
        return {URL_ENV: self.url, KEY_ENV: self.key}

    # --- the sender's side ---------------------------------------------------
    def sent(self, task_ids: Iterable[str]) -> None:
        self.sent_ids.extend(task_ids)

    def refused(self, task_ids: Iterable[str]) -> None:
        self.refused_ids.extend(task_ids)

    # --- what the workers recorded -------------------------------------------
    def runs(self) -> Counter[str]:
        """Task id -> how many times it finished."""
        counts = self.redis.hgetall(self.runs_key)
        return Counter({task_id: int(n) for task_id, n in counts.items()})

    def executions(self) -> list[Execution]:
        """Every finished run, in the order the workers recorded them."""
        return [Execution(**json.loads(raw)) for raw in self.redis.lrange(self.log_key, 0, -1)]

    def report(self) -> LedgerReport:
        runs = self.runs()
        sent = set(self.sent_ids)
        return LedgerReport(
            sent=len(sent),
            ran=len(sent & runs.keys()),
            executions=sum(runs.values()),
            lost=frozenset(sent - runs.keys()),
            duplicated={task_id: n for task_id, n in runs.items() if n > 1},
            unconfirmed=frozenset(set(self.refused_ids) & runs.keys()),
            refused=len(self.refused_ids),
        )

    def wait_for(self, count: int | None = None, *, timeout: float) -> LedgerReport:
        """Poll until every sent id (or ``count`` of them) has run, or until
        ``timeout``; return the report either way: the test asserts on it."""
        wanted = len(set(self.sent_ids)) if count is None else count
        try:
            return wait_until(
                self.report,
                done=lambda report: report.ran >= wanted,
                timeout=timeout,
                message=f"{wanted} tasks ran",
                interval=_POLL_INTERVAL,
            )
        except TimeoutError:
            return self.report()

    def wrong_results(self) -> list[Execution]:
        """Runs of ``add``/``sub`` (and tasks ending in ``_then_add``) whose
        result is not what their arguments give: every run is checked,
        duplicates included."""
        wrong = []
        for run in self.executions():
            name = run.task.rsplit(".", 1)[-1]
            if name == "add" or name.endswith("_then_add"):
                expected = run.args[-2] + run.args[-1]
            elif name == "sub":
                expected = run.args[0] - run.args[1]
            else:
                continue
            if run.state != "SUCCESS" or run.retval != expected:
                wrong.append(run)
        return wrong

    def clear(self) -> None:
        self.redis.delete(self.runs_key, self.log_key)
        self.sent_ids.clear()
        self.refused_ids.clear()

    def close(self) -> None:
        self.redis.close()


# --- the worker's side -----------------------------------------------------------
_client: tuple[int, Redis] | None = None


def _redis(url: str) -> Redis:
    """One client per process: a forked pool process makes its own."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), Redis.from_url(url, decode_responses=True))
    return _client[1]


@task_postrun.connect(weak=False)
def record_execution(
    sender: Any = None,
    task_id: str | None = None,
    task: Any = None,
    args: Any = None,
    retval: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    """Count one finished run of ``task_id`` and log what it returned."""
    url, key = os.environ.get(URL_ENV), os.environ.get(KEY_ENV)
    if not (url and key and task_id):
        return
    record = {
        "task_id": task_id,
        "task": getattr(task, "name", str(sender)),
        "args": list(args or ()),
        "state": state or "",
        "retval": retval if isinstance(retval, (int, float, str, type(None))) else repr(retval),
        "hostname": getattr(getattr(task, "request", None), "hostname", None) or "",
        "pid": os.getpid(),
    }
    pipe = _redis(url).pipeline(transaction=True)
    pipe.hincrby(f"{key}:runs", task_id, 1)
    pipe.rpush(f"{key}:log", json.dumps(record))
    pipe.execute()


class Producer(threading.Thread):
    """Sends ``add``/``sub`` alternately from a thread of its own; each
    publish returns (its id goes to ``ledger.sent``) or raises
    (``ledger.refused``): the sender knows the fate of each. After
    ``pause_at`` tasks it waits (up to ``resume_timeout`` seconds) for
    ``resume``, so the rest of the stream is published through whatever the
    test does to the broker meanwhile."""

    def __init__(
        self,
        app: Celery,
        ledger: Ledger,
        count: int,
        pause_at: int,
        *,
        resume_timeout: float = 180.0,
    ) -> None:
        super().__init__(name="producer", daemon=True)
        self.app, self.ledger, self.count, self.pause_at = app, ledger, count, pause_at
        self.resume_timeout = resume_timeout
        self.paused = threading.Event()
        self.resume = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        for index in range(self.count):
            if index == self.pause_at:
                self.paused.set()
                self.resume.wait(self.resume_timeout)
            task_id = str(uuid.uuid4())
            task = add if index % 2 == 0 else sub
            try:
                self.app.send_task(task.name, (index, 1), task_id=task_id, ignore_result=True)
            except OperationalError as exc:
                self.ledger.refused([task_id])
                self.errors.append(repr(exc))
            else:
                self.ledger.sent([task_id])
