"""pytest fixtures that give pytest-celery's ``celery_setup`` local processes.

pytest-celery builds every broker, backend and worker from Docker; these
fixtures override the leaves of its fixture tree, so ``celery_setup`` (and
everything else of its API) works unchanged:

==========================  ==================================================
``celery_broker``           a throw-away vhost of the shared RabbitMQ
``celery_backend``          a database of the shared Redis
``celery_worker_cluster``   one ``celery -A <app> worker`` per worker selection
``celery_setup_cls``        a ``ProjectSetup``: the project's configuration
``celery_setup_app``        a fresh app per test, made current
==========================  ==================================================

Which app: ``local_worker_app`` names what ``celery -A`` loads (routing_demo
unless a project overrides it, e.g. ``return "shop"``); the workers are the
ones its ``routes_worker_selections`` setting declares (node name ->
``"-Q orders"``/``"-X orders"``), and the setup app carries its settings.

Fault tests swap in a broker or backend they may stop, in the pytest-celery
way, by overriding ``celery_broker_cluster``/``celery_backend_cluster`` with
``private_rabbitmq_broker``/``private_redis_backend``. Workers of other
shapes come from ``local_worker_factory``.

The shared services come from the session fixtures ``vhost_factory`` and
``redis_url`` (``routing_demo.testing.pytest_plugin``), which skip locally
and fail in CI when a service is missing.

With ``--docker`` (or ``ROUTING_DEMO_TEST_DOCKER=1``) the brokers and the
backend are pytest-celery's own RabbitMQ and Redis containers; the workers
stay local processes running this checkout. Without it, nothing here
touches Docker.

Another project opts in to all of it (with the services) from its top-level
``conftest.py``: ``pytest_plugins = ["routing_demo.testing.pytest_plugin"]``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from celery import Celery
from celery._state import get_current_app
from celery.app.utils import find_app
from pytest_celery import (
    CeleryTestBackend,
    CeleryTestBroker,
    CeleryTestWorker,
    CeleryWorkerCluster,
    RabbitMQTestBroker,
    RedisTestBackend,
)

from ..workers import WorkerNode, worker_nodes
from .app import ProjectSetup, RoutingDemoSetup
from .defaults import AMQP_PORTS, RABBITMQ_SERVER, REDIS_SERVER, WORKER_APP
from .ports import free_ports
from .process import LocalProcessContainer
from .rabbitmq import PrivateRabbitMQNode, PyAMQPRabbitMQContainer, SharedRabbitMQVhost
from .redis import PrivateRedisServer, SharedRedisDb
from .services import require_executable, unavailable
from .worker import LocalWorkerContainer

#: The fixtures a ``conftest.py`` or a plugin takes to run ``celery_setup``
#: locally, in one line: ``from routing_demo.testing.fixtures import *``.
#: ``local_worker_app`` and ``local_project_app`` are not among them:
#: ``routing_demo.testing.plugin`` provides them for the whole run, where any
#: ``conftest.py`` can still override them.
__all__ = [
    "celery_backend",
    "celery_broker",
    "celery_on_docker",
    "celery_setup_app",
    "celery_setup_cls",
    "celery_worker_cluster",
    "default_rabbitmq_broker_cls",
    "default_rabbitmq_broker_ports",
    "local_worker_factory",
    "local_worker_options",
    "private_rabbitmq_broker",
    "private_redis_backend",
]

#: Environment variable that does what ``--docker`` does.
DOCKER_ENV = "ROUTING_DEMO_TEST_DOCKER"

#: A factory of started (not yet ready) local workers.
WorkerFactory = Callable[..., CeleryTestWorker]


@pytest.fixture(scope="session")
def celery_on_docker(request: pytest.FixtureRequest) -> bool:
    """True when brokers and backends come from pytest-celery's Docker containers.

    Asked for Docker without a daemon to answer, a test is skipped locally
    and fails in CI, as for any other missing service.
    """
    wanted = request.config.getoption("celery_docker", default=False) or os.environ.get(DOCKER_ENV)
    if not wanted:
        return False
    import docker  # only now: without --docker nothing may reach for Docker

    try:
        docker.from_env().ping()
    except Exception as exc:
        unavailable(f"--docker given, but no Docker daemon answers ({exc})")
    return True


# --- the project's app -----------------------------------------------------------
@pytest.fixture
def local_worker_app() -> str:
    """What ``celery -A`` loads in every local worker, and whose settings the
    setup app carries: routing_demo's app. A project returns its own
    (``"shop"``, ``"shop.celery:app"``), importable from the workers'
    ``pythonpath`` (``local_worker_options``)."""
    return WORKER_APP


@pytest.fixture
def local_project_app(local_worker_app: str) -> Celery | None:
    """The app ``local_worker_app`` names, loaded as ``celery -A`` finds it;
    ``None`` for routing_demo, whose topology module answers for it (its
    worker selections, its declared queues)."""
    if local_worker_app == WORKER_APP:
        return None
    return find_app(local_worker_app)


# --- the setup app ---------------------------------------------------------------
@pytest.fixture
def celery_setup_cls(local_worker_app: str) -> type[ProjectSetup]:
    if local_worker_app == WORKER_APP:
        return RoutingDemoSetup
    return ProjectSetup.for_app(local_worker_app)


@pytest.fixture
def celery_setup_app(
    celery_setup_cls: type[ProjectSetup],
    celery_setup_config: dict,
    celery_setup_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Celery]:
    """A new app for every test, made current for its duration.

    A fresh app because an app whose ``broker_url`` changes keeps its old
    connection pool. ``CELERY_BROKER_URL``/``CELERY_RESULT_BACKEND`` are
    removed from the environment for the test: Celery would prefer them to
    the test's broker and backend.
    """
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    previous = get_current_app()
    app = celery_setup_cls.create_setup_app(
        celery_setup_config=celery_setup_config,
        celery_setup_app_name=celery_setup_name,
    )
    app.set_current()
    yield app
    app.close()
    previous.set_current()


# --- brokers -----------------------------------------------------------------------
@pytest.fixture
def default_rabbitmq_broker_cls() -> type[PyAMQPRabbitMQContainer]:
    """pytest-celery's Docker RabbitMQ (``--docker`` only), as ``pyamqp://``."""
    return PyAMQPRabbitMQContainer


@pytest.fixture
def default_rabbitmq_broker_ports() -> dict[str, int]:
    """A fixed host port for pytest-celery's Docker RabbitMQ (``--docker`` only):
    with a random one, ``docker restart`` may move it under the local workers."""
    return {"5672/tcp": free_ports(AMQP_PORTS)[0]}


@pytest.fixture
def celery_broker(
    request: pytest.FixtureRequest, celery_on_docker: bool
) -> Iterator[CeleryTestBroker]:
    """A vhost of the shared RabbitMQ of its own for each test (deleted at the
    end of the session), or pytest-celery's RabbitMQ container with ``--docker``."""
    if celery_on_docker:
        yield request.getfixturevalue("celery_rabbitmq_broker")
        return
    vhost_factory = request.getfixturevalue("vhost_factory")
    broker = RabbitMQTestBroker(SharedRabbitMQVhost(vhost_factory("setup")))
    yield broker
    broker.teardown()


#: The pytest-celery node type wrapping a private service.
N = TypeVar("N", RabbitMQTestBroker, RedisTestBackend)


def _started(process: LocalProcessContainer, node_cls: type[N]) -> Iterator[N]:
    """Start a private service, wrap it in its pytest-celery node, and tear
    both down after the test, whether it passed or not."""
    process.start()
    node = node_cls(process)
    try:
        process.ready()
        yield node
    finally:
        node.teardown()


@pytest.fixture
def private_rabbitmq_broker(
    request: pytest.FixtureRequest,
    celery_on_docker: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryTestBroker]:
    """A RabbitMQ node of this test's own, which it may ``kill()`` and ``restart()``."""
    if celery_on_docker:
        yield request.getfixturevalue("celery_rabbitmq_broker")
        return
    server = require_executable(RABBITMQ_SERVER, "RabbitMQ server")
    node = PrivateRabbitMQNode(tmp_path_factory.mktemp("rabbitmq"), server=server)
    yield from _started(node, RabbitMQTestBroker)


# --- backends ----------------------------------------------------------------------
@pytest.fixture
def celery_backend(
    request: pytest.FixtureRequest, celery_on_docker: bool
) -> Iterator[CeleryTestBackend]:
    """A database of the shared Redis, or pytest-celery's Redis container with ``--docker``."""
    if celery_on_docker:
        yield request.getfixturevalue("celery_redis_backend")
        return
    backend = RedisTestBackend(SharedRedisDb(request.getfixturevalue("redis_url")))
    yield backend
    backend.teardown()


@pytest.fixture
def private_redis_backend(
    request: pytest.FixtureRequest,
    celery_on_docker: bool,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryTestBackend]:
    """A ``redis-server`` of this test's own, which it may ``kill()`` and ``restart()``."""
    if celery_on_docker:
        yield request.getfixturevalue("celery_redis_backend")
        return
    server = require_executable(REDIS_SERVER, "Redis server")
    redis = PrivateRedisServer(tmp_path_factory.mktemp("redis"), server=server)
    yield from _started(redis, RedisTestBackend)


# --- workers -----------------------------------------------------------------------
@pytest.fixture
def local_worker_options() -> dict[str, object]:
    """Extra ``LocalWorkerContainer`` options for every worker of a test
    (``include``, ``pythonpath``, ``concurrency``, ``extra_args``…). Override it."""
    return {}


@pytest.fixture
def local_worker_factory(
    celery_worker_cluster_config: dict,
    celery_setup_app: Celery,
    local_worker_app: str,
    local_project_app: Celery | None,
    local_worker_options: dict[str, object],
    tmp_path: Path,
) -> Iterator[WorkerFactory]:
    """Start local workers of ``local_worker_app`` on the test's broker and backend.

    ``make(node, **options)`` starts the worker for a
    ``routing_demo.workers.WorkerNode`` and returns its ``CeleryTestWorker``
    at once; call ``worker.ready()`` before relying on it. Every worker is
    killed (and its process group checked gone) at the end of the test.
    """
    broker = celery_worker_cluster_config["celery_broker_cluster_config"]
    backend = celery_worker_cluster_config["celery_backend_cluster_config"]
    started: list[LocalWorkerContainer] = []

    def make(node: WorkerNode, **options: object) -> CeleryTestWorker:
        container = LocalWorkerContainer.for_node(
            node,
            broker_url=";".join(broker["host_urls"]),
            result_backend=";".join(backend["host_urls"]) if backend else None,
            log_dir=tmp_path,
            **{
                "app_name": local_worker_app,
                "app": local_project_app,
                **local_worker_options,
                **options,
            },
        )
        started.append(container)
        container.start()
        return CeleryTestWorker(container, app=celery_setup_app)

    yield make
    for container in started:
        container.teardown()


@pytest.fixture
def celery_worker_cluster(
    local_worker_factory: WorkerFactory, local_project_app: Celery | None
) -> Iterator[CeleryWorkerCluster]:
    """A worker per selection of the project's app (``routes_worker_selections``;
    for routing_demo ``add``, ``sub``, and the ``-X add,sub`` default-queue
    worker), each ready to consume when the test starts."""
    nodes = worker_nodes(app=local_project_app)
    if not nodes:
        raise ValueError(
            f"{local_project_app} declares no routes_worker_selections: no worker to start"
        )
    workers = [local_worker_factory(node) for node in nodes]
    for worker in workers:
        worker.ready()
    cluster = CeleryWorkerCluster(*workers)
    yield cluster
    cluster.teardown()
