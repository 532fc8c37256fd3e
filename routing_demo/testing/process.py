"""A local process that pytest-celery's nodes drive as if it were a Docker container.

pytest-celery's ``CeleryTestNode`` only calls a handful of things on its
container: ``ready()``, ``celeryconfig``, ``logs()``, ``name``, ``id``,
``status``, ``kill(signal=…)``, ``reload()``, ``restart(timeout=…)`` and
``teardown()``. ``LocalProcessContainer`` gives those the meaning they have
for a container, on a plain child process:

- the process starts in a session (and so a process group) of its own, which
  plays the container: ``kill("SIGKILL")`` kills the whole group at once, and
  when the main process ends its leftover children go with it;
- stdout and stderr go to a log file opened in append mode, so ``logs()``
  keeps every run's output across restarts, as ``docker logs`` does;
- ``status`` is read from the process itself: ``created``, ``running`` or
  ``exited``.
"""

from __future__ import annotations

import contextlib
import os
import signal as signals
import subprocess
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self

import psutil
from pytest_celery import CeleryTestContainer

from ..polling import wait_until
from .defaults import READY_TIMEOUT, STOP_TIMEOUT

__all__ = ["LocalProcessContainer", "ProcessFailed", "stop_all", "wait_until"]

#: Signals after which ``kill()`` waits for the process to be gone. Any other
#: signal (``SIGUSR1``, ``SIGHUP``) is delivered and ``kill()`` returns.
_ENDING_SIGNALS = frozenset(
    {signals.SIGKILL, signals.SIGTERM, signals.SIGINT, signals.SIGQUIT},
)

#: How often the wait loops look again.
_POLL_INTERVAL = 0.05


class ProcessFailed(RuntimeError):
    """The process exited while it was expected to come up."""


def _as_signal(signal: str | int | signals.Signals | None) -> signals.Signals:
    """``"SIGKILL"``, ``"KILL"``, ``9`` or ``signal.SIGKILL`` -> ``signal.SIGKILL``."""
    if signal is None:
        return signals.SIGKILL
    if isinstance(signal, str):
        name = signal.upper()
        return signals.Signals[name if name.startswith("SIG") else f"SIG{name}"]
    return signals.Signals(signal)


class LocalProcessContainer(CeleryTestContainer):
    """A command run as a local process group, with the container interface.

    ``argv`` is run with ``env`` added to this process's environment, in
    ``cwd``; its output is appended to ``log_path``. ``ready_prompt`` is the
    log text that says the process has come up (looked for in the current
    run's output only); subclasses may add a check of their own in
    ``probe()``. Nothing starts before ``start()``.
    """

    def __init__(
        self,
        argv: Iterable[str],
        *,
        name: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_prompt: str | None = None,
        ready_timeout: float = READY_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        # Deliberately not calling super().__init__(): that wraps a docker-py
        # container object, and there is none.
        self.argv = list(argv)
        self._name = name
        self._id = uuid.uuid4().hex
        self.log_path = Path(log_path)
        self.environment = {**os.environ, **(env or {})}
        self.cwd = cwd
        self._ready_prompt = ready_prompt
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._run_offset = 0
        self._terminated_run = 0
        #: How many times the process was started.
        self.runs = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid} {self.status}>"

    # --- identity ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._name

    @property
    def id(self) -> str:
        """A random hex id, fixed for the object's life (a restart keeps it,
        as Docker keeps a container's id): ``hostname()`` uses its first 12."""
        return self._id

    @property
    def env(self) -> dict[str, str]:
        return dict(self.environment)

    @property
    def attrs(self) -> dict[str, Any]:
        """The little of ``docker inspect`` that means something here."""
        return {"Id": self.id, "Name": self.name, "State": {"Status": self.status}}

    @property
    def pid(self) -> int | None:
        """PID of the current (or last) run's main process; also its group id."""
        return self._process.pid if self._process else None

    @property
    def ready_prompt(self) -> str | None:
        return self._ready_prompt

    # --- state ---------------------------------------------------------------
    @property
    def status(self) -> str:
        """``created`` before the first start, then ``running`` or ``exited``,
        read from the process each time."""
        if self._process is None:
            return "created"
        return "running" if self._process.poll() is None else "exited"

    def reload(self) -> None:
        """Docker re-reads a container's state here; ``status`` is always
        current already, so this only collects an exited process."""
        if self._process is not None:
            self._process.poll()

    def group_processes(self) -> list[psutil.Process]:
        """Live (non-zombie) processes of the current run's process group."""
        if self._process is None:
            return []
        members = []
        for process in psutil.process_iter(["status"]):
            try:
                if (
                    process.info["status"] != psutil.STATUS_ZOMBIE
                    and os.getpgid(process.pid) == self._process.pid
                ):
                    members.append(process)
            except (ProcessLookupError, psutil.Error):
                continue
        return members

    # --- logs ----------------------------------------------------------------
    def logs(self) -> str:
        """Everything every run wrote, oldest first."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def current_logs(self) -> str:
        """What the current (or last) run wrote."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._run_offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.current_logs().splitlines()[-lines:])

    # --- life cycle ----------------------------------------------------------
    def before_start(self) -> None:
        """Hook run before every start (first start and restarts)."""

    def start(self) -> None:
        """Start the process in a new session; returns at once (see ``ready()``)."""
        if self.status == "running":
            return
        self.before_start()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._run_offset = log.tell()
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.runs += 1

    def probe(self) -> bool:
        """Extra readiness check once the prompt is logged (a port, a ping)."""
        return True

    def ready(self, timeout: float | None = None) -> bool:
        """Wait until the current run logged its ready prompt and ``probe()``
        agrees; raise ``ProcessFailed`` if the process exits first and
        ``TimeoutError`` on the deadline. Returns True, as pytest-celery expects."""
        if self._process is None:
            raise ProcessFailed(f"{self.name} was never started")

        def is_ready() -> bool:
            if self._process.poll() is not None:
                raise ProcessFailed(
                    f"{self.name} exited with {self._process.returncode} before it was "
                    f"ready; log {self.log_path}:\n{self._log_tail()}"
                )
            prompt_seen = not self.ready_prompt or self.ready_prompt in self.current_logs()
            return prompt_seen and self.probe()

        try:
            wait_until(
                is_ready,
                timeout=self.ready_timeout if timeout is None else timeout,
                message=f"{self.name} did not log {self.ready_prompt!r}",
            )
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log {self.log_path}:\n{self._log_tail()}") from None
        return True

    def _wait_gone(self, timeout: float) -> None:
        """Wait until the main process has exited, then end what is left of its
        group (a container's processes die with its main process)."""
        assert self._process is not None
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{self.name} (pid {self._process.pid}) still runs {timeout:.1f}s after the signal"
            ) from None
        self._kill_group()
        wait_until(
            lambda: not self.group_processes(),
            timeout=timeout,
            message=f"processes of {self.name}'s group {self._process.pid} still run",
        )

    def _kill_group(self) -> None:
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signals.SIGKILL)

    def kill(
        self,
        signal: str | int | signals.Signals | None = "SIGKILL",
        *,
        timeout: float | None = None,
    ) -> None:
        """Send ``signal``, like ``docker kill``: SIGKILL goes to the whole
        process group, any other signal to the main process only.

        After SIGKILL, SIGTERM, SIGINT or SIGQUIT it waits (up to ``timeout``)
        until the process and its group are gone; ``TimeoutError`` if the
        process is still running then (a worker's warm shutdown waits for
        running tasks).
        """
        sig = _as_signal(signal)
        if self.status != "running":
            return
        assert self._process is not None
        if sig == signals.SIGKILL:
            self._kill_group()
        else:
            self._process.send_signal(sig)
        if sig in _ENDING_SIGNALS:
            self._wait_gone(self.stop_timeout if timeout is None else timeout)

    def request_stop(self) -> None:
        """Send SIGTERM once per run and return: ``stop_all()`` uses it to let
        several processes shut down at the same time."""
        if self.status == "running" and self._terminated_run != self.runs:
            assert self._process is not None
            self._process.send_signal(signals.SIGTERM)
            self._terminated_run = self.runs

    def stop(self, timeout: float | None = None) -> None:
        """``docker stop``: SIGTERM, then SIGKILL to the group after ``timeout``."""
        if self.status != "running":
            return
        assert self._process is not None
        self.request_stop()
        try:
            self._process.wait(self.stop_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self._kill_group()
        self._wait_gone(self.stop_timeout)

    def restart(self, timeout: float | None = None) -> None:
        """``docker restart``: stop (SIGTERM, SIGKILL after ``timeout``), start,
        and wait until ready."""
        self.stop(timeout)
        self.start()
        self.ready()

    def teardown(self) -> None:
        """Kill the process group and wait until it is gone, as pytest-celery's
        Docker fixtures remove a container (``remove(force=True)`` kills it).
        A graceful stop is ``stop()``. The log file stays for post-mortems."""
        self.kill("SIGKILL")

    def __enter__(self) -> Self:
        """Start and wait until ready; leaving the block tears the process
        down, whether the block (or the start) failed or not."""
        self.start()
        try:
            self.ready()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.teardown()


def stop_all(containers: Iterable[LocalProcessContainer], timeout: float | None = None) -> None:
    """Stop several processes gracefully at once: SIGTERM to all, then wait
    for each (SIGKILL to a group still running after ``timeout``)."""
    containers = list(containers)
    for container in containers:
        container.request_stop()
    for container in containers:
        container.stop(timeout)
