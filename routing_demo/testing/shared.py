"""A service this test session shares with others, as pytest-celery's nodes
see a container: it answers and can be read, but is never stopped.

The shared RabbitMQ and Redis run for other sessions and services too, so
``kill()`` and ``restart()`` refuse, naming the private fixture to use for a
fault test instead.
"""

from __future__ import annotations

import socket
from typing import ClassVar, NoReturn
from urllib.parse import urlsplit

from pytest_celery import CeleryTestContainer

__all__ = ["SharedServiceContainer", "service_config"]


def service_config(url: str, default_port: int, default_path: str) -> dict[str, object]:
    """The ``celeryconfig`` pytest-celery's broker and backend nodes expect."""
    parts = urlsplit(url)
    return {
        "url": url,
        "host_url": url,
        "hostname": parts.hostname,
        "port": parts.port or default_port,
        "vhost": parts.path[1:] or default_path,
    }


class SharedServiceContainer(CeleryTestContainer):
    """Base for a shared service reached at ``url``; subclasses say what it is."""

    #: For messages: what the service is, and the fixture that gives a private one.
    service: ClassVar[str] = "service"
    private_fixture: ClassVar[str] = ""
    default_port: ClassVar[int] = 0

    def __init__(self, url: str) -> None:
        # No super().__init__(): there is no docker-py container to wrap.
        parts = urlsplit(url)
        self.url = url
        self.host = parts.hostname or "localhost"
        self.port = parts.port or self.default_port

    @property
    def status(self) -> str:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return "running"
        except OSError:
            return "exited"

    def reload(self) -> None:
        pass

    def logs(self) -> str:
        """The shared service's log is not ours to read."""
        return ""

    def _refuse(self, action: str) -> NoReturn:
        raise RuntimeError(
            f"{action} refused: the {self.service} at {self.host}:{self.port} is shared with "
            f"other sessions and services; use the {self.private_fixture} fixture for fault tests"
        )

    def kill(self, signal: object = None, **_: object) -> NoReturn:
        self._refuse("kill()")

    def restart(self, timeout: float | None = None) -> NoReturn:
        self._refuse("restart()")

    def teardown(self) -> None:
        pass
