"""Which RabbitMQ and Redis to use: the running ones when they answer with what
is needed, otherwise private ones started for the occasion.

The test session and the demo ask the same questions (does the broker accept
an AMQP login, does its management API answer, does Redis answer ``PING``);
``choose()`` turns the answers into a decision with its reason, so that the
decision itself is tested without any service. ``PrivateRedis`` and
``private_broker_node()`` start what is missing, on ports of their own. Nothing
here connects, starts or depends on pytest until called.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal as signals
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests
from kombu import Connection
from kombu.utils.url import maybe_sanitize_url
from redis import Redis

from .local_rabbitmq import RABBITMQ_SERVER, LocalNode, NodePorts
from .polling import wait_until
from .rabbitmq import ManagementAPI
from .testing.defaults import AMQP_PORTS, DIST_PORTS, REDIS_PORTS, REDIS_SERVER
from .testing.ports import free_ports

__all__ = [
    "DEBIAN_PACKAGES",
    "Check",
    "Choice",
    "PrivateRedis",
    "amqp_check",
    "choose",
    "install_hint",
    "management_check",
    "management_url_for",
    "private_broker_node",
    "redacted",
    "redis_check",
    "redis_server_argv",
    "server_installed",
]

#: The Debian package that installs each server binary.
DEBIAN_PACKAGES = {RABBITMQ_SERVER: "rabbitmq-server", REDIS_SERVER: "redis-server"}

#: Seconds each question to a running service may take: they are on loopback
#: or close by, and a black-holed address must not stall a session.
PROBE_TIMEOUT = 2.0

#: Seconds the management API may take to answer once connected: a node
#: busy with other sessions' vhosts has taken more than 5 s.
MANAGEMENT_READ_TIMEOUT = 30.0

#: The management plugin's default port, as ``rabbitmq-plugins enable`` opens it.
MANAGEMENT_PORT = 15672

#: A question to a service: returns when the answer is yes, raises with the
#: reason otherwise.
Check = Callable[[], object]


def redacted(url: str) -> str:
    """``url`` with its password masked, fit to print."""
    return maybe_sanitize_url(url)


@dataclass(frozen=True)
class Choice:
    """What to do about one service: use the running one at ``url``
    (``shared``), or start a private one; ``reason`` says why, for people."""

    service: str
    url: str
    shared: bool
    reason: str


def choose(service: str, url: str, checks: Sequence[tuple[str, str, Check]]) -> Choice:
    """Ask ``checks`` in order, each ``(what, where, question)``: the first
    that fails decides for a private service, and its error is the reason."""
    for what, where, check in checks:
        try:
            check()
        except Exception as exc:
            error = str(exc).strip().rstrip(".") or type(exc).__name__
            return Choice(service, url, False, f"{what} at {redacted(where)} fails: {error}")
    asked = [what for what, _, _ in checks]
    return Choice(
        service, url, True, f"{' and '.join(asked)} answer{'s' if len(asked) == 1 else ''}"
    )


def amqp_check(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Log in over AMQP once, no retry (a port that answers is not enough)."""
    with Connection(url, connect_timeout=timeout) as connection:
        connection.ensure_connection(max_retries=0)


def management_check(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """The management HTTP API answers ``/api/whoami`` with these credentials.

    ``timeout`` bounds the connection; the answer itself may take longer
    (``MANAGEMENT_READ_TIMEOUT``): a loaded node is slow, not missing.
    """
    api = ManagementAPI(url)
    try:
        response = api.session.get(
            f"{api.base_url}/whoami", timeout=(timeout, max(timeout, MANAGEMENT_READ_TIMEOUT))
        )
        response.raise_for_status()
    except requests.HTTPError as exc:
        raise RuntimeError(f"HTTP {exc.response.status_code}") from exc
    except requests.RequestException as exc:
        raise RuntimeError(f"no answer ({type(exc).__name__})") from exc
    finally:
        api.session.close()


def redis_check(url: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Redis answers ``PING``."""
    client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    finally:
        client.close()


def management_url_for(broker_url: str) -> str:
    """The management API of the broker at ``broker_url`` (the first host of a
    ``;``-separated list): its host and credentials on the default port."""
    parts = urlsplit(broker_url.split(";", 1)[0])
    user, password = parts.username or "guest", parts.password or "guest"
    return f"http://{user}:{password}@{parts.hostname or 'localhost'}:{MANAGEMENT_PORT}"


def install_hint(server: str, what: str) -> str:
    """The sentence for a missing server binary: which Debian package has it."""
    package = DEBIAN_PACKAGES.get(server, Path(server).name)
    return f"{what} is not installed ({server} not found): apt-get install {package}"


def private_broker_node(base_dir: Path, *, server: str = RABBITMQ_SERVER) -> LocalNode:
    """A RabbitMQ node of its own under ``base_dir`` (not started), on free
    ports of the private ranges, named after its AMQP port; no plugins, so it
    boots in seconds."""
    amqp, dist = free_ports(AMQP_PORTS, DIST_PORTS)
    return LocalNode(
        base_dir, f"routing_demo_{amqp}@localhost", NodePorts(amqp, dist), server=server
    )


def redis_server_argv(server: str, port: int, data_dir: Path) -> list[str]:
    """``redis-server`` on loopback ``port``, nothing persisted (no RDB
    snapshots, no append-only file), and refusing writes when full rather
    than evicting results."""
    return [
        server,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--maxmemory-policy",
        "noeviction",
    ]


class PrivateRedis:
    """A ``redis-server`` of its own in ``base_dir``, on a free private port:
    ``start()`` waits until it answers ``PING``; ``stop()`` ends it by its PID."""

    def __init__(self, base_dir: Path, *, server: str = REDIS_SERVER) -> None:
        self.base_dir = Path(base_dir)
        self.server = server
        self.port = free_ports(REDIS_PORTS)[0]
        self.log_path = self.base_dir / "redis.log"
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                redis_server_argv(self.server, self.port, self.base_dir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._process.pid

        def answers() -> bool:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited while starting; see {self.log_path}")
            try:
                redis_check(self.url, timeout=1.0)
            except Exception:
                return False
            return True

        wait_until(answers, timeout=timeout, message=f"redis-server on {self.port} did not answer")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to its PID, SIGKILL if it is still there after ``timeout``."""
        if self._process is None or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signals.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signals.SIGKILL)
            self._process.wait(timeout)

    def __enter__(self) -> PrivateRedis:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def server_installed(server: str) -> bool:
    """True when ``server`` (a name on ``PATH`` or a file) can be run."""
    return shutil.which(server) is not None
