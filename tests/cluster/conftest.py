"""The routing set-up on a 3-node RabbitMQ cluster with quorum queues.

One cluster of local nodes (``routing_demo.local_rabbitmq.LocalCluster``)
boots once per session, on ports of its own, never the shared broker; tests
kill, stop and restart its nodes and leave it whole again. Workers are real
``celery worker`` processes started through ``celery multi`` with every
node's URL in ``CELERY_BROKER_URL`` and ``ROUTING_DEMO_QUEUE_TYPE=quorum``;
each records what it ran in a ledger (Redis), so a test compares the ids it
sent with the ids that ran.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from routing_demo.celery import RoutingDemoCelery, client_app
from routing_demo.local_rabbitmq import LocalCluster, LocalNode
from routing_demo.polling import wait_until
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.testing.checks import purge_queues
from routing_demo.testing.ledger import Ledger, LedgerReport, Producer  # noqa: F401
from routing_demo.topology import build_queues
from routing_demo.workers import WorkerGroup, worker_nodes

from .session import PEER_DISCOVERY, compose_cluster_settings, conf_settings  # noqa: F401

#: The quorum variant of the topology, as the workers declare it.
QUORUM = build_queues("quorum")

#: Seconds a test waits for its tasks, a node or a leader.
DEADLINE = 180.0


def show(scenario: str, report: LedgerReport) -> None:
    """Print a test's ledger (``pytest -s`` shows it)."""
    print(f"\nLEDGER cluster: {scenario}: {report}")


def management_of(cluster: LocalCluster) -> ManagementAPI:
    """The management API of the first node that answers."""
    node = wait_until(
        lambda: next((node for node in cluster if node.running and node.answers()), None),
        timeout=DEADLINE,
        message="no node of the cluster answers",
    )
    return ManagementAPI(node.management_url)


def queue_info(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return management_of(cluster).queue("/", name)


def leader_of(cluster: LocalCluster, name: str) -> LocalNode | None:
    """The node that leads quorum queue ``name`` now (``None`` during an
    election)."""
    leader = queue_info(cluster, name).get("leader")
    return cluster.node(leader) if leader else None


def wait_quorum_whole(cluster: LocalCluster) -> None:
    """Wait until every task queue has a leader and all members online."""
    members = {node.nodename for node in cluster}

    def whole() -> bool:
        api = management_of(cluster)
        for queue in QUORUM.task_queues:
            try:
                info = api.queue("/", queue.name)
            except Exception:
                return False
            if not info.get("leader") or set(info.get("online", [])) != members:
                return False
        return True

    wait_until(whole, timeout=DEADLINE, message="quorum queues not whole again", interval=1.0)


def wait_unacked_zero(cluster: LocalCluster) -> None:
    """Wait until no task queue holds an unacknowledged or ready message: a
    message stuck with no owning channel after a leader election would stay
    unacked forever (rabbitmq-server#15473)."""

    def settled() -> bool:
        api = management_of(cluster)
        for queue in QUORUM.task_queues:
            info = api.queue("/", queue.name)
            if info.get("messages_unacknowledged", 1) or info.get("messages_ready", 1):
                return False
        return True

    wait_until(settled, timeout=DEADLINE, message="task queues kept messages", interval=1.0)


@pytest.fixture
def cluster(rabbitmq_cluster: LocalCluster) -> LocalCluster:
    """The session's cluster, every node running and every queue whole."""
    for node in rabbitmq_cluster:
        if not node.running:
            rabbitmq_cluster.start_node(node, DEADLINE)
    if any(queue_info_safe(rabbitmq_cluster, q.name) for q in QUORUM.task_queues):
        wait_quorum_whole(rabbitmq_cluster)
    purge_queues(rabbitmq_cluster.broker_url, (*QUORUM.task_queues, QUORUM.dead_letter))
    return rabbitmq_cluster


def queue_info_safe(cluster: LocalCluster, name: str) -> dict[str, Any] | None:
    try:
        return queue_info(cluster, name)
    except Exception:
        return None


@pytest.fixture
def ledger(redis_url: str) -> Iterator[Ledger]:
    book = Ledger(redis_url)
    yield book
    book.clear()
    book.close()


def cluster_env(cluster: LocalCluster, redis_url: str) -> dict[str, str]:
    """What a worker or client of the cluster gets in its environment."""
    return {
        "CELERY_BROKER_URL": cluster.broker_url,
        "CELERY_RESULT_BACKEND": redis_url,
        "ROUTING_DEMO_QUEUE_TYPE": "quorum",
    }


@pytest.fixture
def cluster_app(cluster: LocalCluster, redis_url: str) -> Iterator[Celery]:
    """A client of the cluster with the project's settings and quorum queues."""
    app = client_app(
        cluster.broker_url,
        redis_url,
        queues=QUORUM,
        name="routing_demo_cluster_client",
        app_cls=RoutingDemoCelery,
    )
    yield app
    app.close()


@pytest.fixture
def cluster_workers(
    cluster: LocalCluster, cluster_app: Celery, ledger: Ledger, redis_url: str, tmp_path: Path
) -> Iterator[WorkerGroup]:
    """One worker per queue on the cluster, recording into the ledger."""
    group = WorkerGroup(
        worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}"),
        tmp_path / "workers",
        env={**cluster_env(cluster, redis_url), **ledger.env},
        worker_options=(
            "--concurrency=2",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
            "--include=routing_demo.testing.ledger",
        ),
    )
    group.start()
    try:
        group.wait_ready(cluster_app, timeout=DEADLINE)
        yield group
    finally:
        group.stop(timeout=60)
