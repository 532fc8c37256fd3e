"""The ``routes`` commands on the session's 3-node cluster, as a user runs them.

``routes verify`` and ``routes workers status`` run as their own processes
with the environment ``routes cluster env`` prints (every node's URL, quorum
queues, a node's management API); ``routes cluster status`` and ``routes
cluster node`` run against the session's cluster through a run directory
whose ``rabbitmq-cluster`` is that cluster's directory. The test kills nodes
and leaves the cluster whole again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner

from routing_demo import celery_app
from routing_demo.cli import routes
from routing_demo.cli._common import EXIT_FAILED, EXIT_MISMATCH
from routing_demo.local_rabbitmq import LocalCluster, LocalNode
from routing_demo.rabbitmq import ManagementAPI
from routing_demo.topology import QUEUE_TYPE_ENV

from .conftest import DEADLINE, QUORUM, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

ROOT = Path(__file__).resolve().parents[2]

#: Every queue of the topology: all of them quorum queues on the cluster.
QUORUM_QUEUES = (*QUORUM.task_queues, *QUORUM.holding_queues)
QUEUE_NAMES = sorted(queue.name for queue in QUORUM_QUEUES)


def routes_command(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``celery -A routing_demo routes <args>`` in a process of its own, as
    after ``eval "$(celery -A routing_demo routes cluster env)"``: the first
    node's management API (the tests never kill that node)."""
    env = {
        **os.environ,
        "CELERY_BROKER_URL": cluster.broker_url,
        QUEUE_TYPE_ENV: "quorum",
        "RABBITMQ_MANAGEMENT_URL": cluster.nodes[0].management_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "routing_demo", "routes", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    print(f"\n$ celery -A routing_demo routes {' '.join(args)}  # exit {done.returncode}")
    print(done.stdout + done.stderr, end="")
    return done


def verify(cluster: LocalCluster) -> tuple[int, dict[str, Any], str]:
    """``routes verify --skip-consumers`` (no worker runs here): the exit code,
    the JSON document and the text output."""
    text = routes_command(cluster, "verify", "--skip-consumers")
    document = routes_command(cluster, "verify", "--skip-consumers", "--json")
    assert text.returncode == document.returncode, text.stdout + text.stderr
    return document.returncode, json.loads(document.stdout), text.stdout


def workers_status(cluster: LocalCluster) -> tuple[dict[str, Any], str]:
    """``routes workers status``: no worker runs here, so it exits 1; what
    matters is what it says of the cluster."""
    text = routes_command(cluster, "workers", "status", "--timeout", "1")
    document = routes_command(cluster, "workers", "status", "--timeout", "1", "--json")
    assert text.returncode == document.returncode == EXIT_FAILED, text.stderr
    return json.loads(document.stdout), text.stdout


def cluster_cli(run_dir: Path, *args: str) -> tuple[int, str]:
    """``routes cluster <args> --run-dir run_dir`` through click's runner."""
    context = CLIContext(app=celery_app, no_color=True, workdir=None)
    result = CliRunner().invoke(
        routes, ["cluster", *args, "--run-dir", str(run_dir)], obj=context, catch_exceptions=False
    )
    return result.exit_code, result.output


def cluster_status(run_dir: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    code, output = cluster_cli(run_dir, "status", "--json")
    return code, {row["node"]: row for row in json.loads(output)["nodes"]}


@pytest.fixture
def run_dir(cluster: LocalCluster, tmp_path: Path) -> Path:
    """A run directory whose ``rabbitmq-cluster`` is the session's cluster."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "rabbitmq-cluster").symlink_to(cluster.base_dir, target_is_directory=True)
    return run


def queue_states(
    cluster: LocalCluster,
) -> dict[str, tuple[str | None, set[str], set[str]]] | None:
    """Each topology queue's leader, online members and members, from the
    first node's management API; ``None`` while it cannot tell."""
    api = ManagementAPI(cluster.nodes[0].management_url)
    states = {}
    for name in QUEUE_NAMES:
        try:
            info = api.queue("/", name)
        except Exception:
            return None
        states[name] = (
            info.get("leader") or None,
            set(info.get("online") or ()),
            set(info.get("members") or ()),
        )
    return states


#: Seconds a queue state must hold before a test trusts it: the management
#: API's ``online`` comes from collected statistics (every 5 s), and right
#: after a kill an older sample can still show the dead member online.
STABLE_FOR = 8.0


def wait_stable(condition: Callable[[], bool], message: str) -> None:
    """Wait until ``condition`` has held for ``STABLE_FOR`` seconds on end."""
    since: list[float] = []

    def held() -> bool:
        if not condition():
            since.clear()
            return False
        since[:] = since or [time.monotonic()]
        return time.monotonic() - since[0] >= STABLE_FOR

    wait_until(held, timeout=DEADLINE, message=message, interval=1.0)


def wait_online(cluster: LocalCluster, online: set[str]) -> None:
    """Wait until every topology queue has exactly ``online`` members online
    and a leader among them, steadily."""

    def settled() -> bool:
        states = queue_states(cluster)
        return states is not None and all(
            up == online and leader in online for leader, up, _ in states.values()
        )

    wait_stable(settled, f"queues not online on exactly {sorted(online)}")


@pytest.fixture
def quorum_topology(cluster: LocalCluster, cluster_app: Celery) -> Iterator[LocalCluster]:
    """The topology's quorum queues declared on the cluster (as a worker
    declares them) and whole; afterwards every node runs again and every
    queue is whole, whatever the test did."""
    with cluster_app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in QUORUM_QUEUES:
            queue(channel).declare()
    everyone = {node.nodename for node in cluster}
    wait_online(cluster, everyone)
    yield cluster
    for node in cluster:
        if not node.running:
            cluster.start_node(node, DEADLINE)
    wait_online(cluster, everyone)


def node_rows(document: dict[str, Any]) -> dict[str, bool]:
    return {node["name"]: node["running"] for node in document["cluster"]["nodes"]}


def quorum_rows(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {queue["name"]: queue for queue in document["cluster"]["quorum_queues"]}


def test_when_every_node_runs_then_verify_and_status_show_them_and_every_queue_whole(
    quorum_topology: LocalCluster,
) -> None:
    cluster = quorum_topology
    everyone = sorted(node.nodename for node in cluster)

    code, document, text = verify(cluster)
    assert code == 0, text
    assert document["ok"] is True
    assert document["warnings"] == []
    assert node_rows(document) == dict.fromkeys(everyone, True)
    queues = quorum_rows(document)
    assert sorted(queues) == QUEUE_NAMES
    for queue in queues.values():
        assert queue["members"] == queue["online"] == everyone
        assert queue["leader"] in everyone
        assert queue["below_quorum"] is False
    assert "cluster: 3 node(s), 3 running" in text
    assert "3/3 members online (2 needed)" in text

    status, text = workers_status(cluster)
    assert node_rows(status) == dict.fromkeys(everyone, True)
    assert sorted(quorum_rows(status)) == QUEUE_NAMES
    assert status["warnings"] == []
    assert "cluster: 3 node(s), 3 running" in text


def quorum_call(node: LocalNode, function: str, *args: str) -> str:
    """``rabbit_quorum_queue:<function>(<<"/">>, args…)`` on ``node``: its
    printed result, or the error while the node cannot answer."""
    try:
        return node.ctl(
            "eval", f'rabbit_quorum_queue:{function}(<<"/">>, {", ".join(args)}).'
        ).strip()
    except RuntimeError as exc:
        return str(exc)


def test_when_a_node_dies_then_verify_warns_and_a_queue_without_its_majority_fails_it(
    quorum_topology: LocalCluster, run_dir: Path
) -> None:
    """``add`` first shrunk to two members (nodes 2 and 3, all online), then
    node 3 killed through ``routes cluster node kill``: the cluster keeps its
    majority and every other queue its quorum (verify warns about them), but
    ``add`` has 1 of its 2 members online and verify fails naming it. (Two of
    three nodes down would not show it: with pause_minority the survivor
    stops serving, management API included, and verify exits 4.)"""
    cluster = quorum_topology
    first, second, third = cluster.nodes
    everyone = {node.nodename for node in cluster}
    add = QUORUM.add.name
    assert quorum_call(second, "delete_member", f'<<"{add}">>', f"'{first.nodename}'") == "ok"
    try:
        code, output = cluster_cli(run_dir, "node", "kill", third.nodename)
        assert code == 0, output
        assert f"{third.nodename}: down" in output
        wait_stable(
            lambda: (
                (states := queue_states(cluster)) is not None
                and states[add][1:] == ({second.nodename}, {second.nodename, third.nodename})
                and all(
                    online == everyone - {third.nodename}
                    for name, (_, online, _) in states.items()
                    if name != add
                )
            ),
            f"{add} not down to one of its two members",
        )
        code, rows = cluster_status(run_dir)
        assert code == EXIT_FAILED
        assert rows[third.nodename]["running"] is False
        assert rows[third.nodename]["pid"] is None
        assert rows[third.nodename]["clustered"] is False
        for node in (first, second):
            assert rows[node.nodename]["running"] is True
            assert rows[node.nodename]["clustered"] is True
            assert rows[node.nodename]["pid"] == node.pid
            assert rows[node.nodename]["amqp_port"] == node.ports.amqp
            assert rows[node.nodename]["management_port"] == node.ports.management

        code, document, text = verify(cluster)
        assert code == EXIT_MISMATCH, text
        assert [(p["kind"], p["subject"]) for p in document["problems"]] == [("below-quorum", add)]
        assert (
            f"error: below-quorum: {add}: 1 of 2 members online ({second.nodename}), 2 needed; "
            f"offline: {third.nodename}" in text
        )
        below = quorum_rows(document)[add]
        assert below["below_quorum"] is True
        assert below["leader"] is None
        assert node_rows(document)[third.nodename] is False
        for name, queue in quorum_rows(document).items():
            if name != add:
                assert queue["offline"] == [third.nodename]
                assert queue["below_quorum"] is False
                assert queue["leader"] in everyone - {third.nodename}
        assert f"node {third.nodename} is down" in document["warnings"]
        assert f"warning: node {third.nodename} is down" in text
        assert "2/3 members online (2 needed): quorum kept" in text
        status, text = workers_status(cluster)
        assert status["healthy"] is False
        assert [n for n, q in quorum_rows(status).items() if q["below_quorum"]] == [add]
        assert f"error: quorum queue {add} is below quorum" in text
        assert f"warning: node {third.nodename} is down" in text
    finally:
        code, output = cluster_cli(run_dir, "node", "start", third.nodename, "--timeout", "180")
        wait_until(
            lambda: (
                quorum_call(second, "add_member", f'<<"{add}">>', f"'{first.nodename}'", "30000")
                in ("ok", "{error,already_a_member}")
            ),
            timeout=DEADLINE,
            message=f"{first.nodename} not added back to {add}",
            interval=2.0,
        )
    assert code == 0, output
    assert f"{third.nodename}: running" in output
    wait_online(cluster, everyone)
    code, rows = cluster_status(run_dir)
    assert code == 0
    assert all(row["running"] and row["clustered"] for row in rows.values())
    code, document, text = verify(cluster)
    assert code == 0, text
    assert document["warnings"] == []
