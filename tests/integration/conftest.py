"""Integration tier: real ``celery worker`` processes on a real RabbitMQ.

Each result backend gets its own *stack*: a throw-away vhost, a client app
bound to it, and the topology's three workers (``-Q add``, ``-Q sub``,
``-X add,sub``) started by ``celery multi`` with node names unique to the
session. Tests parametrised over ``stack`` run once per backend.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from routing_demo.workers import WorkerGroup, worker_nodes

from .stack import Stack, make_client

#: Options for test workers that do not change routing: one pool process,
#: and no start-up chatter with the other workers.
TEST_WORKER_OPTIONS = (
    "--concurrency=1",
    "--loglevel=INFO",
    "--without-mingle",
    "--without-gossip",
)


@pytest.fixture(scope="session", autouse=True)
def _explicit_broker_only() -> Iterator[None]:
    """Celery lets ``CELERY_BROKER_URL``/``CELERY_RESULT_BACKEND`` override any
    app's configuration; the tests name their vhosts explicitly, so a value
    left in the shell must not redirect them."""
    saved = {
        name: os.environ.pop(name, None) for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")
    }
    yield
    os.environ.update({name: value for name, value in saved.items() if value is not None})


@pytest.fixture(scope="session", params=["rpc", "redis"])
def stack(
    request: pytest.FixtureRequest,
    vhost_factory: Callable[[str], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    backend: str = request.param
    backend_url = "rpc://" if backend == "rpc" else request.getfixturevalue("redis_url")
    broker_url = vhost_factory(backend)
    workers = WorkerGroup(
        worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}"),
        tmp_path_factory.mktemp(f"workers-{backend}"),
        env={"CELERY_BROKER_URL": broker_url, "CELERY_RESULT_BACKEND": backend_url},
        worker_options=TEST_WORKER_OPTIONS,
    )
    client = make_client(broker_url, backend_url)
    workers.start()
    try:
        workers.wait_ready(client)
        yield Stack(backend, broker_url, backend_url, broker_url.rsplit("/", 1)[1], client, workers)
    finally:
        workers.stop()
        client.close()
