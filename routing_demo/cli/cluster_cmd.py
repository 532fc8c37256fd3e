"""``routes cluster …``: a 3-node RabbitMQ cluster of local processes.

For trying the set-up on a cluster without a container engine or root:
the nodes run from the installed server, each with its own ports and
directories under ``$ROUTING_DEMO_RUN_DIR/rabbitmq-cluster``, and never
touch the machine's own RabbitMQ.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import click

from ..local_rabbitmq import LocalCluster, LocalNode
from ..topology import QUEUE_TYPE_ENV
from ._common import EXIT_FAILED, EXIT_UNKNOWN, emit_json, json_option, run_dir_option

__all__ = ["cluster"]

cluster_dir_option = run_dir_option(
    "Run directory; the cluster lives in its rabbitmq-cluster/ sub-directory."
)


def _load(run_dir: Path) -> LocalCluster:
    base = run_dir / "rabbitmq-cluster"
    if not (base / "cluster.json").exists():
        raise click.ClickException(
            f"no cluster in {base}: start one with `celery -A routing_demo routes cluster start`"
        )
    return LocalCluster.load(base)


@click.group()
def cluster() -> None:
    """A local 3-node RabbitMQ cluster for quorum queues and failover.

    \b
    Examples:
      # Three nodes on 5681-5683 (management 15681-15683), clustered
      celery -A routing_demo routes cluster start
      # Point the workers and senders at every node, with quorum queues
      eval "$(celery -A routing_demo routes cluster env)"
      celery -A routing_demo routes workers start
      # Kill one node (a crash), then bring it back
      celery -A routing_demo routes cluster node kill rd-cluster-2
      celery -A routing_demo routes cluster node start rd-cluster-2
      celery -A routing_demo routes cluster status --json
      celery -A routing_demo routes cluster stop
    """


def _env_lines(local: LocalCluster) -> list[str]:
    lines = [
        f"export CELERY_BROKER_URL='{local.broker_url}'",
        f"export {QUEUE_TYPE_ENV}=quorum",
    ]
    if local.management_urls:
        lines.append(f"export RABBITMQ_MANAGEMENT_URL='{local.management_urls[0]}'")
    return lines


@cluster.command()
@cluster_dir_option
@click.option("--size", default=3, show_default=True, help="Number of nodes.")
@click.option(
    "--amqp-port",
    default=5681,
    show_default=True,
    help="AMQP port of the first node; node N listens on this + N - 1.",
)
@click.option(
    "--dist-port", default=25681, show_default=True, help="Erlang distribution port of node 1."
)
@click.option(
    "--management-port",
    default=15681,
    show_default=True,
    help="Management HTTP port of node 1 (0: no management plugin).",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the nodes.")
def start(
    run_dir: Path,
    size: int,
    amqp_port: int,
    dist_port: int,
    management_port: int,
    timeout: float,
) -> None:
    """Start the cluster (or the nodes of it that are down) and print the
    environment that points Celery at it."""
    base = run_dir / "rabbitmq-cluster"
    if (base / "cluster.json").exists():
        local = LocalCluster.load(base)
    else:
        local = LocalCluster(
            base,
            size=size,
            amqp_base=amqp_port,
            dist_base=dist_port,
            management_base=management_port or None,
        )
    try:
        local.start(timeout)
    except (RuntimeError, TimeoutError) as exc:
        click.echo(f"cluster did not start: {exc}", err=True)
        raise SystemExit(EXIT_FAILED) from None
    click.echo(f"{len(local.nodes)} nodes running in {base}:", err=True)
    for node in local:
        click.echo(f"  {node.nodename}  amqp {node.ports.amqp}  pid {node.pid}", err=True)
    click.echo("\n".join(_env_lines(local)))


@cluster.command()
@cluster_dir_option
def env(run_dir: Path) -> None:
    """Print the shell exports for the cluster: every node's broker URL,
    quorum queues, the management API."""
    click.echo("\n".join(_env_lines(_load(run_dir))))


@cluster.command()
@cluster_dir_option
@click.option("--purge", is_flag=True, help="Delete the nodes' data as well.")
def stop(run_dir: Path, purge: bool) -> None:
    """Stop every node this command group started (clean shutdown)."""
    local = _load(run_dir)
    local.stop()
    click.echo(f"stopped {', '.join(node.nodename for node in local)}")
    if purge:
        shutil.rmtree(local.base_dir)
        click.echo(f"removed {local.base_dir}")


def _node_status(node: LocalNode, members: set[str] | None) -> dict[str, Any]:
    running = node.running
    return {
        "node": node.nodename,
        "pid": node.pid if running else None,
        "amqp_port": node.ports.amqp,
        "dist_port": node.ports.dist,
        "management_port": node.ports.management,
        "running": running,
        "answers": running and node.answers(),
        "clustered": None if members is None else node.nodename in members,
    }


@cluster.command(name="status")
@cluster_dir_option
@json_option
def cluster_status(run_dir: Path, as_json: bool) -> None:
    """Each node: PID, ports, running, and whether the cluster counts it as a
    running member. Exit 1 when a node is down or out of the cluster."""
    local = _load(run_dir)
    try:
        members: set[str] | None = local.running_members()
    except RuntimeError:
        members = None
    rows = [_node_status(node, members) for node in local]
    if as_json:
        emit_json({"nodes": rows, "broker_url": local.broker_url})
    else:
        for row in rows:
            state = "running" if row["running"] else "down"
            membership = {True: "clustered", False: "NOT clustered", None: "membership unknown"}
            click.echo(
                f"{row['node']:<26} pid {row['pid'] or '-':<8} amqp {row['amqp_port']}  "
                f"{state}, {membership[row['clustered']]}"
            )
    healthy = all(row["running"] and row["clustered"] for row in rows)
    raise SystemExit(0 if healthy else (EXIT_UNKNOWN if members is None else EXIT_FAILED))


@cluster.group()
def node() -> None:
    """Stop, kill or start one node of the cluster."""


def _node_command(action: str, help_text: str) -> None:
    @node.command(name=action, help=help_text)
    @cluster_dir_option
    @click.argument("name")
    @click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait.")
    def command(run_dir: Path, name: str, timeout: float) -> None:
        local = _load(run_dir)
        try:
            target = local.node(name)
        except KeyError as exc:
            raise click.BadParameter(str(exc.args[0]), param_hint="NAME") from None
        if action == "kill":
            target.kill()
        elif action == "stop":
            target.stop()
        else:
            local.start_node(target, timeout)
        click.echo(f"{target.nodename}: {'running' if target.running else 'down'}")


_node_command("kill", "SIGKILL the node's processes: a crash, no clean shutdown.")
_node_command("stop", "Stop the node cleanly; its data stays.")
_node_command("start", "Start the node again; it rejoins the cluster from its data.")
