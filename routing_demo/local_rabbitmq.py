"""RabbitMQ nodes and clusters as local processes of the installed server.

A node here has its own node name, ports, data, log and home directories
under one base directory, so it can be started, stopped and killed without
touching the machine's own RabbitMQ service. Its PID lives in a pidfile, so
the process that started it need not be the one that stops it (``routes
cluster start`` and ``routes cluster stop`` are two commands). A cluster is
three such nodes sharing one Erlang cookie and finding each other by
classic-config peer discovery, the way RabbitMQ's own ``make start-cluster``
runs one on a developer's machine.

Nothing runs on import, and nothing here depends on pytest: the test
fixtures in ``routing_demo.testing`` use the same classes.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal as signals
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .polling import pid_alive, wait_until

__all__ = [
    "RABBITMQCTL",
    "RABBITMQ_SERVER",
    "LocalCluster",
    "LocalNode",
    "NodeHost",
    "NodePorts",
    "node_environment",
    "port_answers",
    "rabbitmqctl",
]

#: RabbitMQ's own start script. ``/usr/sbin/rabbitmq-server`` is a wrapper
#: that switches to the ``rabbitmq`` user, whose node then cannot write our
#: directories: run the script behind it directly.
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
#: ``rabbitmqctl`` next to it (the ``/usr/sbin`` one reads the system cookie).
RABBITMQCTL = str(Path(RABBITMQ_SERVER).with_name("rabbitmqctl"))

#: The AMQP scheme of every URL given out: with ``amqp://`` kombu switches to
#: librabbitmq whenever it is importable.
SCHEME = "pyamqp://"

#: Seconds a node has to answer after its start (6-17 s seen on 2 busy cores).
READY_TIMEOUT = 90.0
#: Seconds a node has to exit after SIGTERM before its group gets SIGKILL.
STOP_TIMEOUT = 30.0


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class NodePorts:
    """The three listeners of one node."""

    amqp: int
    dist: int
    management: int | None = None


def node_environment(
    base_dir: Path,
    nodename: str,
    ports: NodePorts,
    *,
    home: Path | None = None,
    config_lines: Sequence[str] = (),
    host: str = "127.0.0.1",
) -> dict[str, str]:
    """Write a node's files under ``base_dir``; return the environment that
    points ``rabbitmq-server`` at them (and away from ``/etc/rabbitmq``).

    ``home`` holds the Erlang cookie (``base_dir/home`` unless given: nodes of
    one cluster share it). ``config_lines`` are appended to ``rabbitmq.conf``.
    The management plugin is enabled when ``ports.management`` is set.
    """
    home = home or base_dir / "home"
    mnesia, logs = base_dir / "mnesia", base_dir / "log"
    for directory in (home, mnesia, logs):
        directory.mkdir(parents=True, exist_ok=True)
    plugins = base_dir / "enabled_plugins"
    plugins.write_text("[rabbitmq_management].\n" if ports.management else "[].\n")
    on_loopback = host.startswith("127.")
    lines = [
        f"listeners.tcp.default = {host}:{ports.amqp}",
        # Only loopback clients may log in as guest: the default, said aloud.
        # A node on a private test network (its own network namespace) is
        # reached over that network, so guest may log in from there.
        f"loopback_users.guest = {'true' if on_loopback else 'false'}",
    ]
    if ports.management:
        lines += [f"management.tcp.port = {ports.management}", f"management.tcp.ip = {host}"]
    lines += config_lines
    config = base_dir / "rabbitmq.conf"
    config.write_text("\n".join(lines) + "\n")
    # The system's rabbitmq-env.conf names the system node: read an empty one.
    env_file = base_dir / "rabbitmq-env.conf"
    env_file.write_text("")
    erl_host = ",".join(host.split("."))
    return {
        "RABBITMQ_NODENAME": nodename,
        "RABBITMQ_NODE_IP_ADDRESS": host,
        "RABBITMQ_NODE_PORT": str(ports.amqp),
        "RABBITMQ_DIST_PORT": str(ports.dist),
        "RABBITMQ_MNESIA_BASE": str(mnesia),
        "RABBITMQ_LOG_BASE": str(logs),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(base_dir / "advanced.config"),
        "RABBITMQ_CONF_ENV_FILE": str(env_file),
        "RABBITMQ_PID_FILE": str(base_dir / "rabbitmq.pid"),
        # Distribution on one interface only; schedulers that sleep instead
        # of spinning when idle, which matters on a small shared machine.
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
            f"-kernel inet_dist_use_interface {{{erl_host}}} "
            "+sbwt none +sbwtdcpu none +sbwtdio none"
        ),
        # epmd answers the node's own address, and loopback for rabbitmqctl
        # run in the same network namespace.
        "ERL_EPMD_ADDRESS": host if on_loopback else f"127.0.0.1,{host}",
        "HOME": str(home),
    }


class LocalNode:
    """One RabbitMQ node under ``base_dir``, started as a process group of
    its own whose leader's PID is kept in ``base_dir/node.pid``.

    ``kill()`` ends the whole group at once (the Erlang VM and its helpers),
    as a crashed host would; ``stop()`` asks for a clean shutdown (SIGTERM:
    the start script stops the node properly). The data directory outlives
    both, so a node started again comes back with its queues, messages and
    cluster membership.
    """

    def __init__(
        self,
        base_dir: Path,
        nodename: str,
        ports: NodePorts,
        *,
        home: Path | None = None,
        config_lines: Sequence[str] = (),
        host: str = "127.0.0.1",
        netns: str | None = None,
        server: str = RABBITMQ_SERVER,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.nodename = nodename
        self.ports = ports
        self.host = host
        #: The network namespace the node runs in (a test host), if any.
        self.netns = netns
        self.home = Path(home) if home else self.base_dir / "home"
        self.config_lines = list(config_lines)
        self.server = server
        self.log_path = self.base_dir / "stdout.log"
        self.pidfile = self.base_dir / "node.pid"

    def __repr__(self) -> str:
        return f"<LocalNode {self.nodename} amqp={self.ports.amqp} pid={self.pid}>"

    @property
    def url(self) -> str:
        return f"{SCHEME}guest:guest@{self.host}:{self.ports.amqp}//"

    @property
    def management_url(self) -> str | None:
        if not self.ports.management:
            return None
        return f"http://guest:guest@{self.host}:{self.ports.management}"

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    @property
    def running(self) -> bool:
        """Its process runs (it may still be booting: see ``answers``)."""
        pid = self.pid
        return pid is not None and pid_alive(pid)

    def answers(self) -> bool:
        """Its AMQP listener (and management, when enabled) accepts connections."""
        ports = [self.ports.amqp, *([self.ports.management] if self.ports.management else [])]
        return all(port_answers(self.host, port) for port in ports)

    def environment(self) -> dict[str, str]:
        return node_environment(
            self.base_dir,
            self.nodename,
            self.ports,
            home=self.home,
            config_lines=self.config_lines,
            host=self.host,
        )

    @property
    def _wrap(self) -> list[str]:
        """What runs a command in the node's network namespace."""
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def start(self) -> None:
        """Start the node and return at once (``wait_ready`` waits). A node
        already running is left alone."""
        if self.running:
            return
        env = {**os.environ, **self.environment()}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [*self._wrap, self.server],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.base_dir,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{process.pid}\n")

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until the node answers; raise if its process ends first."""

        def ready() -> bool:
            if not self.running:
                tail = "\n".join(self._log_tail())
                raise RuntimeError(
                    f"{self.nodename} exited while starting; {self.log_path}:\n{tail}"
                )
            return self.answers()

        wait_until(ready, timeout=timeout, message=f"{self.nodename} did not answer")

    def _log_tail(self, lines: int = 20) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []

    def _signal_group(self, sig: signals.Signals) -> None:
        pid = self.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, sig)

    def _wait_gone(self, timeout: float) -> None:
        pid = self.pid
        if pid is None:
            return
        wait_until(
            lambda: not pid_alive(pid) and not _group_alive(pid),
            timeout=timeout,
            message=f"{self.nodename} (pid {pid}) still runs",
        )

    def kill(self) -> None:
        """SIGKILL to the node's whole process group: a crash, no goodbye to
        its peers or clients. Waits until it is gone."""
        if self.pid is None:
            return
        self._signal_group(signals.SIGKILL)
        self._wait_gone(STOP_TIMEOUT)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """A clean shutdown (SIGTERM to the start script, which stops the
        node); SIGKILL to the group if it is still there after ``timeout``."""
        pid = self.pid
        if pid is None or not self.running:
            self._signal_group(signals.SIGKILL)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signals.SIGTERM)
        try:
            self._wait_gone(timeout)
        except TimeoutError:
            self.kill()
        else:
            self._signal_group(signals.SIGKILL)

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run ``rabbitmqctl -n <node> args`` with this node's cookie; its stdout."""
        return rabbitmqctl(
            self.nodename, self.base_dir, *args, home=self.home, wrap=self._wrap, timeout=timeout
        )


def rabbitmqctl(
    nodename: str,
    base_dir: Path,
    *args: str,
    home: Path | None = None,
    wrap: Sequence[str] = (),
    timeout: float = 60.0,
) -> str:
    """``rabbitmqctl -n <nodename> -q args`` against a node whose files
    ``node_environment`` wrote under ``base_dir`` (its Erlang cookie in
    ``home``, ``base_dir/home`` unless given); its stdout. ``wrap`` runs it
    elsewhere (``ip netns exec <ns>``). Raises ``RuntimeError`` with
    rabbitmqctl's own message when it fails."""
    done = subprocess.run(
        [*wrap, RABBITMQCTL, "-n", nodename, "-q", *args],
        env={
            **os.environ,
            "HOME": str(home or base_dir / "home"),
            "RABBITMQ_CONF_ENV_FILE": str(base_dir / "rabbitmq-env.conf"),
        },
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"rabbitmqctl {' '.join(args)} on {nodename} failed: {done.stderr.strip()}"
        )
    return done.stdout


def _group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` runs."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


@dataclass(frozen=True)
class NodeHost:
    """Where a cluster node runs when it is not on loopback: a host name that
    resolves to ``address`` on every node (the node name's host part), and
    the network namespace that has that address."""

    name: str
    address: str
    netns: str


@dataclass(frozen=True)
class _NodeRecord:
    """What ``cluster.json`` keeps of a node, for later commands."""

    nodename: str
    amqp: int
    dist: int
    management: int | None
    host: str
    netns: str | None = None


class LocalCluster:
    """``size`` nodes under ``base_dir``, one Erlang cookie, clustered by
    classic-config peer discovery.

    Node ``i`` (from 1) is ``<prefix>-<i>@localhost`` and listens on
    ``amqp_base + i - 1`` (AMQP), ``dist_base + i - 1`` (Erlang
    distribution) and ``management_base + i - 1`` (management HTTP, when
    ``management``); with ``hosts``, node ``i`` runs in ``hosts[i - 1]``'s
    network namespace as ``<prefix>-<i>@<host name>``. ``start()`` boots the
    first node, then the others, which
    find it by peer discovery and join it; a node started again later
    rejoins from its own data directory. The layout is kept in
    ``base_dir/cluster.json`` so that ``LocalCluster.load(base_dir)`` in
    another process finds the same nodes.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        size: int = 3,
        amqp_base: int = 5681,
        dist_base: int = 25681,
        management_base: int | None = 15681,
        prefix: str = "rd-cluster",
        config_lines: Sequence[str] = (),
        hosts: Sequence[NodeHost] = (),
        server: str = RABBITMQ_SERVER,
    ) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        if hosts and len(hosts) != size:
            raise ValueError(f"give one host per node: {size} nodes, {len(hosts)} hosts")
        self.base_dir = Path(base_dir)
        self.home = self.base_dir / "home"
        records = [
            _NodeRecord(
                nodename=f"{prefix}-{index}@{hosts[index - 1].name if hosts else 'localhost'}",
                amqp=amqp_base + index - 1,
                dist=dist_base + index - 1,
                management=management_base + index - 1 if management_base else None,
                host=hosts[index - 1].address if hosts else "127.0.0.1",
                netns=hosts[index - 1].netns if hosts else None,
            )
            for index in range(1, size + 1)
        ]
        self._init(records, list(config_lines), server)

    def _init(self, records: list[_NodeRecord], config_lines: list[str], server: str) -> None:
        self.records = records
        self.config_lines = config_lines
        self.server = server
        peers = [
            # A node cut off from the others stops serving until it sees a
            # majority again, instead of going on as a second cluster.
            "cluster_partition_handling = pause_minority",
            "cluster_formation.peer_discovery_backend = classic_config",
            *(
                f"cluster_formation.classic_config.nodes.{index} = {record.nodename}"
                for index, record in enumerate(records, start=1)
            ),
        ]
        self.nodes = [
            LocalNode(
                self.base_dir / record.nodename.split("@", 1)[0],
                record.nodename,
                NodePorts(record.amqp, record.dist, record.management),
                home=self.home,
                config_lines=[*peers, *config_lines],
                host=record.host,
                netns=record.netns,
                server=server,
            )
            for record in records
        ]

    @classmethod
    def load(cls, base_dir: Path, *, server: str = RABBITMQ_SERVER) -> LocalCluster:
        """The cluster a former ``start()`` recorded under ``base_dir``."""
        base_dir = Path(base_dir)
        state = json.loads((base_dir / "cluster.json").read_text())
        cluster = cls.__new__(cls)
        cluster.base_dir = base_dir
        cluster.home = base_dir / "home"
        cluster._init(
            [_NodeRecord(**node) for node in state["nodes"]], state["config_lines"], server
        )
        return cluster

    def __iter__(self) -> Iterator[LocalNode]:
        return iter(self.nodes)

    def node(self, name: str) -> LocalNode:
        """The node called ``name`` (full ``x@host`` or the part before ``@``)."""
        for node in self.nodes:
            if name in (node.nodename, node.nodename.split("@", 1)[0]):
                return node
        raise KeyError(f"no node {name!r} in this cluster")

    @property
    def broker_urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def broker_url(self) -> str:
        """Every node, ``;``-separated: what ``CELERY_BROKER_URL`` takes for
        failover (kombu moves to the next URL when a connection fails)."""
        return ";".join(self.broker_urls)

    @property
    def management_urls(self) -> list[str]:
        return [node.management_url for node in self.nodes if node.management_url]

    def _write_layout(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "nodes": [asdict(record) for record in self.records],
            "config_lines": self.config_lines,
        }
        (self.base_dir / "cluster.json").write_text(json.dumps(state, indent=2) + "\n")

    def _write_cookie(self) -> None:
        """One cookie for every node, written before any node starts."""
        self.home.mkdir(parents=True, exist_ok=True)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20).upper())
        cookie.chmod(0o400)

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Boot every node that is not running and wait until each answers and
        the first one sees all of them as running members."""
        self._write_layout()
        self._write_cookie()
        first, *others = self.nodes
        first.start()
        first.wait_ready(timeout)
        for node in others:
            node.start()
        for node in others:
            node.wait_ready(timeout)
        self.wait_clustered(timeout)

    def start_node(self, node: LocalNode, timeout: float = READY_TIMEOUT) -> None:
        """Start one node again and wait until it is a running member."""
        self._write_cookie()
        node.start()
        node.wait_ready(timeout)
        self.wait_clustered(timeout)

    def cluster_status(self, via: LocalNode | None = None) -> dict[str, Any]:
        """``rabbitmqctl cluster_status`` as JSON, asked of ``via`` (default:
        the first node that answers)."""
        node = via or next((node for node in self.nodes if node.answers()), None)
        if node is None:
            raise RuntimeError("no node of the cluster answers")
        return json.loads(node.ctl("cluster_status", "--formatter", "json"))

    def running_members(self) -> set[str]:
        """Nodes the cluster counts as running members."""
        return set(self.cluster_status().get("running_nodes", []))

    def running_members_seen_by(self, node: LocalNode) -> set[str]:
        """Running members as ``node`` sees them (sides of a partition differ)."""
        return set(self.cluster_status(via=node).get("running_nodes", []))

    def wait_clustered(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait until every running node is a running member of one cluster."""
        wanted = {node.nodename for node in self.nodes if node.running}

        def joined() -> bool:
            try:
                return wanted <= self.running_members()
            except (RuntimeError, subprocess.TimeoutExpired, ValueError):
                return False  # the node asked is still booting: ask again

        wait_until(
            joined,
            timeout=timeout,
            message=f"nodes {sorted(wanted)} did not all join one cluster",
            interval=1.0,
        )

    def stop(self) -> None:
        """Stop every node (clean shutdown), last node first. The data stays."""
        for node in reversed(self.nodes):
            node.stop()

    def kill(self) -> None:
        """SIGKILL every node; for test teardown."""
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
