"""``routes workers start|stop|status``: one worker per selection through
``celery multi``, for the app ``-A`` names and its ``routes_worker_selections``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import requests

from ..alarms import Alarm, broker_alarms
from ..transports.pyamqp import sending_within
from ..workers import SELECTIONS_SETTING, WorkerGroup, WorkerNode, worker_nodes
from ._common import (
    EXIT_FAILED,
    app_option,
    broker_errors,
    broker_vhost,
    emit_json,
    get_app,
    json_option,
    live_queue_counts,
    management_api,
    management_option,
    run_dir_option,
)
from .cluster_health import ClusterHealth, read_cluster_health
from .model import DECLARED, LIVE, NONE, KnownWorker, Workers, read_topology

__all__ = ["workers"]

#: Worker options that may differ per node: CLI option -> ``celery worker`` option.
PER_NODE_OPTIONS: dict[str, str] = {
    "concurrency": "--concurrency",
    "pool": "--pool",
    "prefetch_multiplier": "--prefetch-multiplier",
    "time_limit": "--time-limit",
    "soft_time_limit": "--soft-time-limit",
    "max_tasks_per_child": "--max-tasks-per-child",
    "max_memory_per_child": "--max-memory-per-child",
    "autoscale": "--autoscale",
    "loglevel": "--loglevel",
}

#: The node that runs the embedded beat (``--beat``): exactly one may. An
#: app without a node of this name runs it in the node that consumes its
#: default queue.
BEAT_NODE = "default"


def _group(ctx: click.Context, run_dir: Path, suffix: str, **kwargs: Any) -> WorkerGroup:
    """The nodes of the -A app's ``routes_worker_selections``, started as
    ``celery multi … -A <the same -A value>``."""
    app = get_app(ctx)
    own = _is_own_app(app)
    return WorkerGroup(
        worker_nodes(suffix, app=app),
        run_dir,
        app_name=app_option(ctx),
        # routing_demo's nodes find their broker in their environment or its
        # configuration module; another app's is the one it was loaded with.
        broker_url=None if own else app.connection_for_write().as_uri(include_password=True),
        **kwargs,
    )


def _is_own_app(app: Any) -> bool:
    from ..celery import RoutingDemoCelery

    return isinstance(app, RoutingDemoCelery)


def _beat_node(app: Any, nodes: list[WorkerNode], suffix: str) -> str:
    """``BEAT_NODE``, else the first node consuming the app's default queue."""
    names = [node.name for node in nodes]
    if f"{BEAT_NODE}{suffix}" in names:
        return f"{BEAT_NODE}{suffix}"
    default = app.conf.task_default_queue
    return next((n.name for n in nodes if default in n.consumed_queues(app)), names[0])


def _no_selections(ctx: click.Context, doing: str) -> None:
    """Refuse ``doing`` for an app that declares no worker selection."""
    app = get_app(ctx)
    example = ", ".join(f'"{name}": "-Q {name}"' for name in list(app.amqp.queues)[:2])
    click.echo(
        f"cannot {doing}: the app declares no {SELECTIONS_SETTING} (node name -> its -Q/-X "
        f"selection, e.g. {SELECTIONS_SETTING} = {{{example}}})",
        err=True,
    )
    ctx.exit(EXIT_FAILED)


node_run_dir = run_dir_option("Pidfiles, logs and the beat schedule live here.")


def suffix_option(function: Callable) -> Callable:
    return click.option(
        "--suffix",
        default="",
        help="Appended to every node name (add<suffix>@host), so two groups can share a host.",
    )(function)


def per_node(option: str, short: str | None = None) -> Callable:
    def decorate(function: Callable) -> Callable:
        return click.option(
            *([short] if short else []),
            f"--{option.replace('_', '-')}",
            option,
            multiple=True,
            metavar="[NODE=]VALUE",
            help=f"celery worker {PER_NODE_OPTIONS[option]} for every node, or NODE=VALUE "
            "for one (repeatable).",
        )(function)

    return decorate


def split_per_node(
    values: dict[str, tuple[str, ...]], node_names: list[str], suffix: str
) -> tuple[list[str], dict[str, list[str]]]:
    """``--concurrency 2 --concurrency add=4`` -> options for all nodes and per node."""
    common: list[str] = []
    by_node: dict[str, list[str]] = {}
    for key, given in values.items():
        for value in given:
            node, sep, node_value = value.partition("=")
            if sep:
                name = f"{node}{suffix}"
                if name not in node_names:
                    bases = ", ".join(n.removesuffix(suffix) for n in node_names)
                    raise click.BadParameter(
                        f"no node {node!r} (nodes: {bases})",
                        param_hint=f"--{key.replace('_', '-')}",
                    )
                by_node.setdefault(name, []).append(f"{PER_NODE_OPTIONS[key]}={node_value}")
            else:
                common.append(f"{PER_NODE_OPTIONS[key]}={value}")
    return common, by_node


@click.group()
def workers() -> None:
    """Start, stop and inspect one worker per queue (through celery multi).

    \b
    Examples:
      celery -A routing_demo routes workers start
      celery -A routing_demo routes workers start --concurrency 2 --concurrency add=4 \\
          --prefetch-multiplier 1 --beat
      celery -A routing_demo routes workers status
      celery -A routing_demo routes workers stop
    """


@workers.command()
@node_run_dir
@suffix_option
@per_node("concurrency", "-c")
@per_node("pool", "-P")
@per_node("prefetch_multiplier")
@per_node("time_limit")
@per_node("soft_time_limit")
@per_node("max_tasks_per_child")
@per_node("max_memory_per_child")
@per_node("autoscale")
@per_node("loglevel", "-l")
@click.option(
    "--events/--no-events",
    "-E",
    default=False,
    show_default=True,
    help=(
        "Send task events (celery events, `routes status --follow`); they cost "
        "about 45% of a worker's throughput of trivial tasks."
    ),
)
@click.option(
    "-B",
    "--beat",
    is_flag=True,
    help=f"Run beat inside the {BEAT_NODE!r} node (only one beat may run).",
)
@click.option("--without-mingle", is_flag=True, help="Skip start-up sync with other workers.")
@click.option("--without-gossip", is_flag=True, help="Do not subscribe to other workers' events.")
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Return only once every node answers a ping.",
)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for readiness.")
@click.pass_context
def start(
    ctx: click.Context,
    run_dir: Path,
    suffix: str,
    events: bool,
    beat: bool,
    without_mingle: bool,
    without_gossip: bool,
    wait: bool,
    timeout: float,
    **values: tuple[str, ...],
) -> None:
    """Start the add, sub and default-queue workers (celery multi start).

    Each node is `celery worker -Q <queue> -n <queue>@%h` (the default-queue
    node: -X add,sub), with <run-dir>/<node>.pid and <node>.log, task events
    if asked for (--events), and its revoked task ids in
    <run-dir>/<node>.state, kept across restarts. Options take VALUE for
    every node or NODE=VALUE for one node.

    \b
    Examples:
      celery -A routing_demo routes workers start --loglevel INFO
      celery -A routing_demo routes workers start -c 1 -c add=4 -P add=threads \\
          --time-limit 300 --soft-time-limit add=250 --max-tasks-per-child 100 \\
          --max-memory-per-child 200000 --autoscale sub=4,1
      # With task events, for `routes status ID --follow` (a message per state)
      celery -A routing_demo routes workers start --events
      # Beat in the default-queue worker, schedule file in the run dir
      celery -A routing_demo routes workers start --beat
    """
    app = get_app(ctx)
    nodes = worker_nodes(suffix, app=app)
    if not nodes:
        _no_selections(ctx, "start workers")
    names = [node.name for node in nodes]
    common, by_node = split_per_node(values, names, suffix)
    if not any(option.startswith("--concurrency=") for option in common):
        common.insert(0, "--concurrency=1")
    if not any(option.startswith("--loglevel=") for option in common):
        common.append("--loglevel=INFO")
    common += [
        flag
        for flag, wanted in (
            ("--without-mingle", without_mingle),
            ("--without-gossip", without_gossip),
        )
        if wanted
    ]
    if beat:
        beat_node = _beat_node(app, nodes, suffix)
        by_node.setdefault(beat_node, []).extend(
            ["--beat", f"--schedule={(run_dir / 'celerybeat-schedule').resolve()}"]
        )
    group = _group(
        ctx,
        run_dir,
        suffix,
        env={"ROUTING_DEMO_RUN_DIR": str(run_dir.resolve())},
        worker_options=common,
        node_options=by_node,
        events=events,
    )
    already = group.running()
    if already:
        click.echo(f"already running: {already} (stop them first)", err=True)
        ctx.exit(EXIT_FAILED)
    for node in group.nodes:
        options = [*group.group_options(), *common, *by_node.get(node.name, [])]
        click.echo(
            f"starting {node.hostname}: {node.queue_option} {node.queue_names} {' '.join(options)}"
        )
    try:
        group.start()
        if wait:
            group.wait_ready(app, timeout=timeout)
    except (RuntimeError, TimeoutError) as exc:
        click.echo(str(exc), err=True)
        ctx.exit(EXIT_FAILED)
    for name, pid in sorted(group.running().items()):
        click.echo(f"{name}: pid {pid}, log {run_dir / (name + '.log')}")


@workers.command()
@node_run_dir
@suffix_option
@click.pass_context
def stop(ctx: click.Context, run_dir: Path, suffix: str) -> None:
    """Warm-stop every node and wait until its process is gone (celery multi stopwait).

    Running tasks finish first. Exits 1 if a pidfile's process survives.

    \b
    Examples:
      celery -A routing_demo routes workers stop
      ROUTING_DEMO_RUN_DIR=/tmp/demo celery -A routing_demo routes workers stop
    """
    group = _group(ctx, run_dir, suffix)
    if not group.nodes:
        _no_selections(ctx, "stop workers")
    running = group.running()
    if not running:
        click.echo("no worker running")
        return
    try:
        group.stop()
    except RuntimeError as exc:
        click.echo(str(exc), err=True)
    survivors = {name: pid for name, pid in running.items() if name in group.running()}
    if survivors:
        click.echo(f"still running: {survivors}", err=True)
        ctx.exit(EXIT_FAILED)
    for name, pid in sorted(running.items()):
        click.echo(f"stopped {name} (pid {pid})")


@workers.command(name="status")
@node_run_dir
@suffix_option
@management_option
@click.option("--timeout", default=2.0, show_default=True, help="Seconds to wait for replies.")
@json_option
@click.pass_context
def workers_status(
    ctx: click.Context,
    run_dir: Path,
    suffix: str,
    management_url: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Each node: its process, the queues it consumes (inspect active_queues),
    and each queue's depth and consumers from the broker. On a cluster or
    with quorum queues, also the broker's nodes (which run) and each quorum
    queue's leader and online members. Any resource alarm (memory, disk) that
    has RabbitMQ block publishers is shown as an error. Exits 1 unless every node runs and
    answers, every quorum queue keeps a majority of its members online and
    no alarm is active.

    The nodes are the app's routes_worker_selections; an app without them is
    shown the workers that answer (exit 1 when none does).

    \b
    Examples:
      celery -A routing_demo routes workers status
      celery -A routing_demo routes workers status --json
    """
    app = get_app(ctx)
    group = _group(ctx, run_dir, suffix)
    declared = bool(group.nodes)
    pids = group.pids()
    running = group.running()
    # Without declared nodes every worker that answers is shown.
    hostnames = [node.hostname for node in group.nodes] if declared else None
    vhost = broker_vhost(app)
    api = management_api(app, management_url)
    broker_queues: dict[str, dict[str, Any]] = {}
    broker_error = None
    health = ClusterHealth(nodes=(), quorum_queues=())
    alarms: list[Alarm] = []
    try:
        broker_queues = {queue["name"]: queue for queue in api.queues(vhost)}
        health = read_cluster_health(api, vhost, read_topology(app).queues)
        alarms = broker_alarms(api)
    except requests.RequestException as exc:
        broker_error = f"management API unavailable at {api.base_url}: {exc}"
    try:
        # A broker that blocks publishers (an alarm) holds the broadcast:
        # give up with the replies' own timeout, not a send's.
        with sending_within(timeout):
            inspect = app.control.inspect(destination=hostnames, timeout=timeout)
            replies = inspect.active_queues() or {}
    except broker_errors(app) as exc:
        click.echo(
            f"cannot ask the workers: the broker refused or cannot be reached: {exc}", err=True
        )
        for alarm in alarms:
            click.echo(f"error: {alarm}", err=True)
        ctx.exit(EXIT_FAILED)

    # (node name, selection, pid, process running) per node shown.
    shown: list[tuple[str, str, int | None, bool]] = [
        (
            node.hostname,
            f"{node.queue_option} {node.queue_names}",
            pids[node.name],
            node.name in running,
        )
        for node in group.nodes
    ] or [(hostname, "live worker", None, True) for hostname in sorted(replies)]
    consumed_by = {
        hostname: [queue["name"] for queue in replies.get(hostname) or []] for hostname, *_ in shown
    }
    if declared:
        workers = Workers(DECLARED)
    else:
        workers = Workers(
            LIVE if replies else NONE,
            tuple(KnownWorker(h, tuple(q), f"{h} (live worker)") for h, q in consumed_by.items()),
        )
    try:
        live = live_queue_counts(app, sorted({q for names in consumed_by.values() for q in names}))
    except OSError as exc:
        live = {}
        broker_error = f"broker unreachable: {exc}"
    for name, (ready, consumers) in live.items():
        broker_queues[name] = {**broker_queues.get(name, {}), "messages_ready": ready}
        broker_queues[name]["consumers"] = consumers
    nodes = []
    for hostname, selection, pid, process_running in shown:
        consumed = consumed_by[hostname]
        nodes.append(
            {
                "node": hostname,
                "selection": selection,
                "pid": pid,
                "running": process_running,
                "answering": hostname in replies,
                "queues": [
                    {
                        "name": name,
                        "ready": broker_queues.get(name, {}).get("messages_ready"),
                        "unacked": broker_queues.get(name, {}).get("messages_unacknowledged"),
                        "consumers": broker_queues.get(name, {}).get("consumers"),
                    }
                    for name in consumed
                ],
            }
        )
    healthy = (
        bool(nodes)
        and not alarms
        and not health.below_quorum
        and all(node["running"] and node["answering"] for node in nodes)
    )
    if as_json:
        document = {
            "vhost": vhost,
            "healthy": healthy,
            "nodes": nodes,
            "broker_error": broker_error,
            "alarms": [alarm.as_dict() for alarm in alarms],
            "workers": {"source": workers.source, "description": workers.describe()},
        }
        if health.shown:
            document.update(cluster=health.as_dict(), warnings=health.warnings())
        emit_json(document)
    else:
        click.echo(f"workers: {workers.describe()}")
        for node in nodes:
            state = ("running" if node["running"] else "NOT RUNNING") + (
                "" if node["answering"] else ", NOT ANSWERING"
            )
            if not declared:
                state = "answering (not started by routes workers: no pid here)"
            click.echo(f"{node['node']} [{node['selection']}] pid {node['pid']}: {state}")
            for queue in node["queues"]:
                click.echo(
                    f"  queue {queue['name']:<10} ready {queue['ready']}  "
                    f"unacked {queue['unacked']}  consumers {queue['consumers']}"
                )
        if health.shown:
            for line in health.lines():
                click.echo(line)
            for warning in health.warnings():
                click.echo(f"warning: {warning}")
            for queue in health.below_quorum:
                click.echo(f"error: quorum queue {queue.name} is below quorum")
        for alarm in alarms:
            click.echo(f"error: {alarm}")
        if broker_error:
            click.echo(broker_error, err=True)
    if not healthy:
        ctx.exit(EXIT_FAILED)
