"""A real ``celery -A <app> worker`` process, as a pytest-celery worker.

Each worker consumes what its ``-Q``/``-X`` option selects (one worker per
queue, from the app's ``routes_worker_selections``) and runs under the node
name pytest-celery's ``CeleryTestWorker.hostname()`` reports:
``<worker_name>@<id[:12]>``. The random id keeps two test sessions on one
broker from sharing a node name, and stays the same across ``restart()``, as
a container's id does.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import celery
from celery import Celery

from ..topology import TASK_QUEUES
from ..workers import WorkerNode, wait_pidbox_released
from .defaults import READY_TIMEOUT, WORKER_APP
from .process import LocalProcessContainer

__all__ = ["PING_TASKS_MODULE", "LocalWorkerContainer"]

#: pytest-celery's own tasks (``ping`` among them): ``CeleryTestSetup.ready(ping=True)``
#: sends its ping to each worker's ``worker_queue()``, so every worker loads them.
PING_TASKS_MODULE = "pytest_celery.vendors.worker.tasks"


class LocalWorkerContainer(LocalProcessContainer):
    """``celery -A <app_name> worker`` for one queue selection.

    ``app_name`` is what ``-A`` loads (routing_demo unless given); ``app``,
    the same app loaded here, says which queues it declares (routing_demo's
    topology without one). ``queue_option`` is ``-Q`` (consume these queues) or ``-X`` (every
    declared queue but these), ``queue_names`` a comma-separated list.
    ``include`` names extra task modules (``-I``), importable through
    ``pythonpath``. Mingle and gossip are off: no test here needs workers to
    know each other, and both cost start-up time.
    """

    def __init__(
        self,
        *,
        worker_name: str,
        queue_option: str,
        queue_names: str,
        broker_url: str,
        result_backend: str | None,
        log_dir: Path,
        include: Iterable[str] = (),
        pythonpath: Iterable[Path | str] = (),
        concurrency: int = 1,
        log_level: str = "INFO",
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        ready_timeout: float = READY_TIMEOUT,
        app_name: str = WORKER_APP,
        app: Celery | None = None,
    ) -> None:
        if queue_option not in ("-Q", "-X"):
            raise ValueError(f"queue_option must be -Q or -X, not {queue_option!r}")
        self.node = WorkerNode(worker_name, queue_option, queue_names)
        self.app = app
        self.app_name = app_name
        if not self.node.consumed_queues(app):
            raise ValueError(f"{queue_option} {queue_names} leaves {worker_name} no declared queue")
        self.broker_url = broker_url
        self._log_level = log_level
        worker_env = {
            **(env or {}),
            "CELERY_BROKER_URL": broker_url,
            "PYTHONUNBUFFERED": "1",
        }
        if result_backend:
            worker_env["CELERY_RESULT_BACKEND"] = result_backend
        paths = [str(path) for path in pythonpath]
        if paths:
            inherited = os.environ.get("PYTHONPATH")
            worker_env["PYTHONPATH"] = os.pathsep.join(paths + ([inherited] if inherited else []))
        super().__init__(
            [],
            name=f"worker-{worker_name}",
            log_path=Path(log_dir) / f"worker-{worker_name}.log",
            env=worker_env,
            ready_timeout=ready_timeout,
        )
        self.argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            app_name,
            "worker",
            f"--hostname={self.hostname}",
            queue_option,
            queue_names,
            f"--loglevel={log_level}",
            f"--concurrency={concurrency}",
            "--without-mingle",
            "--without-gossip",
            f"--include={','.join([PING_TASKS_MODULE, *include])}",
            *extra_args,
        ]
        self._ready_prompt = f"{self.hostname} ready."

    @classmethod
    def for_node(cls, node: WorkerNode, **options: object) -> LocalWorkerContainer:
        """The worker for one of ``routing_demo.workers.worker_nodes(app=…)``."""
        return cls(
            worker_name=node.name,
            queue_option=node.queue_option,
            queue_names=node.queue_names,
            **options,  # type: ignore[arg-type]
        )

    @property
    def hostname(self) -> str:
        """The node name, as ``CeleryTestWorker.hostname()`` builds it."""
        return f"{self.worker_name()}@{self.id[:12]}"

    # --- what CeleryTestWorker asks its container ------------------------------
    def version(self) -> str:
        """The Celery the worker runs: this interpreter's."""
        return celery.__version__

    def log_level(self) -> str:
        return self._log_level

    def worker_name(self) -> str:
        return self.node.name

    def worker_queue(self) -> str:
        """The first queue the worker consumes; pytest-celery pings it there."""
        return self.consumed_queues()[0]

    def consumed_queues(self) -> list[str]:
        """Every declared queue (``task_queues``) this worker's selection leaves it."""
        return self.node.consumed_queues(self.app)

    def declared_queues(self) -> list[str]:
        """The queues the worker's app declares (``app.amqp.queues``)."""
        if self.app is None:
            return [queue.name for queue in TASK_QUEUES]
        return list(self.app.amqp.queues)

    # --- life cycle ----------------------------------------------------------
    def before_start(self) -> None:
        """After a kill, wait until the broker has dropped the old run's
        exclusive ``<node>.celery.pidbox`` queue: a worker that restarts under
        the same name sooner fails with ``RESOURCE_LOCKED``."""
        if self.runs:
            self.wait_pidbox_released()

    def wait_pidbox_released(self, timeout: float = 30.0) -> None:
        """Wait until the broker no longer holds this node's pidbox queue for
        a former run (see ``routing_demo.workers.wait_pidbox_released``)."""
        wait_pidbox_released(self.broker_url, self.hostname, timeout=timeout)
