"""RabbitMQ brokers for pytest-celery's ``CeleryTestBroker``, without Docker.

Two kinds, for two kinds of test:

- ``SharedRabbitMQVhost``: a throw-away vhost on a RabbitMQ someone else runs
  (the machine's service, a CI service container). Cheap (well under a
  second), and isolated: queues, bindings and messages live in the vhost only.
  The broker is not ours, so ``kill()`` and ``restart()`` refuse.
- ``PrivateRabbitMQNode``: a RabbitMQ node of our own, started from the
  installed server with its own node name, ports, data, log and home
  directories. It takes seconds to boot, and may be killed and restarted:
  the one for fault tests. Its data directory outlives a restart, so durable
  queues and persistent messages come back, as on a real broker.

``PyAMQPRabbitMQContainer`` is pytest-celery's Docker RabbitMQ with a
``pyamqp://`` URL, used when the tests run on Docker.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from kombu import Connection
from pytest_celery import RabbitMQContainer

from ..local_rabbitmq import NodePorts, node_environment, rabbitmqctl
from .defaults import AMQP_PORTS, DIST_PORTS, MANAGEMENT_PORTS, RABBITMQ_SERVER
from .ports import free_ports
from .process import LocalProcessContainer
from .shared import SharedServiceContainer, service_config

__all__ = ["PrivateRabbitMQNode", "PyAMQPRabbitMQContainer", "SharedRabbitMQVhost"]

#: ``pyamqp://`` on purpose: with ``amqp://`` kombu switches to librabbitmq
#: whenever it is importable, and librabbitmq cannot consume with kombu 5.7.
SCHEME = "pyamqp://"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _amqp_config(url: str) -> dict[str, object]:
    """The ``celeryconfig`` pytest-celery's broker nodes expect."""
    return service_config(url, 5672, "/")


class _AMQPService:
    """What pytest-celery asks of a RabbitMQ container, from its ``url``."""

    url: str

    @property
    def celeryconfig(self) -> dict[str, object]:
        return _amqp_config(self.url)

    @property
    def client(self) -> Connection:
        return Connection(self.url)


class SharedRabbitMQVhost(_AMQPService, SharedServiceContainer):
    """A vhost on a shared RabbitMQ, seen as a container that cannot be stopped.

    ``url`` is the broker URL including the vhost; whoever made the vhost
    deletes it (the test session's ``vhost_factory``).
    """

    service = "RabbitMQ"
    private_fixture = "private_rabbitmq_broker"
    default_port = 5672

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.vhost = urlsplit(url).path[1:] or "/"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def name(self) -> str:
        return f"rabbitmq-{self.host}-{self.port}-{self.vhost}"

    @property
    def id(self) -> str:
        return self.vhost.rsplit("-", 1)[-1].ljust(12, "0")

    def ready(self) -> bool:
        with self.client as connection:
            connection.ensure_connection(max_retries=1)
        return True


class PrivateRabbitMQNode(_AMQPService, LocalProcessContainer):
    """A RabbitMQ node of our own under ``base_dir``.

    Ports come from the private ranges (``defaults``) at one offset unless
    given. The management plugin is off unless ``management=True``: it
    doubles the boot time, and ``queue_declare(passive=True)`` already tells
    a queue's message and consumer counts. ``extra_config`` lines are appended
    to its ``rabbitmq.conf`` (a short ``consumer_timeout``, a TLS listener).
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        amqp_port: int | None = None,
        dist_port: int | None = None,
        management_port: int | None = None,
        management: bool = False,
        extra_config: Sequence[str] = (),
        server: str = RABBITMQ_SERVER,
    ) -> None:
        if amqp_port is None:
            amqp_port, dist_port_free, management_port_free = free_ports(
                AMQP_PORTS, DIST_PORTS, MANAGEMENT_PORTS
            )
            dist_port = dist_port or dist_port_free
            management_port = management_port or management_port_free
        if dist_port is None or (management and management_port is None):
            raise ValueError("give dist_port (and management_port) together with amqp_port")
        self.base_dir = Path(base_dir)
        self.amqp_port = amqp_port
        self.dist_port = dist_port
        self.management_port = management_port if management else None
        self.nodename = f"routing_demo_{amqp_port}@localhost"
        self.extra_config = list(extra_config)
        env = self._prepare_files()
        super().__init__(
            [server],
            name=f"rabbitmq-{self.nodename}",
            log_path=self.base_dir / "stdout.log",
            env=env,
            cwd=self.base_dir,
            ready_prompt="Starting broker... completed",
        )

    def _prepare_files(self) -> dict[str, str]:
        """Write the node's config files; return the environment that points
        the server at them (and away from ``/etc/rabbitmq``)."""
        ports = NodePorts(self.amqp_port, self.dist_port, self.management_port)
        return node_environment(self.base_dir, self.nodename, ports, config_lines=self.extra_config)

    @property
    def url(self) -> str:
        return f"{SCHEME}guest:guest@127.0.0.1:{self.amqp_port}//"

    @property
    def management_url(self) -> str | None:
        """For ``routing_demo.rabbitmq.ManagementAPI``, when management is on."""
        if not self.management_port:
            return None
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def probe(self) -> bool:
        """The AMQP listener answers (the prompt is logged once it listens)."""
        return _answers("127.0.0.1", self.amqp_port)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """``rabbitmqctl -n <node> -q args`` with this node's Erlang cookie; its
        stdout (``--formatter json`` among ``args`` for JSON)."""
        return rabbitmqctl(self.nodename, self.base_dir, *args, timeout=timeout)


class PyAMQPRabbitMQContainer(RabbitMQContainer):
    """pytest-celery's Docker RabbitMQ, addressed as ``pyamqp://``."""

    @classmethod
    def prefix(cls) -> str:
        return SCHEME
