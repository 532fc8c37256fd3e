"""Test hosts on one machine: a network namespace each, joined by a bridge.

A cluster node in a namespace of its own has its own address and its own
network stack, so losing it can be a real network failure: its link goes
down and packets stop, while its process runs on (a partition), not only a
killed process. The bridge lives in the caller's namespace with the
subnet's first address, so tests and workers reach every test host over it.

Names carry a tag (e.g. the cluster's first port) so two test sessions on
one machine never share a namespace, an interface or a subnet. Needs root
and iproute2's ``ip``; ``available()`` says whether they are there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

from ..local_rabbitmq import NodeHost

__all__ = ["TestNetwork", "available"]

#: Where ``ip netns exec`` finds a namespace's own ``/etc`` files.
NETNS_ETC = Path("/etc/netns")


def available() -> bool:
    """Root and ``ip``: what creating namespaces and links needs."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class TestNetwork:
    """``count`` test hosts on ``10.<a>.<b>.0/24``: host ``i`` (from 1) is the
    namespace ``rd<tag>-<i>`` with address ``.1<i>`` on its ``eth0``, whose
    peer ``rdv<tag>-<i>`` is a port of the bridge ``rdb<tag>`` (``.1``).
    Every host resolves every other host's name through its own ``hosts``
    file (``/etc/netns/<namespace>/hosts``)."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(self, tag: int, count: int = 3) -> None:
        if not 0 <= tag < 65536 or not 1 <= count <= 9:
            raise ValueError("tag must fit in two octets and count be 1-9")
        self.tag = tag
        self.count = count
        self.subnet = f"10.{tag // 256}.{tag % 256}"
        self.bridge = f"rdb{tag}"
        self.gateway = f"{self.subnet}.1"

    def host(self, index: int) -> NodeHost:
        return NodeHost(
            name=f"rdh{self.tag}-{index}",
            address=f"{self.subnet}.1{index}",
            netns=f"rd{self.tag}-{index}",
        )

    @property
    def hosts(self) -> list[NodeHost]:
        return [self.host(index) for index in range(1, self.count + 1)]

    def link(self, host: NodeHost) -> str:
        """The bridge side of ``host``'s cable."""
        return f"rdv{host.netns.removeprefix('rd')}"

    def create(self) -> None:
        """Bridge, namespaces, cables and hosts files; undone by ``destroy``."""
        self.destroy()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        names = "".join(f"{host.address} {host.name}\n" for host in self.hosts)
        for host in self.hosts:
            _ip("netns", "add", host.netns)
            _ip(
                "link", "add", self.link(host), "type", "veth",
                "peer", "name", "eth0", "netns", host.netns,
            )  # fmt: skip
            _ip("link", "set", self.link(host), "master", self.bridge, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
            etc = NETNS_ETC / host.netns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(f"127.0.0.1 localhost\n{names}")

    def cut(self, host: NodeHost) -> None:
        """Unplug ``host``: its process runs on, nothing reaches it."""
        _ip("link", "set", self.link(host), "down")

    def heal(self, host: NodeHost) -> None:
        """Plug ``host`` back in."""
        _ip("link", "set", self.link(host), "up")

    @staticmethod
    def _kill_processes(host: NodeHost) -> None:
        """End what still runs in the host's namespace (the ``epmd`` a node
        started there outlives the node); a namespace lives while anything
        runs in it."""
        listed = subprocess.run(
            ["ip", "netns", "pids", host.netns], capture_output=True, text=True, check=False
        )
        for pid in listed.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def destroy(self) -> None:
        """Remove whatever ``create`` made; missing pieces are fine."""
        for host in self.hosts:
            subprocess.run(["ip", "netns", "delete", host.netns], capture_output=True, check=False)
            subprocess.run(
                ["ip", "link", "delete", self.link(host)], capture_output=True, check=False
            )
            shutil.rmtree(NETNS_ETC / host.netns, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True, check=False)
