"""The cluster behind the broker as its management API sees it: which nodes
run, and whether each quorum queue of the app still has a majority.

A quorum queue is a Raft group: it takes and delivers messages only while
more than half of its members are online. One member down with the majority
kept is a warning (the queue works; one more loss stops it); fewer members
online than a majority is an error. A single node with classic queues has
nothing to report here, and the commands then print nothing of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import requests

from ..rabbitmq import ManagementAPI

__all__ = ["ClusterHealth", "ClusterNode", "QuorumQueueHealth", "read_cluster_health"]


@dataclass(frozen=True)
class ClusterNode:
    name: str
    running: bool
    #: Nodes this one cannot reach although they run (a network partition).
    partitions: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "running": self.running, "partitions": list(self.partitions)}


@dataclass(frozen=True)
class QuorumQueueHealth:
    """One quorum queue's Raft group: its ``members`` (nodes holding a
    replica), those ``online`` now, and the ``leader`` that serves it."""

    name: str
    leader: str | None
    members: tuple[str, ...]
    online: tuple[str, ...]

    @property
    def needed(self) -> int:
        """Members that must be online for the queue to work: a majority."""
        return len(self.members) // 2 + 1

    @property
    def offline(self) -> tuple[str, ...]:
        return tuple(member for member in self.members if member not in self.online)

    @property
    def below_quorum(self) -> bool:
        return len(self.online) < self.needed

    @property
    def serving_leader(self) -> str | None:
        """The leader, when it can serve: online, with a majority behind it.
        Below quorum the broker may still name the last one, which can
        commit nothing."""
        if self.below_quorum or self.leader not in self.online:
            return None
        return self.leader

    def state(self) -> str:
        online = f"{len(self.online)}/{len(self.members)} members online ({self.needed} needed)"
        if self.below_quorum:
            return f"{online}: BELOW QUORUM, takes and delivers nothing"
        if self.offline:
            return f"{online}: quorum kept"
        return online

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "leader": self.serving_leader,
            "members": list(self.members),
            "online": list(self.online),
            "offline": list(self.offline),
            "needed": self.needed,
            "below_quorum": self.below_quorum,
        }


@dataclass(frozen=True)
class ClusterHealth:
    #: Every node of the cluster; ``None`` when the management user may not
    #: list them (``/api/nodes`` needs the ``monitoring`` tag).
    nodes: tuple[ClusterNode, ...] | None
    quorum_queues: tuple[QuorumQueueHealth, ...]
    #: Why ``nodes`` is missing.
    nodes_unknown: str | None = None

    @property
    def shown(self) -> bool:
        """Worth a report: several nodes or a quorum queue. On one node with
        classic queues the commands' output stays what it always was."""
        return bool(self.quorum_queues) or (self.nodes is not None and len(self.nodes) > 1)

    @property
    def below_quorum(self) -> list[QuorumQueueHealth]:
        return [queue for queue in self.quorum_queues if queue.below_quorum]

    def warnings(self) -> list[str]:
        """What still works but has lost its margin."""
        found = [f"node {node.name} is down" for node in self.nodes or () if not node.running]
        found += [
            f"node {node.name} cannot reach {', '.join(node.partitions)} (network partition)"
            for node in self.nodes or ()
            if node.partitions
        ]
        # One line for the queues that lost the same members.
        degraded: dict[tuple[tuple[str, ...], int, int, int], list[str]] = {}
        for queue in self.quorum_queues:
            if queue.below_quorum:
                continue
            if queue.offline:
                key = (queue.offline, len(queue.online), len(queue.members), queue.needed)
                degraded.setdefault(key, []).append(queue.name)
            elif queue.serving_leader is None:
                found.append(f"quorum queue {queue.name}: no leader (an election is under way)")
        for (offline, online, members, needed), names in degraded.items():
            found.append(
                f"quorum queue(s) {', '.join(names)}: member(s) {', '.join(offline)} offline, "
                f"quorum kept ({online}/{members} online, {needed} needed)"
            )
        return found

    def lines(self) -> list[str]:
        """The nodes and quorum queues, for people."""
        lines = []
        if self.nodes is None:
            lines.append(f"cluster: nodes unknown ({self.nodes_unknown})")
        else:
            running = sum(node.running for node in self.nodes)
            lines.append(f"cluster: {len(self.nodes)} node(s), {running} running")
            width = max(len(node.name) for node in self.nodes)
            lines += [
                f"  {node.name:<{width}}  {'running' if node.running else 'DOWN'}"
                for node in self.nodes
            ]
        if self.quorum_queues:
            lines.append("quorum queues:")
            width = max(len(queue.name) for queue in self.quorum_queues)
            for queue in self.quorum_queues:
                leader = queue.serving_leader or "-"
                lines.append(f"  {queue.name:<{width}}  leader {leader}  {queue.state()}")
                if queue.offline:
                    lines.append(f"  {'':<{width}}  offline: {', '.join(queue.offline)}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": None if self.nodes is None else [node.as_dict() for node in self.nodes],
            "nodes_unknown": self.nodes_unknown,
            "quorum_queues": [queue.as_dict() for queue in self.quorum_queues],
        }


def _forbidden(exc: requests.HTTPError) -> bool:
    return exc.response is not None and exc.response.status_code in (401, 403)


def read_cluster_health(
    management: ManagementAPI, vhost: str, queue_names: Iterable[str]
) -> ClusterHealth:
    """The nodes behind ``management`` and the Raft state of each of
    ``queue_names`` that is a quorum queue in ``vhost`` (absent queues and
    other types are skipped: the topology check reports those). Raises
    ``requests.RequestException`` when the API cannot be asked."""
    nodes: tuple[ClusterNode, ...] | None = None
    nodes_unknown = None
    try:
        nodes = tuple(
            ClusterNode(
                name=node["name"],
                running=bool(node.get("running")),
                partitions=tuple(node.get("partitions") or ()),
            )
            for node in sorted(management.nodes(), key=lambda node: node["name"])
        )
    except requests.HTTPError as exc:
        if not _forbidden(exc):
            raise
        nodes_unknown = "the management user may not list nodes: it needs the monitoring tag"
    queues = []
    for name in queue_names:
        try:
            info = management.queue(vhost, name)
        except requests.HTTPError as exc:
            if exc.response is not None and exc.response.status_code == 404:
                continue
            raise
        if info.get("type") != "quorum":
            continue
        queues.append(
            QuorumQueueHealth(
                name=name,
                leader=info.get("leader") or None,
                members=tuple(sorted(info.get("members") or ())),
                online=tuple(sorted(info.get("online") or ())),
            )
        )
    return ClusterHealth(nodes, tuple(queues), nodes_unknown)
