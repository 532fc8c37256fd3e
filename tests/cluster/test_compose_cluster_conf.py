"""compose.yaml's cluster configuration, booted on local nodes.

No container engine runs here, so the nodes of the ``cluster`` profile
cannot start as compose starts them; their configuration can. The session's
cluster boots with ``conf/rabbitmq/cluster.conf``, its compose node names
(``rabbit@rabbitmq-N``) renamed to the local ones (``tests/cluster/conftest.py``);
this test checks that the file's settings are in force there and that the
nodes formed one cluster by them. (``quorum-membership.conf`` holds RabbitMQ
4.x keys, which this machine's 3.10 refuses at boot: it is not loaded here.)
"""

from __future__ import annotations

import pytest

from routing_demo.local_rabbitmq import LocalCluster, LocalNode

from .conftest import DEADLINE, PEER_DISCOVERY, compose_cluster_settings, conf_settings

pytestmark = [pytest.mark.integration, pytest.mark.cluster]


def rabbit_env(node: LocalNode, key: str) -> str:
    """The value the running node holds for ``rabbit``'s ``key``."""
    return node.ctl("eval", f"application:get_env(rabbit, {key}).").strip()


def test_when_the_compose_cluster_conf_boots_on_local_nodes_then_they_form_one_cluster(
    cluster: LocalCluster,
) -> None:
    nodenames = [node.nodename for node in cluster]
    lines = compose_cluster_settings(nodenames)
    peers = [line for line in lines if PEER_DISCOVERY.match(line)]
    assert peers, "compose's cluster.conf chooses no peer discovery"
    for node in cluster:
        booted = conf_settings((node.base_dir / "rabbitmq.conf").read_text())
        # compose's peer-discovery lines, renamed, are exactly LocalCluster's.
        assert sorted(line for line in booted if PEER_DISCOVERY.match(line)) == sorted(peers)
        assert set(lines) <= set(booted)
    cluster.wait_clustered(DEADLINE)
    status = cluster.cluster_status()
    assert set(status["running_nodes"]) == set(nodenames)
    assert set(status["disk_nodes"]) == set(nodenames)
    for node in cluster:
        assert rabbit_env(node, "cluster_partition_handling") == "{ok,pause_minority}"
    formation = rabbit_env(cluster.nodes[0], "cluster_formation")
    assert "{target_cluster_size_hint,3}" in formation
    assert "rabbit_peer_discovery_classic_config" in formation
