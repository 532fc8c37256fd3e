"""Integration tier: real ``celery worker`` processes on a real RabbitMQ.

Each result backend gets its own *stack*: a throw-away vhost, a client app
bound to it, and the topology's three workers (``-Q add``, ``-Q sub``,
``-X add,sub``) started by ``celery multi`` with node names unique to the
session. Tests parametrised over ``stack`` run once per backend.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest
import requests

from routing_demo.celery import client_app
from routing_demo.local_rabbitmq import LocalCluster
from routing_demo.rabbitmq import ManagementAPI, vhost_url
from routing_demo.topology import QUEUE_TYPE_ENV, QUEUES, build_queues
from routing_demo.workers import WorkerGroup, worker_nodes

from .stack import Stack

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


#: Every stack the routing suite can run on: a vhost of the shared node per
#: result backend, and a vhost of the session's 3-node cluster with quorum
#: queues (Redis results). Tests take ``stack`` on the first two unless they
#: ask for the cluster (``ON_EVERY_STACK`` in ``test_routing``).
STACKS = ("rpc", "redis", "quorum-cluster")


def cluster_vhost(cluster: LocalCluster, label: str) -> tuple[str, ManagementAPI]:
    """A throw-away vhost on the cluster: its ``;``-separated broker URL (every
    node) and the management API it was made with."""
    management = ManagementAPI(cluster.management_urls[0])
    vhost = f"routing_demo-test-{label}-{uuid.uuid4().hex[:8]}"
    management.create_vhost(vhost)
    return vhost_url(cluster.broker_url, vhost), management


class Stacks:
    """Builds each stack once per session, whichever fixture asks for it
    first (the common ``stack`` or ``test_routing``'s, which adds the
    cluster), and stops them all at the end."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.built: dict[str, Stack] = {}
        self._cluster_vhosts: list[tuple[ManagementAPI, str]] = []

    def get(self, request: pytest.FixtureRequest) -> Stack:
        backend: str = request.param
        if backend not in self.built:
            self.built[backend] = self._build(request, backend)
        return self.built[backend]

    def _build(self, request: pytest.FixtureRequest, backend: str) -> Stack:
        env: dict[str, str] = {}
        queues = QUEUES
        if backend == "quorum-cluster":
            cluster: LocalCluster = request.getfixturevalue("rabbitmq_cluster")
            backend_url = request.getfixturevalue("redis_url")
            broker_url, management = cluster_vhost(cluster, "quorum")
            queues = build_queues("quorum")
            env[QUEUE_TYPE_ENV] = queues.queue_type
        else:
            backend_url = "rpc://" if backend == "rpc" else request.getfixturevalue("redis_url")
            broker_url = request.getfixturevalue("vhost_factory")(backend)
            management = request.getfixturevalue("management")
        vhost = broker_url.split(";")[0].rsplit("/", 1)[1]
        if backend == "quorum-cluster":
            self._cluster_vhosts.append((management, vhost))
        workers = WorkerGroup(
            worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}"),
            self.tmp_path_factory.mktemp(f"workers-{backend}"),
            env={
                "CELERY_BROKER_URL": broker_url,
                "CELERY_RESULT_BACKEND": backend_url,
                # Retries wait exactly 1, 2, 4 s: a RETRY state lasts long enough to see.
                "ROUTING_DEMO_RETRY_JITTER": "0",
                **env,
            },
            worker_options=TEST_WORKER_OPTIONS,
        )
        client = client_app(broker_url, backend_url, queues=queues)
        workers.start()
        stack = Stack(backend, broker_url, backend_url, vhost, client, workers, management, queues)
        try:
            workers.wait_ready(client)
        except BaseException:
            self._stop(stack)
            raise
        return stack

    @staticmethod
    def _stop(stack: Stack) -> None:
        stack.workers.stop()
        stack.client.close()

    def close(self) -> None:
        for stack in self.built.values():
            self._stop(stack)
        for management, vhost in self._cluster_vhosts:
            with contextlib.suppress(requests.RequestException):
                management.delete_vhost(vhost)


@pytest.fixture(scope="session")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    built = Stacks(tmp_path_factory)
    yield built
    built.close()


@pytest.fixture(scope="session", params=["rpc", "redis"])
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    """A stack per result backend on the shared node."""
    return stacks.get(request)
