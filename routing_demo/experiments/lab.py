"""What every experiment runs on: a vhost of its own, workers started by
``celery multi`` with the experiment's settings, a client bound to the vhost,
and the two ledgers the experiments read.

- Each worker's own record: ``inspect stats`` totals (task name -> how many
  it accepted) and ``inspect active_queues`` (what it consumes).
- The broker's record: a passive ``queue_declare`` (messages ready and
  consumers, at this instant) and the management API's ``message_stats``
  (messages published into, delivered from and acknowledged on each queue;
  sampled by RabbitMQ every few seconds, so read by polling).

Nothing here connects or spawns on import.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from celery.signals import before_task_publish

from ..celery import client_app
from ..polling import wait_until
from ..rabbitmq import ManagementAPI, queue_counts
from ..tasks import add, mul, sub
from ..workers import WorkerGroup, WorkerNode

__all__ = [
    "ADD",
    "CLEAR_CACHE",
    "HOLD",
    "MUL",
    "RECORD",
    "SUB",
    "WORKER_OPTIONS",
    "Check",
    "Experiment",
    "Lab",
    "NodeSpec",
    "Outcome",
    "QueueCounters",
    "short",
    "wait_until",
]

#: Task names, as the worker registers them (the drivers send by name, so the
#: experiment tasks are never registered in the sending process).
ADD, SUB, MUL = add.name, sub.name, mul.name
CLEAR_CACHE = "routing_demo.experiments.tasks.clear_cache"
HOLD = "routing_demo.experiments.tasks.hold"
RECORD = "routing_demo.experiments.tasks.record"

#: Options for every experiment worker: one pool process (the experiments
#: count and order tasks, they do not measure speed) and no start-up
#: chatter between workers.
WORKER_OPTIONS: tuple[str, ...] = (
    "--concurrency=1",
    "--loglevel=INFO",
    "--without-mingle",
    "--without-gossip",
)

#: The environment variables Celery reads before any configuration: they
#: would redirect the experiment's client to another broker or backend.
_CELERY_ENV = ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERY_CONFIG_MODULE")


def short(task: str) -> str:
    """``routing_demo.tasks.add`` -> ``add``."""
    return task.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class NodeSpec:
    """A worker an experiment needs: base name, queues (``-Q``), and long
    ``celery worker`` options for this node only."""

    base: str
    queues: tuple[str, ...]
    options: tuple[str, ...] = ()


@dataclass
class QueueCounters:
    """One queue as the broker reports it."""

    ready: int  #: messages waiting (passive declare, at this instant)
    consumers: int  #: consumers attached (passive declare)
    published: int  #: messages routed into it (management ``message_stats.publish``)
    delivered: int  #: deliveries to consumers and gets (``deliver_get``)
    acked: int  #: acknowledgements (``ack``)


@dataclass
class Check:
    """One verdict of an experiment: what it expects, and whether it held."""

    claim: str
    passed: bool
    observed: str = ""


@dataclass
class Outcome:
    """What one run of an experiment found: the JSON report's unit."""

    name: str
    title: str
    config_module: str
    vhost: str
    #: node base name -> {"hostname", "queues", "ran": {task: count}}
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: queue name -> its counters
    queues: dict[str, QueueCounters] = field(default_factory=dict)
    #: experiment-specific observations (match tables, execution orders, ...)
    findings: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    sent: int = 0

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def tallies(self) -> dict[str, dict[str, int]]:
        """Node base name -> {task: times it ran there}."""
        return {base: worker["ran"] for base, worker in self.workers.items()}

    def check(self, claim: str, passed: bool, observed: object = "") -> None:
        self.checks.append(Check(claim, bool(passed), str(observed)))

    def check_published(self, claim: str, expected: Mapping[str, int]) -> None:
        """Check the broker's own count of messages published into each queue
        (the management API's counters) against ``expected``."""
        self.check(
            claim,
            all(self.queues[queue].published == count for queue, count in expected.items()),
            {queue: counters.published for queue, counters in self.queues.items()},
        )


@dataclass(frozen=True)
class Experiment:
    """A topology variant (its settings module) and the driver that shows it."""

    name: str
    title: str
    config_module: str
    #: Starts the workers it needs in the lab, sends its tasks, returns what it saw.
    drive: Callable[[Lab, Outcome, int], None]

    def new_outcome(self, lab: Lab) -> Outcome:
        return Outcome(self.name, self.title, self.config_module, lab.vhost)


@contextmanager
def _without_celery_env() -> Iterator[None]:
    """Celery lets these variables win over any app's own settings; the
    experiment names its broker, backend and settings module explicitly."""
    saved = {name: os.environ.pop(name) for name in _CELERY_ENV if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


class Lab:
    """One experiment's vhost, workers and client.

    ``broker_url`` must name the (already created) vhost. Use as a context
    manager: the workers are stopped (``celery multi stopwait``) and the
    client closed on exit; the vhost itself belongs to the caller.
    """

    def __init__(
        self,
        *,
        config_module: str,
        broker_url: str,
        backend_url: str,
        management: ManagementAPI,
        run_dir: Path,
        timeout: float = 60.0,
        suffix: str | None = None,
    ) -> None:
        self.config_module = config_module
        self.broker_url = broker_url
        self.backend_url = backend_url
        self.management = management
        #: Absolute: detached workers do not run in this directory (the gate
        #: files of the priority experiment live here too).
        self.run_dir = Path(run_dir).resolve()
        self.timeout = timeout
        #: Makes node names unique, so two runs on one host never share one.
        self.suffix = suffix if suffix is not None else f"-{uuid.uuid4().hex[:6]}"
        self.vhost = unquote(urlsplit(broker_url).path[1:]) or "/"
        self.specs: dict[str, NodeSpec] = {}
        self.group: WorkerGroup | None = None
        self._env_guard = _without_celery_env()
        self._env_guard.__enter__()
        self.client = client_app(
            broker_url,
            backend_url,
            name=f"routing_demo-experiment-{self.suffix}",
            config_module=config_module,
        )
        #: (task, exchange, routing key) -> messages: where Celery published.
        self.published: Counter[tuple[str, str, str]] = Counter()
        before_task_publish.connect(self._on_publish, weak=False)

    def _on_publish(
        self, sender: str, exchange: object = "", routing_key: str = "", **_: Any
    ) -> None:
        self.published[short(sender), getattr(exchange, "name", exchange) or "", routing_key] += 1

    def publish_summary(self) -> dict[str, int]:
        """``add -> exchange 'routing_demo' key 'add'`` -> how many such publishes."""
        return {
            f"{task} -> exchange {exchange!r} key {key!r}": count
            for (task, exchange, key), count in sorted(self.published.items())
        }

    # --- workers ----------------------------------------------------------------
    def start(self, specs: Sequence[NodeSpec]) -> None:
        """Start one ``celery worker`` per spec and wait until each answers a ping."""
        self.specs = {spec.base: spec for spec in specs}
        nodes = [
            WorkerNode(self.node_name(spec.base), "-Q", ",".join(spec.queues)) for spec in specs
        ]
        self.group = WorkerGroup(
            nodes,
            self.run_dir,
            env={
                "CELERY_CONFIG_MODULE": self.config_module,
                "CELERY_BROKER_URL": self.broker_url,
                "CELERY_RESULT_BACKEND": self.backend_url,
            },
            worker_options=WORKER_OPTIONS,
            node_options={
                self.node_name(spec.base): spec.options for spec in specs if spec.options
            },
        )
        self.group.start()
        try:
            self.group.wait_ready(self.client, timeout=self.timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Warm-stop the workers and wait until every one is gone."""
        if self.group is None:
            return
        group, self.group = self.group, None
        group.stop(timeout=self.timeout)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            before_task_publish.disconnect(self._on_publish)
            self.client.close()
            self._env_guard.__exit__(None, None, None)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def node_name(self, base: str) -> str:
        return f"{base}{self.suffix}"

    def hostname(self, base: str) -> str:
        """The node name Celery reports for ``base`` (``add-1a2b3c@host``)."""
        return WorkerNode(self.node_name(base), "-Q", "").hostname

    def base_of(self, hostname: str | None) -> str | None:
        """The base name of a reported node name, ``None`` if not ours."""
        return next((base for base in self.specs if self.hostname(base) == hostname), None)

    def log(self, base: str) -> str:
        return (self.run_dir / f"{self.node_name(base)}.log").read_text()

    # --- the workers' own record -------------------------------------------------
    def _inspect(self, bases: Iterable[str] | None = None) -> Any:
        hosts = [self.hostname(base) for base in (bases or self.specs)]
        return self.client.control.inspect(hosts, timeout=3.0, limit=len(hosts))

    def task_totals(self) -> dict[str, dict[str, int]]:
        """Node base name -> {task name: tasks it accepted since it started}."""
        replies = self._inspect().stats() or {}
        return {
            base: dict(replies[self.hostname(base)].get("total", {}))
            for base in self.specs
            if self.hostname(base) in replies
        }

    def wait_for_totals(self, done: Callable[[dict[str, dict[str, int]]], bool]) -> dict:
        """Poll ``task_totals`` until ``done`` accepts them."""
        return wait_until(
            self.task_totals, done=done, timeout=self.timeout, message="worker task totals"
        )

    def wait_for_count(self, total: int) -> dict[str, dict[str, int]]:
        """Poll until the workers together accepted ``total`` tasks."""
        return self.wait_for_totals(
            lambda totals: (
                sum(sum(ran.values()) for ran in totals.values()) >= total
                and len(totals) == len(self.specs)
            )
        )

    def active_queues(self) -> dict[str, list[str]]:
        """Node base name -> names of the queues it consumes, as it says."""
        replies = self._inspect().active_queues() or {}
        return {
            base: sorted(queue["name"] for queue in replies.get(self.hostname(base), []))
            for base in self.specs
        }

    def add_consumer(self, queue: str, base: str) -> None:
        """Make ``base`` consume ``queue``; returns once it does."""
        self._change_consumer("add_consumer", queue, base, consuming=True)

    def cancel_consumer(self, queue: str, base: str) -> None:
        """Make ``base`` stop consuming ``queue``; returns once it has."""
        self._change_consumer("cancel_consumer", queue, base, consuming=False)

    def _change_consumer(self, command: str, queue: str, base: str, *, consuming: bool) -> None:
        """Send the control command, then wait for its effect.

        The worker replies before it acts (both commands are scheduled with
        ``call_soon``), so a reply alone does not mean a task sent next goes
        to the new consumer: poll the worker's own ``active_queues``.
        """
        replies = getattr(self.client.control, command)(
            queue, destination=[self.hostname(base)], reply=True, timeout=self.timeout
        )
        if not replies:
            raise TimeoutError(f"{self.hostname(base)} did not confirm {command} {queue}")
        wait_until(
            self.active_queues,
            done=lambda consumed: (queue in consumed.get(base, [])) == consuming,
            timeout=self.timeout,
            message=f"{command} {queue} on {self.hostname(base)}",
        )

    def tally(self, outcome: Outcome) -> None:
        """Record each worker's queues and task totals in ``outcome``."""
        totals = self.task_totals()
        consumed = self.active_queues()
        for base, spec in self.specs.items():
            outcome.workers[base] = {
                "hostname": self.hostname(base),
                "queues": consumed.get(base) or list(spec.queues),
                "ran": {short(name): count for name, count in sorted(totals.get(base, {}).items())},
            }

    # --- the broker's record -----------------------------------------------------
    def depth(self, queue: str) -> tuple[int, int]:
        """(messages ready, consumers) of ``queue``, by a passive declare."""
        with self.client.connection_for_write() as connection:
            return queue_counts(connection, queue)

    def wait_for_depth(self, queue: str, ready: int) -> int:
        """Poll until ``queue`` holds exactly ``ready`` messages."""
        return wait_until(
            lambda: self.depth(queue)[0],
            done=lambda seen: seen == ready,
            timeout=self.timeout,
            message=f"{ready} messages ready in {queue}",
        )

    def _stats(self) -> dict[str, dict[str, Any]]:
        return {queue["name"]: queue for queue in self.management.queues(self.vhost)}

    def broker_counters(
        self,
        queues: Iterable[str],
        *,
        published: Mapping[str, int] | None = None,
        delivered: Mapping[str, int] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, QueueCounters]:
        """Counters of ``queues``, once the management API's sampled
        ``message_stats`` show at least the ``published`` and ``delivered``
        counts given (RabbitMQ refreshes them every 5 s by default). After
        ``timeout`` the last sample is returned as it is: the experiment's
        checks then show the difference."""
        names = list(queues)
        published = dict(published or {})
        delivered = dict(delivered or {})

        def settled(stats: dict[str, dict[str, Any]]) -> bool:
            def stat(name: str, key: str) -> int:
                return stats.get(name, {}).get("message_stats", {}).get(key, 0)

            return all(stat(q, "publish") >= n for q, n in published.items()) and all(
                stat(q, "deliver_get") >= n for q, n in delivered.items()
            )

        try:
            stats = wait_until(
                self._stats, done=settled, timeout=timeout, message="broker message_stats"
            )
        except TimeoutError:
            stats = self._stats()
        counters = {}
        for name in names:
            message_stats = stats.get(name, {}).get("message_stats", {})
            ready, consumers = self.depth(name) if name in stats else (0, 0)
            counters[name] = QueueCounters(
                ready=ready,
                consumers=consumers,
                published=message_stats.get("publish", 0),
                delivered=message_stats.get("deliver_get", 0),
                acked=message_stats.get("ack", 0),
            )
        return counters

    def peek(self, queue: str, count: int = 10) -> list[dict[str, Any]]:
        """Up to ``count`` messages of ``queue``, read through the management
        API and put back (``ack_requeue_true``): what the UI's "Get messages"
        shows, without consuming anything."""
        return self.management.peek(self.vhost, queue, count)
