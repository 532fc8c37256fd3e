"""compose.yaml's cluster configuration, booted on local nodes.

No container engine runs here, so the nodes of the ``cluster`` profile
cannot start as compose starts them; their configuration can. The test
takes ``conf/rabbitmq/cluster.conf``, renames the compose nodes
(``rabbit@rabbitmq-N``) to local ones, boots three local nodes with it and
checks that they form one cluster with the file's settings in force.
(``quorum-membership.conf`` holds RabbitMQ 4.x keys, which this machine's
3.10 refuses at boot: it is not loaded here.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from routing_demo.local_rabbitmq import RABBITMQ_SERVER, LocalCluster, LocalNode
from routing_demo.testing.ports import free_port_block
from routing_demo.testing.services import require_executable

from .conftest import DEADLINE

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

CLUSTER_CONF = Path(__file__).resolve().parents[2] / "conf" / "rabbitmq" / "cluster.conf"

#: Ports of this test's nodes: away from the session's cluster (5850-5949).
AMQP_PORTS = range(5950, 6050)
DIST_PORTS = range(25950, 26050)

#: A compose node's name: ``rabbit@`` and the service (host) name.
COMPOSE_NODE = re.compile(r"\brabbit@rabbitmq-(\d+)\b")
#: The lines that choose peer discovery and name the peers.
PEER_DISCOVERY = re.compile(
    r"^cluster_formation\.(peer_discovery_backend|classic_config\.nodes\.\d+)\s*="
)


def settings(text: str) -> list[str]:
    """A ``rabbitmq.conf``'s ``key = value`` lines, normalised."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.append(f"{key.strip()} = {value.strip()}")
    return found


def local_settings(text: str, nodenames: list[str]) -> list[str]:
    """``text``'s settings with every compose node renamed to its local twin."""

    def rename(match: re.Match[str]) -> str:
        return nodenames[int(match.group(1)) - 1]

    return [COMPOSE_NODE.sub(rename, line) for line in settings(text)]


def rabbit_env(node: LocalNode, key: str) -> str:
    """The value the running node holds for ``rabbit``'s ``key``."""
    return node.ctl("eval", f"application:get_env(rabbit, {key}).").strip()


def test_when_the_compose_cluster_conf_boots_on_local_nodes_then_they_form_one_cluster(
    tmp_path: Path,
) -> None:
    server = require_executable(RABBITMQ_SERVER, "RabbitMQ server")
    amqp, dist = free_port_block(3, AMQP_PORTS, DIST_PORTS)
    prefix = f"rdcc{amqp}"
    nodenames = [f"{prefix}-{index}@localhost" for index in (1, 2, 3)]
    lines = local_settings(CLUSTER_CONF.read_text(), nodenames)
    peers = [line for line in lines if PEER_DISCOVERY.match(line)]
    others = [line for line in lines if not PEER_DISCOVERY.match(line)]
    assert peers, f"{CLUSTER_CONF} chooses no peer discovery"
    assert not COMPOSE_NODE.search("\n".join(lines))

    cluster = LocalCluster(
        tmp_path / "cluster",
        amqp_base=amqp,
        dist_base=dist,
        management_base=None,
        prefix=prefix,
        # LocalCluster writes its own peer-discovery lines; the compose
        # file's, renamed, must be exactly those (asserted below).
        config_lines=others,
        server=server,
    )
    assert [node.nodename for node in cluster] == nodenames
    with cluster:
        for node in cluster:
            booted = settings((node.base_dir / "rabbitmq.conf").read_text())
            assert sorted(line for line in booted if PEER_DISCOVERY.match(line)) == sorted(peers)
            assert set(others) <= set(booted)
        cluster.wait_clustered(DEADLINE)
        status = cluster.cluster_status()
        assert set(status["running_nodes"]) == set(nodenames)
        assert set(status["disk_nodes"]) == set(nodenames)
        for node in cluster:
            assert rabbit_env(node, "cluster_partition_handling") == "{ok,pause_minority}"
        formation = rabbit_env(cluster.nodes[0], "cluster_formation")
        assert "{target_cluster_size_hint,3}" in formation
        assert "rabbit_peer_discovery_classic_config" in formation
