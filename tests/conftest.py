"""Shared test set-up: which broker and Redis the session uses.

Unit tests need nothing. Integration tests (marker ``integration``) need a
RabbitMQ with its management API and a Redis: the ones named by
``ROUTING_DEMO_TEST_BROKER``/``ROUTING_DEMO_TEST_REDIS`` (default: loopback)
when they answer with that, otherwise a private node and server of the
session's own (``routing_demo.testing.session_services``). The choice is made
before the test modules are imported and printed in the header. Only a
missing server binary skips a test locally; with ``CI`` set it fails it, so a
CI run cannot turn green by testing nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from routing_demo.rabbitmq import ManagementAPI
from routing_demo.testing.session_services import SessionServices

# The session's RabbitMQ cluster, for the cluster tier and the routing suite.
from .cluster.session import rabbitmq_cluster, test_network  # noqa: F401

#: Where the session keeps its services and the environment it replaced.
_SERVICES = pytest.StashKey[SessionServices]()
_SAVED_ENV = pytest.StashKey[dict[str, str | None]]()


def _services(config: pytest.Config) -> SessionServices:
    """The session's services, chosen the first time they are asked for, with
    the choice put into the environment (kept to be put back at the end)."""
    if _SERVICES not in config.stash:
        services = SessionServices.from_environment()
        config.stash[_SERVICES] = services
        environment = services.environment()
        config.stash[_SAVED_ENV] = {name: os.environ.get(name) for name in environment}
        os.environ.update(environment)
    return config.stash[_SERVICES]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    # Before collection: test modules may read the environment on import.
    _services(session.config)


def pytest_report_header(config: pytest.Config) -> str:
    return _services(config).summary()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _SERVICES in config.stash:
        config.stash[_SERVICES].stop()
        for name, value in config.stash[_SAVED_ENV].items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def session_services(request: pytest.FixtureRequest) -> Iterator[SessionServices]:
    """The session's broker and Redis; private ones stop when the session ends."""
    services = _services(request.config)
    yield services
    services.stop()


@pytest.fixture(scope="session")
def management(session_services: SessionServices) -> ManagementAPI:
    """The management HTTP API of the session's broker."""
    session_services.start_broker()
    api = ManagementAPI(session_services.management_url)
    api.overview()
    return api


@pytest.fixture(scope="session")
def redis_url(session_services: SessionServices) -> str:
    session_services.start_redis()
    return session_services.redis_url


@pytest.fixture(scope="session")
def vhost_factory(
    management: ManagementAPI, session_services: SessionServices
) -> Iterator[Callable[[str], str]]:
    """Make throw-away vhosts; returns the broker URL of each. All are deleted
    (with their queues and messages) when the session ends, so nothing one run
    leaves behind can satisfy or break the next."""
    created: list[str] = []

    def make(label: str) -> str:
        vhost = f"routing_demo-test-{label}-{uuid.uuid4().hex[:8]}"
        management.create_vhost(vhost)
        created.append(vhost)
        return f"{session_services.broker_url.rstrip('/')}/{vhost}"

    yield make
    for vhost in created:
        management.delete_vhost(vhost)
