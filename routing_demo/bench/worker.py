"""One ``celery worker`` process per benchmarked configuration.

Started with every option spelled out (pool, concurrency, prefetch, queues,
no mingle/gossip/heartbeat so start-up does not wait on other nodes) in its
own session, so that stopping it reaches its pool children too. Only the
process this module started is ever signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from celery import Celery
from celery.utils.nodenames import gethostname, nodename

from ..polling import wait_until
from .settings import Variant, worker_environ

__all__ = ["BenchWorker"]


class BenchWorker:
    """A worker for one variant, bound to one vhost by ``CELERY_BROKER_URL``.

    A peer's worker (plain Celery, Dramatiq) gives its own ``command`` (the
    arguments after ``python -m``) and ``environ`` instead of the variant's.
    """

    def __init__(
        self,
        *,
        name: str,
        variant: Variant,
        broker_url: str,
        backend_url: str,
        run_dir: Path,
        pythonpath: str | None = None,
        command: list[str] | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.variant = variant
        self.run_dir = Path(run_dir)
        self.hostname = nodename(name, gethostname())
        self.command = command
        env = {
            **os.environ,
            **(worker_environ(variant) if environ is None else environ),
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": backend_url,
        }
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def argv(self) -> list[str]:
        if self.command is not None:
            return [sys.executable, "-m", *self.command]
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "routing_demo",
            "worker",
            "-n",
            f"{self.name}@%h",
            "-Q",
            ",".join(self.variant.queues),
            *self.variant.worker_options(),
            "--loglevel=WARNING",
            "--without-mingle",
            "--without-gossip",
            "--without-heartbeat",
            f"--logfile={self.log_path}",
        ]

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / f"{self.name}.out", "wb") as out:
            self.process = subprocess.Popen(
                self.argv(),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, app: Celery | None, timeout: float = 60.0, probe=None) -> None:
        """Return once the worker answers a ``ping`` (its consumer is running),
        or ``probe()`` says it is ready (a peer without Celery's control)."""

        def answers() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"worker {self.name} exited with {self.process.returncode}; see "
                    f"{self.log_path} and {self.run_dir / (self.name + '.out')}"
                )
            if probe is not None:
                return bool(probe())
            return bool(app.control.ping(destination=[self.hostname], timeout=0.5))

        wait_until(answers, timeout=timeout, message=f"worker {self.name} not ready", interval=0)

    def signal_stop(self) -> None:
        """Ask for a warm shutdown (SIGTERM) without waiting for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM); its whole session is killed only if it hangs."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        self.signal_stop()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
