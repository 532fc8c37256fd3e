"""Redis result backends for pytest-celery's ``CeleryTestBackend``, without Docker.

Results go to Redis rather than ``rpc://`` in these tests on purpose: an
``rpc://`` result travels through the broker as a message to the caller, so
a broker restart would lose it, and only the caller can read it.

- ``SharedRedisDb``: a database of a Redis someone else runs. Result keys
  carry the task's random id, so tests cannot read each other's results;
  they expire with ``result_expires``. Refuses ``kill()``/``restart()``.
- ``PrivateRedisServer``: a ``redis-server`` of our own, without
  persistence (as pytest-celery's Redis container), for fault tests.
"""

from __future__ import annotations

from pathlib import Path

from redis import Redis

from ..local_services import redis_server_argv
from .defaults import REDIS_PORTS, REDIS_SERVER
from .ports import free_ports
from .process import LocalProcessContainer
from .shared import SharedServiceContainer, service_config

__all__ = ["PrivateRedisServer", "SharedRedisDb"]


def _redis_config(url: str) -> dict[str, object]:
    """The ``celeryconfig`` pytest-celery's backend nodes expect."""
    return service_config(url, 6379, "0")


class _RedisAtUrl:
    """What both Redis containers derive from their ``url``."""

    url: str

    @property
    def celeryconfig(self) -> dict[str, object]:
        return _redis_config(self.url)

    @property
    def client(self) -> Redis:
        return Redis.from_url(self.url, decode_responses=True)


class SharedRedisDb(_RedisAtUrl, SharedServiceContainer):
    """One database of a shared Redis, seen as a container that cannot be stopped."""

    service = "Redis"
    private_fixture = "private_redis_backend"
    default_port = 6379

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"

    @property
    def name(self) -> str:
        return f"redis-{self.host}-{self.port}"

    @property
    def id(self) -> str:
        return f"redis{self.port:07d}"

    def ready(self) -> bool:
        return bool(self.client.ping())


class PrivateRedisServer(_RedisAtUrl, LocalProcessContainer):
    """A ``redis-server`` of our own on a free private port, data in ``base_dir``."""

    def __init__(
        self, base_dir: Path, *, port: int | None = None, server: str = REDIS_SERVER
    ) -> None:
        self.base_dir = Path(base_dir)
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_ports(REDIS_PORTS)[0]
        super().__init__(
            redis_server_argv(server, self.port, self.base_dir),
            name=f"redis-{self.port}",
            log_path=self.base_dir / "redis.log",
            ready_prompt="Ready to accept connections",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
