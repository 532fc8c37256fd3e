"""The local pytest-celery setup as one opt-in pytest plugin, for any project.

Registering it gives a test session RabbitMQ and Redis without Docker, and
makes pytest-celery's ``celery_setup`` run on them with real local workers:

- ``session_services``: the broker and Redis named by
  ``ROUTING_DEMO_TEST_BROKER``/``ROUTING_DEMO_TEST_REDIS`` (default:
  loopback) when they answer with what the tests need (AMQP login and
  management API; ``PING``), otherwise a private node and ``redis-server``
  of the session's own, started on first use and stopped by their PIDs. The
  choice is made before collection and printed in the header.
- ``management``, ``vhost_factory``, ``redis_url``: the management API, a
  throw-away vhost per call (deleted when the session ends), the Redis URL.
- the fixtures of ``routing_demo.testing.fixtures`` (``celery_broker``,
  ``celery_backend``, ``celery_worker_cluster``…), and from
  ``routing_demo.testing.plugin`` the ``--docker`` option and
  ``local_worker_app``, the app the workers run.

It is never registered on its own: installing the package leaves a project
that runs pytest-celery on Docker as it was. A project opts in from its
top-level ``conftest.py``::

    pytest_plugins = ["routing_demo.testing.pytest_plugin"]

    @pytest.fixture
    def local_worker_app():
        return "shop"  # what `celery -A` loads; workers from its routes_worker_selections

or with ``-p routing_demo.testing.pytest_plugin``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from ..rabbitmq import ManagementAPI, vhost_url
from . import fixtures
from .fixtures import *  # noqa: F403  (pytest finds the fixtures by name)
from .session_services import SessionServices

#: ``--docker``: a plugin of its own, registered once whoever asks first.
pytest_plugins = ["routing_demo.testing.plugin"]

__all__ = [
    *fixtures.__all__,
    "management",
    "pytest_report_header",
    "pytest_sessionstart",
    "pytest_unconfigure",
    "redis_url",
    "services_for",
    "session_services",
    "vhost_factory",
]

#: Where the session keeps its services and the environment it replaced.
_SERVICES = pytest.StashKey[SessionServices]()
_SAVED_ENV = pytest.StashKey[dict[str, str | None]]()


def services_for(config: pytest.Config) -> SessionServices:
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
    services_for(session.config)


def pytest_report_header(config: pytest.Config) -> str:
    return services_for(config).summary()


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
    services = services_for(request.config)
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
    """The session's Redis (the private one started on first use)."""
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
        return vhost_url(session_services.broker_url, vhost)

    yield make
    for vhost in created:
        management.delete_vhost(vhost)
