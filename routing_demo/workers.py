"""One worker per queue, started and stopped through ``celery multi``.

``celery multi`` already daemonizes nodes, writes pidfiles and log files and
waits for a warm shutdown (``stopwait``); this module only turns an app's
worker selections (its ``routes_worker_selections`` setting, routing_demo's
from its topology) into its command line, and waits until every node answers
a ``ping`` before anyone sends work.

Before starting a node it waits until the broker has let go of the node's
``<node>.celery.pidbox`` queue. That queue is exclusive to the connection
that declared it; after a worker is killed, RabbitMQ drops it only once it
has noticed the dead connection. A worker restarted under the same name
sooner fails to declare it with ``RESOURCE_LOCKED``: it exits, or with
``broker_channel_error_retry`` reconnects in a tight loop of errors until
the queue is free.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from urllib.parse import urlsplit

from amqp.exceptions import ConnectionError as AMQPConnectionError
from amqp.exceptions import NotFound, ResourceLocked
from celery import Celery
from celery.utils.nodenames import gethostname, nodename
from kombu import Connection
from kombu.exceptions import OperationalError

from .polling import pid_alive, wait_until
from .security import broker_password_from_file
from .topology import TASK_QUEUES, worker_selections

__all__ = [
    "SELECTIONS_SETTING",
    "PidboxLocked",
    "WorkerGroup",
    "WorkerNode",
    "declared_selections",
    "node_option",
    "parse_selection",
    "pid_alive",
    "wait_pidbox_released",
    "worker_nodes",
]

logger = logging.getLogger(__name__)

#: Broker URL schemes of RabbitMQ, whose pidbox queues are exclusive.
_AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "pyamqps", "librabbitmq"})

#: The app setting that says which worker consumes which queue: node base
#: name -> its ``celery worker`` queue option, ``{"add": "-Q add", "default":
#: "-X add,sub"}``. Celery itself has no such setting; the routing tools read
#: it, and without it ask the live workers.
SELECTIONS_SETTING = "routes_worker_selections"

#: ``celery worker`` spellings of the two queue options, by their short form.
_QUEUE_OPTIONS = {"-Q": "-Q", "--queues": "-Q", "-X": "-X", "--exclude-queues": "-X"}

#: Seconds ``WorkerGroup.start`` waits for a former run's pidbox queue to go.
PIDBOX_TIMEOUT = 30.0


class PidboxLocked(RuntimeError):
    """The broker still holds a node's pidbox queue for another connection."""


@dataclass(frozen=True)
class WorkerNode:
    """A worker node: its base name (``add``) and queue option (``-Q add``)."""

    name: str
    queue_option: str
    queue_names: str

    @property
    def hostname(self) -> str:
        """The node name Celery reports, as ``celery multi`` builds it: ``add@host``."""
        return nodename(self.name, gethostname())

    def consumed_queues(self, app: Celery | None = None) -> list[str]:
        """The queues ``app`` declares (``app.amqp.queues``; routing_demo's
        task queues without an app) that this node's ``-Q``/``-X`` selection
        leaves it, in declaration order."""
        names = set(self.queue_names.split(","))
        include = self.queue_option == "-Q"
        declared = list(app.amqp.queues) if app is not None else [q.name for q in TASK_QUEUES]
        return [name for name in declared if (name in names) == include]


def parse_selection(selection: str | tuple[str, str] | list[str]) -> tuple[str, str]:
    """``"-Q add"``, ``"--exclude-queues=add,sub"`` or ``("-X", "add,sub")``
    as ``(option, names)`` with the short option; ``ValueError`` otherwise."""
    if isinstance(selection, str):
        option, _, names = selection.strip().replace("=", " ", 1).partition(" ")
    else:
        option, names = selection
    option, names = option.strip(), ",".join(n.strip() for n in names.split(",") if n.strip())
    if option not in _QUEUE_OPTIONS or not names:
        raise ValueError(
            f"{selection!r}: a worker selection is -Q or -X and queue names, e.g. '-Q add'"
        )
    return _QUEUE_OPTIONS[option], names


def declared_selections(app: Celery) -> dict[str, tuple[str, str]] | None:
    """The app's ``routes_worker_selections`` as node base name -> (option,
    names), or ``None`` when it declares none. ``ValueError`` on a selection
    that is not a ``-Q``/``-X`` option."""
    declared = app.conf.get(SELECTIONS_SETTING)
    if not declared:
        return None
    return {str(base): parse_selection(selection) for base, selection in declared.items()}


def worker_nodes(suffix: str = "", *, app: Celery | None = None) -> list[WorkerNode]:
    """One node per worker selection: ``app``'s ``routes_worker_selections``
    (none declared: no node), routing_demo's own topology without an app.
    ``suffix`` makes node names unique (two test sessions on one host must
    not share ``add@host``)."""
    selections = worker_selections() if app is None else declared_selections(app) or {}
    return [
        WorkerNode(f"{base}{suffix}", option, names) for base, (option, names) in selections.items()
    ]


class WorkerGroup:
    """Nodes that ``celery multi`` starts and stops together.

    Pidfiles and logs go to ``run_dir`` as ``<node>.pid`` and ``<node>.log``;
    ``env`` (e.g. ``CELERY_BROKER_URL``) is passed to every node. Every node
    runs ``celery -A <app_name> worker``; ``broker_url``, when given, is where
    the start waits for former pidbox queues to go (else the nodes'
    ``CELERY_BROKER_URL`` or routing_demo's configuration module).

    Each node keeps its revoked task ids in ``<node>.state`` (``--statedb``),
    written as each revoke arrives (``routing_demo.revokes``): a node
    restarted under its name, even after a SIGKILL, still discards what was
    revoked. ``events`` makes the nodes send task events (``-E``), which
    followers of a task's progress read: off by default, as in Celery, since
    the three events of each task are three more publishes in the worker's
    main process (about 45% of the throughput of a trivial task, benchmark
    ``celery/events-on``). ``celery control enable_events`` turns them on live.
    """

    def __init__(
        self,
        nodes: Sequence[WorkerNode],
        run_dir: Path,
        *,
        env: Mapping[str, str] | None = None,
        worker_options: Sequence[str] = ("--concurrency=1", "--loglevel=INFO"),
        node_options: Mapping[str, Sequence[str]] | None = None,
        events: bool = False,
        app_name: str = "routing_demo",
        broker_url: str | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self.app_name = app_name
        self._broker_url = broker_url
        self.run_dir = Path(run_dir)
        self.env = {**os.environ, **(env or {})}
        self.worker_options = list(worker_options)
        #: Node name -> long worker options for that node only
        #: (``{"add": ["--concurrency=4", "--events"]}``).
        self.node_options = {name: list(options) for name, options in (node_options or {}).items()}
        self.events = events

    def log_path(self, node: WorkerNode) -> Path:
        return self.run_dir / f"{node.name}.log"

    def pid_path(self, node: WorkerNode) -> Path:
        return self.run_dir / f"{node.name}.pid"

    def state_path(self, node: WorkerNode) -> Path:
        """The node's ``--statedb`` (Celery's ``shelve`` may add a suffix,
        e.g. ``.dat`` and ``.dir`` with ``dbm.dumb``)."""
        return self.run_dir / f"{node.name}.state"

    def group_options(self) -> list[str]:
        """What every node gets whatever ``worker_options`` say: its state
        file and, if asked for, task events."""
        return [f"--statedb={self.run_dir}/%n.state", *(["--events"] if self.events else [])]

    def multi_argv(self, command: str) -> list[str]:
        """The ``celery multi`` command line; per-node options use multi's
        ``-Q:<node>`` syntax so one call starts every node."""
        per_node = [
            arg
            for node in self.nodes
            for arg in (f"{node.queue_option}:{node.name}", node.queue_names)
        ]
        return [
            sys.executable,
            "-m",
            "celery",
            "multi",
            command,
            *(node.name for node in self.nodes),
            "-A",
            self.app_name,
            *per_node,
            f"--pidfile={self.run_dir}/%n.pid",
            f"--logfile={self.run_dir}/%n.log",
            *self.group_options(),
            *self.worker_options,
            *(
                node_option(option, name)
                for name, options in self.node_options.items()
                for option in options
            ),
        ]

    def _multi(self, command: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        completed = subprocess.run(
            self.multi_argv(command),
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"celery multi {command} failed ({completed.returncode}):\n"
                f"{completed.stdout}{completed.stderr}"
            )

    def broker_url(self) -> str:
        """The broker the nodes connect to: ``CELERY_BROKER_URL`` in their
        environment, else their configuration module's ``broker_url``."""
        if self._broker_url:
            return self._broker_url
        url = self.env.get("CELERY_BROKER_URL")
        if url:
            return url
        from .celery import DEFAULT_CONFIG_MODULE

        config = import_module(self.env.get("CELERY_CONFIG_MODULE", DEFAULT_CONFIG_MODULE))
        return config.broker_url

    def start(self, *, pidbox_timeout: float = PIDBOX_TIMEOUT) -> None:
        """Start every node in the background (``celery multi start``).

        First wait (up to ``pidbox_timeout`` seconds) until the broker holds
        no pidbox queue for a node that is not running: a node killed a
        moment ago would otherwise meet its own former queue. Raises
        ``PidboxLocked`` if the queue stays held (then another live worker
        uses the node name).
        """
        running = self.running()
        stopped = [node for node in self.nodes if node.name not in running]
        if stopped:
            url = self.broker_url()
            password = broker_password_from_file(url, self.env)
            for node in stopped:
                wait_pidbox_released(url, node.hostname, timeout=pidbox_timeout, password=password)
        self._multi("start")

    def stop(self, timeout: float = 60.0) -> None:
        """Warm-stop every node and wait until its process is gone: running
        tasks finish first.

        ``celery multi stop`` sends the TERM; the wait polls the pidfiles'
        processes every 50 ms (``celery multi stopwait`` looks only every 2 s,
        which adds seconds to every test stack). Whatever is still running at
        the deadline gets ``stopwait``'s own, unhurried treatment.
        """
        # Read the PIDs first: a worker deletes its pidfile early in its
        # shutdown, well before its process (and its pool) is gone.
        stopping = self.running()
        self._multi("stop")
        try:
            wait_until(
                lambda: not any(pid_alive(pid) for pid in stopping.values()),
                timeout=timeout,
                message="workers still running",
            )
        except TimeoutError:
            self._multi("stopwait")

    def wait_ready(self, app: Celery, timeout: float = 60.0) -> None:
        """Return once every node answers a broadcast ``ping``.

        A node answers only after its consumer is running, so a task sent
        afterwards cannot sit unconsumed behind a starting worker.
        """
        waiting = {node.hostname for node in self.nodes}

        def all_answered() -> bool:
            for reply in app.control.ping(destination=sorted(waiting), timeout=1.0):
                waiting.difference_update(reply)
            return not waiting

        try:
            # The ping itself waits up to a second for replies: no pause between asks.
            wait_until(all_answered, timeout=timeout, message="workers not ready", interval=0)
        except TimeoutError:
            logs = ", ".join(str(self.log_path(node)) for node in self.nodes)
            raise TimeoutError(
                f"workers not ready after {timeout:.0f}s: {sorted(waiting)} (logs: {logs})"
            ) from None

    def pids(self) -> dict[str, int | None]:
        """Node name -> the PID its pidfile names, or ``None`` without a pidfile."""
        found: dict[str, int | None] = {}
        for node in self.nodes:
            try:
                found[node.name] = int(self.pid_path(node).read_text().strip())
            except (FileNotFoundError, ValueError):
                found[node.name] = None
        return found

    def running(self) -> dict[str, int]:
        """Node name -> PID, for the nodes whose pidfile names a live process."""
        return {name: pid for name, pid in self.pids().items() if pid and pid_alive(pid)}


def wait_pidbox_released(
    broker_url: str,
    hostname: str,
    *,
    timeout: float = PIDBOX_TIMEOUT,
    interval: float = 0.2,
    password: str | None = None,
) -> bool:
    """Wait until no other connection holds ``<hostname>.celery.pidbox``.

    A passive declare answers ``NOT_FOUND`` (free), ``RESOURCE_LOCKED`` (still
    exclusive to another connection: look again) or succeeds (left over but
    free). Returns True once free, False when the broker cannot be reached
    (a broker that is down holds nothing; the worker waits for it itself),
    and raises ``PidboxLocked`` after ``timeout`` seconds. ``password`` is for
    a URL without one (the password came from a file).
    """
    url = broker_url.split(";")[0].strip()
    scheme = urlsplit(url).scheme.lower()
    if scheme not in _AMQP_SCHEMES:
        return False  # not RabbitMQ: no exclusive pidbox queue to wait for
    pidbox = f"{hostname}.celery.pidbox"
    waited = False
    try:
        # py-amqp whatever the workers use: the same AMQP wire, and the
        # exceptions caught here are py-amqp's.
        transport = "pyamqp" if scheme == "librabbitmq" else None
        with Connection(
            url, transport=transport, password=password, connect_timeout=5
        ) as connection:
            connection.ensure_connection(max_retries=1)

            def free() -> bool:
                nonlocal waited
                channel = connection.channel()
                try:
                    channel.queue_declare(queue=pidbox, passive=True)
                except NotFound:
                    return True
                except ResourceLocked:
                    if not waited:
                        logger.warning(
                            "%s is held by another connection (a worker killed a moment "
                            "ago?); waiting up to %.0fs for the broker to drop it",
                            pidbox,
                            timeout,
                        )
                        waited = True
                    return False
                channel.close()
                return True

            try:
                return wait_until(free, timeout=timeout, message=pidbox, interval=interval)
            except TimeoutError:
                raise PidboxLocked(
                    f"the broker still holds {pidbox} for another connection after "
                    f"{timeout:.0f}s: a live worker named {hostname}, or a dead one "
                    "whose connection the broker has not dropped yet"
                ) from None
    except (OperationalError, AMQPConnectionError, OSError):
        return False


def node_option(option: str, node: str) -> str:
    """A long worker option for one node only, in ``celery multi``'s namespace
    syntax: ``--concurrency=4`` for ``add`` becomes ``--concurrency:add=4``."""
    if not option.startswith("--"):
        raise ValueError(f"per-node options must be long options (--name[=value]): {option!r}")
    name, sep, value = option.partition("=")
    return f"{name}:{node}{sep}{value}"
