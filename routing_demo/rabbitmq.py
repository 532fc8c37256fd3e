"""A small client for RabbitMQ's management HTTP API: the broker's own view.

Celery knows what it *meant* to declare; the management API says what the
broker *has*: vhosts, queues with their message and consumer counts, and the
bindings that decide where a routing key leads.
"""

from __future__ import annotations

import os
import re
from contextlib import suppress
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from kombu.transport.virtual.exchange import TopicExchange

__all__ = [
    "DEFAULT_MANAGEMENT_URL",
    "MANAGEMENT_PORT",
    "ManagementAPI",
    "management_url",
    "queue_counts",
    "routing_key_matches",
    "vhost_url",
]

#: The management plugin's port (``management.tcp.port``) on a broker's host.
MANAGEMENT_PORT = 15672

#: Where the management plugin listens unless ``RABBITMQ_MANAGEMENT_URL`` says
#: otherwise (``rabbitmq-plugins enable rabbitmq_management``).
DEFAULT_MANAGEMENT_URL = "http://guest:guest@localhost:15672"

#: Seconds a management API call may take. Creating or deleting a vhost waits
#: for the node to set up or tear down every queue in it, which on a loaded
#: two-core machine was seen to take longer than 5 s.
MANAGEMENT_TIMEOUT = 30.0


def management_url(broker_url: str) -> str:
    """The management API of the broker at ``broker_url``: the first host of a
    ``;``-separated list, with the URL's credentials (``guest`` when it has
    none, as kombu assumes) on the management port.

    The credentials stay percent-encoded as the broker URL has them, which is
    also how an HTTP URL carries them.
    """
    parts = urlsplit(broker_url.split(";", 1)[0].strip())
    user, password = parts.username or "guest", parts.password or "guest"
    return f"http://{user}:{password}@{parts.hostname or 'localhost'}:{MANAGEMENT_PORT}"


def vhost_url(broker_url: str, vhost: str, *, scheme: str | None = None) -> str:
    """``broker_url`` with its virtual host replaced by ``vhost``, and its
    scheme by ``scheme`` when given (``librabbitmq``, ``amqp``…).

    ``vhost`` is percent-encoded whole (``/`` becomes ``%2F``), which kombu,
    py-amqp and pika all decode back. A ``;``-separated list (every node of a
    cluster) stays a list, in the same order, each URL pointed at ``vhost``.
    The rest of each URL (credentials as encoded, host, port, query) is kept.
    """
    urls = []
    for one in filter(None, (part.strip() for part in broker_url.split(";"))):
        parts = urlsplit(one)
        parts = parts._replace(path=f"/{quote(vhost, safe='')}")
        urls.append(urlunsplit(parts._replace(scheme=scheme) if scheme else parts))
    if not urls:
        raise ValueError(f"no broker URL in {broker_url!r}")
    return ";".join(urls)


class ManagementAPI:
    """Calls ``/api/…`` endpoints; every method raises on an HTTP error."""

    def __init__(self, url: str | None = None, *, timeout: float = MANAGEMENT_TIMEOUT) -> None:
        parts = urlsplit(url or os.environ.get("RABBITMQ_MANAGEMENT_URL", DEFAULT_MANAGEMENT_URL))
        self.base_url = f"{parts.scheme}://{parts.hostname}:{parts.port or MANAGEMENT_PORT}/api"
        self.session = requests.Session()
        # A URL carries its credentials percent-encoded; HTTP Basic wants them plain.
        self.session.auth = (unquote(parts.username or "guest"), unquote(parts.password or "guest"))
        self.timeout = timeout

    def _call(
        self, method: str, *path: str, json: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        url = "/".join([self.base_url, *(quote(part, safe="") for part in path)])
        response = self.session.request(method, url, json=json, params=params, timeout=self.timeout)
        response.raise_for_status()
        return response.json() if response.content else None

    def overview(self) -> dict[str, Any]:
        return self._call("GET", "overview")

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes as the answering node sees them: ``name``,
        ``running`` and ``partitions`` (the nodes it cannot see although they
        run). Needs a user tagged ``monitoring`` or ``administrator``."""
        return self._call("GET", "nodes", params={"columns": "name,running,partitions"})

    def alarms(self) -> list[dict[str, str]]:
        """The resource alarms in effect in the cluster now (``node``,
        ``resource``: ``memory`` or ``disk space``), read live (node
        statistics lag seconds behind). RabbitMQ answers 503 while there are
        any."""
        url = f"{self.base_url}/health/checks/alarms"
        response = self.session.get(url, timeout=self.timeout)
        if response.status_code != 503:
            response.raise_for_status()
        return list(response.json().get("alarms") or [])

    def create_vhost(self, vhost: str, *, user: str = "guest") -> None:
        """Create ``vhost`` and give ``user`` full rights on it."""
        self._call("PUT", "vhosts", vhost)
        self._call(
            "PUT",
            "permissions",
            vhost,
            user,
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )

    def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost`` with everything in it (queues, messages, bindings)."""
        self._call("DELETE", "vhosts", vhost)

    def queue(self, vhost: str, name: str) -> dict[str, Any]:
        return self._call("GET", "queues", vhost, name)

    def queues(self, vhost: str) -> list[dict[str, Any]]:
        return self._call("GET", "queues", vhost)

    def bindings(self, vhost: str) -> list[dict[str, Any]]:
        return self._call("GET", "bindings", vhost)

    def connections(self, vhost: str) -> list[dict[str, Any]]:
        """Client connections to ``vhost``, with their ``client_properties``."""
        return self._call("GET", "vhosts", vhost, "connections")

    def channels(self, vhost: str) -> list[dict[str, Any]]:
        """Channels open in ``vhost`` (``confirm`` tells publisher-confirm mode)."""
        return self._call("GET", "vhosts", vhost, "channels")

    def peek(self, vhost: str, queue: str, count: int = 10) -> list[dict[str, Any]]:
        """Up to ``count`` messages of ``queue``, put back after reading
        (``ack_requeue_true``): the UI's "Get messages", consuming nothing."""
        return self._call(
            "POST",
            "queues",
            vhost,
            queue,
            "get",
            json={"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"},
        )

    def consumers(self, vhost: str) -> list[dict[str, Any]]:
        return self._call("GET", "consumers", vhost)

    def exchanges(self, vhost: str) -> list[dict[str, Any]]:
        return self._call("GET", "exchanges", vhost)

    def declare_queue(
        self,
        vhost: str,
        name: str,
        *,
        durable: bool = True,
        arguments: dict[str, Any] | None = None,
    ) -> None:
        """Declare ``name`` as RabbitMQ would for a client; fails if it exists
        with other arguments."""
        self._call(
            "PUT",
            "queues",
            vhost,
            name,
            json={"durable": durable, "auto_delete": False, "arguments": arguments or {}},
        )

    def delete_queue(self, vhost: str, name: str) -> None:
        self._call("DELETE", "queues", vhost, name)

    def bind_queue(self, vhost: str, exchange: str, queue: str, routing_key: str) -> None:
        self._call(
            "POST", "bindings", vhost, "e", exchange, "q", queue, json={"routing_key": routing_key}
        )

    def unbind_queue(self, vhost: str, exchange: str, queue: str, routing_key: str) -> None:
        """Remove the ``exchange`` → ``queue`` binding with ``routing_key``
        (and no binding arguments)."""
        for binding in self._call("GET", "bindings", vhost, "e", exchange, "q", queue):
            if binding["routing_key"] == routing_key:
                self._call(
                    "DELETE",
                    "bindings",
                    vhost,
                    "e",
                    exchange,
                    "q",
                    queue,
                    binding["properties_key"],
                )

    def import_definitions(self, vhost: str, definitions: dict[str, Any]) -> None:
        """Load exchanges, queues and bindings into one vhost (users, vhosts and
        permissions in ``definitions`` are ignored by a per-vhost import)."""
        self._call("POST", "definitions", vhost, json=definitions)


def queue_counts(connection_or_channel: Any, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of queue ``name``, from a passive
    ``queue.declare``: the broker's answer at this instant, where the
    management API's statistics lag by its collection interval.

    A passive declare never creates the queue; a missing one raises the
    channel error ``NotFound``, which also closes the channel. Given a
    channel, it is used as is; given a connection (kombu's or py-amqp's), a
    channel of its own is opened and closed, so a refusal costs nothing else.
    """
    if hasattr(connection_or_channel, "queue_declare"):
        declared = connection_or_channel.queue_declare(name, passive=True)
        return declared.message_count, declared.consumer_count
    channel = connection_or_channel.channel()
    try:
        return queue_counts(channel, name)
    finally:
        with suppress(Exception):  # a refused declare has closed it already
            channel.close()


#: kombu's own translation of a topic binding key into a regular expression.
_topic = TopicExchange(None)


def routing_key_matches(exchange_type: str, binding_key: str, routing_key: str) -> bool:
    """Whether a message with ``routing_key`` follows a binding with
    ``binding_key`` on an exchange of ``exchange_type`` (headers: unknown,
    treated as no match)."""
    if exchange_type == "fanout":
        return True
    if exchange_type == "direct":
        return binding_key == routing_key
    if exchange_type == "topic":
        return re.match(_topic.key_to_pattern(binding_key), routing_key) is not None
    return False
