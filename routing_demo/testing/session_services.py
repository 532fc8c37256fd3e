"""The RabbitMQ and Redis a test session uses: the shared ones when they answer
with what the tests need, private ones of the session's own otherwise.

The integration tiers need a broker that takes an AMQP login *and* answers
its management API (their throw-away vhosts are made through it), and a Redis
that answers ``PING``. ``SessionServices.from_environment()`` asks once, at
the start of the session and before any test module is imported, and puts
the choice into the environment (``ROUTING_DEMO_TEST_BROKER``,
``ROUTING_DEMO_TEST_REDIS``, and ``RABBITMQ_MANAGEMENT_URL`` for a private
node), so fixtures, workers and every command a test runs see the same
services. A private node or server starts when a test first needs it, and
stops (by its PID) when the session ends. A missing server binary is the one
thing that skips (locally) or fails (``CI``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from ..local_services import (
    Choice,
    amqp_check,
    choose,
    install_hint,
    management_check,
    management_url_for,
    redacted,
    redis_check,
    server_installed,
)
from ..polling import wait_until
from .defaults import RABBITMQ_SERVER, READY_TIMEOUT, REDIS_SERVER
from .rabbitmq import PrivateRabbitMQNode
from .redis import PrivateRedisServer
from .services import unavailable

__all__ = [
    "BROKER_ENV",
    "DEFAULT_BROKER_URL",
    "DEFAULT_REDIS_URL",
    "MANAGEMENT_ENV",
    "REDIS_ENV",
    "SessionServices",
]

#: Where the tests look for the shared broker and Redis, and their defaults.
BROKER_ENV = "ROUTING_DEMO_TEST_BROKER"
REDIS_ENV = "ROUTING_DEMO_TEST_REDIS"
DEFAULT_BROKER_URL = "pyamqp://guest:guest@127.0.0.1:5672"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: The management API every client of the project reads (``ManagementAPI``,
#: ``--management-url``); unset, it is the broker's host on port 15672.
MANAGEMENT_ENV = "RABBITMQ_MANAGEMENT_URL"


def broker_choice(broker_url: str, management_url: str) -> Choice:
    """The shared broker is used when it takes an AMQP login and its
    management API answers."""
    return choose(
        "RabbitMQ",
        broker_url,
        [
            ("AMQP", broker_url, lambda: amqp_check(broker_url)),
            ("management API", management_url, lambda: management_check(management_url)),
        ],
    )


def redis_choice(redis_url: str) -> Choice:
    """The shared Redis is used when it answers ``PING``."""
    return choose("Redis", redis_url, [("PING", redis_url, lambda: redis_check(redis_url))])


class SessionServices:
    """The broker and Redis of one test session, from two ``Choice``s.

    For a service that is not shared, the private one is prepared under
    ``base_dir`` (ports picked, files written) but not started:
    ``start_broker()``/``start_redis()`` do that the first time a test needs
    it. ``stop()`` ends what was started and removes ``base_dir``.
    """

    def __init__(
        self,
        broker: Choice,
        redis: Choice,
        *,
        management_url: str,
        base_dir: Path | None = None,
        rabbitmq_server: str = RABBITMQ_SERVER,
        redis_server: str = REDIS_SERVER,
    ) -> None:
        self.broker = broker
        self.redis = redis
        self._shared_management_url = management_url
        self._base_dir = base_dir
        self._own_base_dir = False
        #: Why a private service cannot start (its binary is missing).
        self.broker_missing = self.redis_missing = ""
        self.private_broker: PrivateRabbitMQNode | None = None
        self.private_redis: PrivateRedisServer | None = None
        if not broker.shared:
            if server_installed(rabbitmq_server):
                self.private_broker = PrivateRabbitMQNode(
                    self.base_dir / "rabbitmq", management=True, server=rabbitmq_server
                )
            else:
                self.broker_missing = install_hint(rabbitmq_server, "RabbitMQ server")
        if not redis.shared:
            if server_installed(redis_server):
                self.private_redis = PrivateRedisServer(
                    self.base_dir / "redis", server=redis_server
                )
            else:
                self.redis_missing = install_hint(redis_server, "Redis server")

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, **options: object
    ) -> SessionServices:
        """Ask the services the environment names (or the defaults) and choose."""
        environ = os.environ if environ is None else environ
        broker_url = environ.get(BROKER_ENV) or DEFAULT_BROKER_URL
        redis_url = environ.get(REDIS_ENV) or DEFAULT_REDIS_URL
        management_url = environ.get(MANAGEMENT_ENV) or management_url_for(broker_url)
        return cls(
            broker_choice(broker_url, management_url),
            redis_choice(redis_url),
            management_url=management_url,
            **options,  # type: ignore[arg-type]
        )

    @property
    def base_dir(self) -> Path:
        """Where private services keep their files (a new temporary directory
        unless one was given)."""
        if self._base_dir is None:
            self._base_dir = Path(tempfile.mkdtemp(prefix="routing_demo-services-"))
            self._own_base_dir = True
        return self._base_dir

    # --- what the session uses ------------------------------------------------------
    @property
    def broker_url(self) -> str:
        if self.private_broker is not None:
            return self.private_broker.url.rstrip("/")
        return self.broker.url

    @property
    def management_url(self) -> str:
        if self.private_broker is not None:
            assert self.private_broker.management_url is not None
            return self.private_broker.management_url
        return self._shared_management_url

    @property
    def redis_url(self) -> str:
        return self.private_redis.url if self.private_redis is not None else self.redis.url

    def environment(self) -> dict[str, str]:
        """The variables that point fixtures, workers and commands at the
        session's services.

        ``RABBITMQ_MANAGEMENT_URL`` only for a private node: a shared broker's
        API is where clients look for it anyway (the variable, or the broker's
        host and credentials on port 15672), and a command under test must
        go on finding it that way. The private node's is given without
        credentials, so that the broker URL's user is the one that counts.
        """
        environment = {BROKER_ENV: self.broker_url, REDIS_ENV: self.redis_url}
        if self.private_broker is not None:
            parts = urlsplit(self.management_url)
            environment[MANAGEMENT_ENV] = f"{parts.scheme}://{parts.hostname}:{parts.port}"
        return environment

    def summary(self) -> str:
        """One line: which broker and Redis, and why."""

        def part(choice: Choice, private: object, missing: str, url: str, kind: str) -> str:
            if choice.shared:
                return f"{choice.service} {redacted(url)} (shared: {choice.reason})"
            if private is None:
                return f"{choice.service}: none ({choice.reason}; {missing})"
            started = f"private {kind}, started on first use"
            return f"{choice.service} {redacted(url)} ({started}: {choice.reason})"

        broker = part(
            self.broker, self.private_broker, self.broker_missing, self.broker_url, "node"
        )
        redis = part(self.redis, self.private_redis, self.redis_missing, self.redis_url, "server")
        return f"services: {broker}; {redis}"

    # --- life cycle ----------------------------------------------------------------
    def start_broker(self) -> None:
        """Make sure the session's broker is there: start the private node on
        first use and wait for its management API. Skips (locally) or fails
        (``CI``) only when the node's binary is missing."""
        if self.broker_missing:
            unavailable(
                f"{self.broker.reason}, and no private node can start: {self.broker_missing}"
            )
        node = self.private_broker
        if node is None or node.status == "running":
            return
        node.start()
        try:
            node.ready()
            wait_until(
                self._management_answers,
                timeout=READY_TIMEOUT,
                message=f"management API of {node.nodename} did not answer",
                interval=0.2,
            )
        except BaseException:
            node.teardown()
            raise

    def _management_answers(self) -> bool:
        try:
            management_check(self.management_url, timeout=1.0)
        except Exception:
            return False
        return True

    def start_redis(self) -> None:
        """Make sure the session's Redis is there (the private one started on
        first use); skips or fails only when ``redis-server`` is missing."""
        if self.redis_missing:
            unavailable(
                f"{self.redis.reason}, and no private Redis can start: {self.redis_missing}"
            )
        server = self.private_redis
        if server is None or server.status == "running":
            return
        server.start()
        try:
            server.ready()
        except BaseException:
            server.teardown()
            raise

    def stop(self) -> None:
        """Kill the private services that run (their process groups, by PID)
        and remove their files."""
        for private in (self.private_broker, self.private_redis):
            if private is not None and private.status == "running":
                private.teardown()
        if self._own_base_dir and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
