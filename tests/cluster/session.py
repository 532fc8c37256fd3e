"""The session's 3-node RabbitMQ cluster, for every test that needs one.

One cluster of local nodes (``routing_demo.local_rabbitmq.LocalCluster``)
boots once per session, on ports of its own, never the shared broker, with
the configuration of compose's cluster profile. As root each node runs on a
test host of its own (a network namespace, ``routing_demo.testing.netns``).
The fault tests (``tests/cluster``) and the routing suite's quorum stack
(``tests/integration``) share it; ``tests/conftest.py`` makes the fixtures
visible to both.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from routing_demo.local_rabbitmq import RABBITMQ_SERVER, LocalCluster
from routing_demo.testing import netns
from routing_demo.testing.netns import TestNetwork
from routing_demo.testing.ports import free_port_block
from routing_demo.testing.services import require_executable

__all__ = [
    "PEER_DISCOVERY",
    "compose_cluster_settings",
    "conf_settings",
    "rabbitmq_cluster",
    "test_network",
]

#: Port ranges of the session's cluster: away from the shared broker and from
#: the single private nodes (5700-5799).
CLUSTER_AMQP_PORTS = range(5850, 5950)
CLUSTER_DIST_PORTS = range(25850, 25950)
CLUSTER_MANAGEMENT_PORTS = range(15850, 15950)


#: compose.yaml's cluster profile configuration (beside rabbitmq.conf).
COMPOSE_CLUSTER_CONF = Path(__file__).resolve().parents[2] / "conf" / "rabbitmq" / "cluster.conf"
#: A compose node's name: ``rabbit@`` and the service (host) name.
COMPOSE_NODE = re.compile(r"\brabbit@rabbitmq-(\d+)\b")
#: The lines that choose peer discovery and name the peers.
PEER_DISCOVERY = re.compile(
    r"^cluster_formation\.(peer_discovery_backend|classic_config\.nodes\.\d+)\s*="
)


def conf_settings(text: str) -> list[str]:
    """A ``rabbitmq.conf``'s ``key = value`` lines, normalised."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.append(f"{key.strip()} = {value.strip()}")
    return found


def compose_cluster_settings(nodenames: list[str]) -> list[str]:
    """compose's ``cluster.conf`` settings, each compose node renamed to its
    local twin (``rabbit@rabbitmq-2`` -> ``nodenames[1]``)."""

    def rename(match: re.Match[str]) -> str:
        return nodenames[int(match.group(1)) - 1]

    return [
        COMPOSE_NODE.sub(rename, line) for line in conf_settings(COMPOSE_CLUSTER_CONF.read_text())
    ]


@pytest.fixture(scope="session")
def test_network() -> Iterator[TestNetwork | None]:
    """A network namespace per cluster node, when this session may make them
    (root and ``ip``); ``None`` otherwise: the nodes then share loopback and
    only the partition scenario cannot run."""
    if not netns.available():
        yield None
        return
    amqp, *_ = free_port_block(3, CLUSTER_AMQP_PORTS, CLUSTER_DIST_PORTS)
    network = TestNetwork(tag=amqp)
    network.create()
    try:
        yield network
    finally:
        network.destroy()


@pytest.fixture(scope="session")
def rabbitmq_cluster(
    tmp_path_factory: pytest.TempPathFactory, test_network: TestNetwork | None
) -> Iterator[LocalCluster]:
    """Three clustered RabbitMQ nodes, management on each, for the session:
    each on a test host of its own when there is a test network."""
    server = require_executable(RABBITMQ_SERVER, "RabbitMQ server")
    amqp, dist, management = free_port_block(
        3, CLUSTER_AMQP_PORTS, CLUSTER_DIST_PORTS, CLUSTER_MANAGEMENT_PORTS
    )
    hosts = test_network.hosts if test_network else ()
    prefix = f"rdc{amqp}"
    nodenames = [
        f"{prefix}-{index}@{hosts[index - 1].name if hosts else 'localhost'}" for index in (1, 2, 3)
    ]
    compose_lines = [
        line for line in compose_cluster_settings(nodenames) if not PEER_DISCOVERY.match(line)
    ]
    with LocalCluster(
        tmp_path_factory.mktemp("rabbitmq-cluster"),
        amqp_base=amqp,
        dist_base=dist,
        management_base=management,
        prefix=prefix,
        # compose.yaml's cluster settings (its peer-discovery lines, renamed,
        # are the ones LocalCluster writes), and a silent peer noticed in
        # about 10 s instead of about a minute.
        config_lines=[*compose_lines, "net_ticktime = 10"],
        hosts=hosts,
        server=server,
    ) as cluster:
        yield cluster
