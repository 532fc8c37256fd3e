"""Shared test set-up: where the broker is, and what to do when it is not there.

Unit tests need nothing. Integration tests (marker ``integration``) need the
RabbitMQ and Redis named by the environment; when one is missing they are
skipped locally and *fail* when ``CI`` is set, so a CI run cannot turn green
by testing nothing.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from routing_demo.rabbitmq import ManagementAPI
from routing_demo.testing.services import unavailable

# The session's RabbitMQ cluster, for the cluster tier and the routing suite.
from .cluster.session import rabbitmq_cluster, test_network  # noqa: F401

#: The broker and Redis the integration tier uses; each test session works in
#: throw-away vhosts of this broker, never in its default vhost.
BROKER_URL = os.environ.get("ROUTING_DEMO_TEST_BROKER", "pyamqp://guest:guest@127.0.0.1:5672")
REDIS_URL = os.environ.get("ROUTING_DEMO_TEST_REDIS", "redis://127.0.0.1:6379/0")


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def require_service(url: str, default_port: int, what: str) -> None:
    if not _answers(url, default_port):
        unavailable(f"{what} is not answering at {url}")


@pytest.fixture(scope="session")
def management() -> ManagementAPI:
    """The broker's management HTTP API (its plugin must be enabled)."""
    require_service(BROKER_URL, 5672, "RabbitMQ")
    api = ManagementAPI()
    try:
        api.overview()
    except Exception as exc:
        unavailable(f"RabbitMQ management API unavailable ({exc}): enable rabbitmq_management")
    return api


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service(REDIS_URL, 6379, "Redis")
    return REDIS_URL


@pytest.fixture(scope="session")
def vhost_factory(management: ManagementAPI) -> Iterator[Callable[[str], str]]:
    """Make throw-away vhosts; returns the broker URL of each. All are deleted
    (with their queues and messages) when the session ends, so nothing one run
    leaves behind can satisfy or break the next."""
    created: list[str] = []

    def make(label: str) -> str:
        vhost = f"routing_demo-test-{label}-{uuid.uuid4().hex[:8]}"
        management.create_vhost(vhost)
        created.append(vhost)
        return f"{BROKER_URL.rstrip('/')}/{vhost}"

    yield make
    for vhost in created:
        management.delete_vhost(vhost)
