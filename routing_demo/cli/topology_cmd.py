"""``routes topology``, ``explain``, ``verify`` and ``definitions``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import requests

from ..alarms import broker_alarms
from ._common import (
    EXIT_FAILED,
    EXIT_MISMATCH,
    EXIT_UNKNOWN,
    app_option,
    broker_vhost,
    emit_json,
    generated_file_options,
    get_app,
    json_option,
    live_queue_counts,
    management_api,
    management_option,
    parse_value,
    resolve_task,
    task_call_options,
)
from .cluster_health import read_cluster_health
from .definitions import (
    DEFAULT_DEFINITIONS_PATH,
    DEFAULT_PERMISSIONS_PATH,
    DEFAULT_VHOST,
    app_permissions,
    app_resources,
    render_definitions,
    render_permissions,
)
from .explain import RouteExplanation, explain_route
from .model import DECLARED, LIVE, Topology, Workers, read_topology, read_workers
from .verify import alarm_problems, quorum_problems, verify_topology

__all__ = ["definitions", "explain", "permissions", "topology", "verify"]

#: Seconds the tools wait for live workers to answer ``inspect active_queues``.
WORKERS_TIMEOUT = 1.0


def _workers(ctx: click.Context, *, ask_live: bool = True) -> Workers:
    """The -A app's workers: its declared selections, else the live ones."""
    return read_workers(
        get_app(ctx), ask_live=ask_live, timeout=WORKERS_TIMEOUT, app_name=app_option(ctx)
    )


def topology_document(topology: Topology) -> dict[str, Any]:
    return {
        "exchanges": [
            {
                "name": e.name,
                "type": e.type,
                "durable": bool(e.durable),
                "arguments": dict(e.arguments or {}),
            }
            for e in topology.exchanges.values()
        ],
        "queues": [
            {
                "name": q.name,
                "durable": bool(q.queue.durable),
                "arguments": q.arguments,
                "bindings": [
                    {"exchange": b.exchange, "routing_key": b.routing_key} for b in q.bindings
                ],
                "consumed_by": list(q.consumers),
                "unconsumed_on_purpose": q.unconsumed_on_purpose,
            }
            for q in topology.queues.values()
        ],
        "routes": topology.routes,
        "default_queue": topology.default_queue,
        "workers": topology.workers.as_dict(),
    }


@click.command()
@json_option
@click.pass_context
def topology(ctx: click.Context, as_json: bool) -> None:
    """Show exchanges, queues, routes and the worker command for each queue.

    Everything comes from the app's configuration (task_queues, task_routes,
    and routes_worker_selections for who consumes what; without that setting,
    from the workers that answer inspect active_queues). routing_demo's comes
    from routing_demo/topology.py.

    \b
    Examples:
      celery -A routing_demo routes topology
      celery -A routing_demo routes topology --json | jq '.queues[].name'
    """
    model = read_topology(get_app(ctx), workers=_workers(ctx))
    if as_json:
        emit_json(topology_document(model))
        return
    click.echo("Exchanges")
    for exchange in model.exchanges.values():
        durable = "durable" if exchange.durable else "transient"
        arguments = ", ".join(f"{k}={v}" for k, v in sorted((exchange.arguments or {}).items()))
        click.echo(f"  {exchange.name:<24} {exchange.type:<7} {durable} {arguments}".rstrip())
    click.echo("\nQueues")
    for queue in model.queues.values():
        bound = ", ".join(f"{b.exchange}[{b.routing_key}]" for b in queue.bindings) or "-"
        arguments = ", ".join(f"{k}={v}" for k, v in sorted(queue.arguments.items())) or "-"
        durable = "durable" if queue.queue.durable else "transient"
        click.echo(f"  {queue.name:<12} bound {bound}; {durable}; arguments {arguments}")
        if queue.unconsumed_on_purpose:
            commands: tuple[str, ...] = ("nobody, on purpose (a holding queue: inspect by hand)",)
        else:
            commands = queue.consumers or (_nobody(model.workers),)
        for command in commands:
            click.echo(f"  {'':<12} consumed by: {command}")
    click.echo(f"\nRoutes (task_routes; first match wins, else queue {model.default_queue!r})")
    for rule in model.routes:
        extra = f" {rule['options']}" if rule["options"] else ""
        click.echo(f"  {rule['pattern']:<32} -> {rule['queue']}{extra}")
    click.echo(f"\nworkers: {model.workers.describe()}")


def _nobody(workers: Workers) -> str:
    """What "consumed by" says of a queue no known worker consumes."""
    if workers.source == DECLARED:
        return "NOBODY: no worker selection covers it"
    if workers.source == LIVE:
        return "NOBODY: no live worker consumes it"
    return "unknown: no worker selection declared and no worker answered"


def _print_explanation(explained: RouteExplanation) -> None:
    call = ", ".join(
        [repr(a) for a in explained.args] + [f"{k}={v!r}" for k, v in explained.kwargs.items()]
    )
    click.echo(f"task:        {explained.task}({call})")
    if explained.overrides:
        overrides = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in explained.overrides.items())
        click.echo(f"overrides:   {overrides}")
    click.echo(f"rule:        {explained.rule}")
    if explained.queue is None and explained.error:
        click.echo(f"error:       {explained.error}")
        return
    click.echo(f"queue:       {explained.queue}")
    if explained.exchange:
        click.echo(f"exchange:    {explained.exchange} [{explained.exchange_type}]")
    else:
        click.echo(
            'exchange:    "" (the default exchange: Celery publishes there for a direct '
            "exchange; every queue is bound to it by its name)"
        )
    click.echo(f"routing key: {explained.routing_key}")
    if explained.note:
        click.echo(f"note:        {explained.note}")
    click.echo(f"delivered:   {', '.join(explained.delivered_to) or 'nowhere'}")
    for queue, nodes in explained.consumed_by.items():
        if explained.workers_source == DECLARED:
            who = ", ".join(f"{node}@%h" for node in nodes) or "NO topology worker"
        elif explained.workers_source == LIVE:
            who = ", ".join(nodes) or "NO live worker"
        else:
            who = "unknown"
        click.echo(f"consumed by: {who} (queue {queue})")
    click.echo(f"workers:     {explained.workers}")
    if explained.error:
        click.echo(f"error:       {explained.error}")
    if explained.warning:
        click.echo(f"warning:     {explained.warning}")
    selection = explained.selection
    if selection is not None:
        option = " ".join(
            part
            for flag, names in (("-Q", selection.include), ("-X", selection.exclude))
            if names
            for part in (flag, ",".join(names))
        )
        click.echo(f"worker {option}: consumes {', '.join(selection.queues) or 'nothing'}")
        if selection.error:
            click.echo(f"  error: {selection.error}")
        for warning in selection.warnings:
            click.echo(f"  warning: {warning}")
        if not selection.error:
            verdict = "yes" if explained.selection_consumes else "NO"
            click.echo(f"  would this worker run it? {verdict}")


@click.command(context_settings={"ignore_unknown_options": True})
@task_call_options
@click.option("-Q", "--queues", "include", help="A worker's -Q selection to check against.")
@click.option("-X", "--exclude-queues", "exclude", help="A worker's -X selection to check against.")
@json_option
@click.pass_context
def explain(
    ctx: click.Context,
    task: str,
    args: tuple[str, ...],
    kwargs_json: str,
    queue: str | None,
    routing_key: str | None,
    exchange: str | None,
    include: str | None,
    exclude: str | None,
    as_json: bool,
) -> None:
    """Explain where TASK goes: the winning rule, exchange, routing key, queue.

    Celery's own router and message sender compute the answer. ARGS are JSON
    values (a bare word stays a string); TASK may be the short name (add).
    Exits 1 when the message would reach no queue, or when the -Q/-X worker
    would not run it (or would not start).

    \b
    Examples:
      celery -A routing_demo routes explain add 2 3
      # An unrouted task falls through to the default queue
      celery -A routing_demo routes explain mul 2 3
      # apply_async(queue="sub") wins over the route
      celery -A routing_demo routes explain add 2 3 --queue sub
      # Would the default-queue worker run it? (Celery ignores unknown -X names)
      celery -A routing_demo routes explain add 2 3 -X add,sub,typo
    """
    app = get_app(ctx)
    try:
        name = resolve_task(app, task)
    except click.BadParameter:
        if "." not in task:
            raise
        name = task  # send_task("pkg.name") routes unregistered names too
    kwargs = parse_value(kwargs_json)
    if not isinstance(kwargs, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--kwargs")
    explained = explain_route(
        app,
        name,
        [parse_value(arg) for arg in args],
        kwargs,
        queue=queue,
        routing_key=routing_key,
        exchange=exchange,
        include=include,
        exclude=exclude,
        workers=_workers(ctx),
    )
    if as_json:
        emit_json(explained.as_dict())
    else:
        _print_explanation(explained)
    if name not in app.tasks:
        click.echo(f"warning: {name!r} is not registered here: a worker may reject it", err=True)
    failed = explained.error or (
        explained.selection is not None
        and (explained.selection.error or not explained.selection_consumes)
    )
    if failed:
        ctx.exit(EXIT_FAILED)


@click.command()
@click.option(
    "--skip-consumers",
    is_flag=True,
    help="Check exchanges, queues and bindings only (no workers are running yet).",
)
@management_option
@click.option("--vhost", help="The vhost to check [default: the broker URL's].")
@json_option
@click.pass_context
def verify(
    ctx: click.Context,
    skip_consumers: bool,
    management_url: str | None,
    vhost: str | None,
    as_json: bool,
) -> None:
    """Compare the declared topology with the broker (management HTTP API).

    Reports missing or extra bindings, missing queues and exchanges, queue
    argument mismatches (the "inequivalent arg" trap), declared queues nobody
    consumes, and consumed queues no route feeds. On a cluster or with quorum
    queues it also lists the nodes (which run) and each quorum queue's leader
    and online members: a member down is a warning, a queue with fewer
    members online than a majority is an error, and so is a resource alarm
    (memory, disk) on any node, which blocks every publisher. Exits 3 on any
    mismatch, queue below quorum or alarm, 4 when the management API cannot
    be asked.

    \b
    Examples:
      celery -A routing_demo routes verify
      # Before any worker runs: wiring only
      celery -A routing_demo routes verify --skip-consumers
      celery -A routing_demo -b pyamqp://app:secret@rabbit:5672/routing_demo routes verify \\
          --management-url http://app:secret@rabbit:15672 --json
    """
    app = get_app(ctx)
    vhost = vhost or broker_vhost(app)
    api = management_api(app, management_url)
    model = read_topology(app, workers=_workers(ctx, ask_live=not skip_consumers))
    try:
        live = {}
        if not skip_consumers:
            # Exact consumer counts for every durable queue: the management
            # API's statistics lag seconds behind a worker's start.
            names = {
                queue["name"]
                for queue in api.queues(vhost)
                if not (queue.get("auto_delete") or queue.get("exclusive"))
            }
            live = live_queue_counts(app, sorted(names | set(model.queues)))
        problems = verify_topology(
            model, api, vhost, check_consumers=not skip_consumers, live_counts=live
        )
        health = read_cluster_health(api, vhost, model.queues)
        alarms = broker_alarms(api)
    except requests.RequestException as exc:
        click.echo(f"cannot ask the management API at {api.base_url}: {exc}", err=True)
        ctx.exit(EXIT_UNKNOWN)
    except OSError as exc:
        click.echo(f"cannot reach the broker: {exc}", err=True)
        ctx.exit(EXIT_UNKNOWN)
    broker_problems = [*quorum_problems(health), *alarm_problems(alarms)]
    if as_json:
        document = {
            "vhost": vhost,
            "ok": not (problems or broker_problems),
            "problems": [p.as_dict() for p in [*problems, *broker_problems]],
        }
        if health.shown:
            document.update(cluster=health.as_dict(), warnings=health.warnings())
        if not skip_consumers:
            document["workers"] = model.workers.as_dict()
        emit_json(document)
    elif problems:
        click.echo(f"vhost {vhost!r}: {len(problems)} difference(s) from the declared topology")
        for problem in problems:
            click.echo(f"  {problem}")
    else:
        checked = "exchanges, queues, arguments, bindings" + (
            "" if skip_consumers else ", consumers"
        )
        click.echo(f"vhost {vhost!r}: matches the declared topology ({checked})")
    if not (skip_consumers or as_json):
        click.echo(f"workers: {model.workers.describe()}")
    if health.shown and not as_json:
        for line in health.lines():
            click.echo(line)
        for warning in health.warnings():
            click.echo(f"warning: {warning}")
    if not as_json:
        for problem in broker_problems:
            click.echo(f"error: {problem}")
    if problems or broker_problems:
        ctx.exit(EXIT_MISMATCH)


@click.command()
@generated_file_options(str(DEFAULT_DEFINITIONS_PATH))
@click.option(
    "--vhost",
    help=f"The vhost the definitions are for [default: {DEFAULT_VHOST} for routing_demo, "
    "else the broker URL's].",
)
@click.pass_context
def definitions(ctx: click.Context, output: Path | None, check: bool, vhost: str | None) -> None:
    """RabbitMQ definitions (exchanges, queues, bindings) from the topology.

    compose.yaml's broker loads conf/rabbitmq/definitions.json at boot;
    regenerate it after changing routing_demo/topology.py.

    \b
    Examples:
      celery -A routing_demo routes definitions -o conf/rabbitmq/definitions.json
      celery -A routing_demo routes definitions -o conf/rabbitmq/definitions.json --check
    """
    app = get_app(ctx)
    if vhost is None:
        vhost = DEFAULT_VHOST if _is_own_app(app) else broker_vhost(app)
    text = render_definitions(read_topology(app), vhost)
    _write_or_check(ctx, "definitions", text, output, check)


def _is_own_app(app: Any) -> bool:
    from ..celery import RoutingDemoCelery

    return isinstance(app, RoutingDemoCelery)


def _write_or_check(
    ctx: click.Context, command: str, text: str, output: Path | None, check: bool
) -> None:
    """Print ``text``, write it to ``output``, or (``check``) compare it with
    ``output``'s content and exit 3 when they differ."""
    if check:
        if output is None:
            raise click.UsageError("--check needs --output")
        current = output.read_text() if output.exists() else ""
        if current != text:
            click.echo(
                f"{output} is out of date: regenerate it with "
                f"`celery -A {app_option(ctx)} routes {command} -o {output}`",
                err=True,
            )
            ctx.exit(EXIT_MISMATCH)
        click.echo(f"{output} is current")
    elif output is None:
        sys.stdout.write(text)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        click.echo(f"wrote {output}")


@click.command()
@generated_file_options(str(DEFAULT_PERMISSIONS_PATH))
@json_option
@click.pass_context
def permissions(ctx: click.Context, output: Path | None, check: bool, as_json: bool) -> None:
    """The application user's least-privilege permissions, from the topology.

    Each of RabbitMQ's configure, write and read patterns covers exactly the
    queues and exchanges workers and clients use: the task topology, Celery's
    control (pidbox) and event (celeryev) exchanges and queues, and rpc://
    reply queues. Without -o: every resource, its access and why, then the
    patterns. compose's broker grants the patterns in
    conf/rabbitmq/permissions.json to its user; regenerate it after changing
    routing_demo/topology.py.

    \b
    Examples:
      celery -A routing_demo routes permissions
      celery -A routing_demo routes permissions -o conf/rabbitmq/permissions.json --check
      # Grant them on another broker (one vhost per environment)
      celery -A routing_demo routes permissions --json | jq -r '.permissions | .configure'
    """
    app = get_app(ctx)
    model = read_topology(app)
    if output is not None or check:
        _write_or_check(ctx, "permissions", render_permissions(app, model), output, check)
        return
    granted = app_permissions(app, model)
    resources = app_resources(app, model)
    if as_json:
        emit_json(
            {
                "permissions": granted.as_dict(),
                "resources": [resource.as_dict() for resource in resources],
            }
        )
        return
    for resource in resources:
        access = "".join(
            p[0] if p in resource.access else "-" for p in ("configure", "write", "read")
        )
        click.echo(f"{access} {resource.kind:<8} {resource.label:<26} {resource.why}")
    click.echo("")
    for permission, pattern in granted.as_dict().items():
        click.echo(f"{permission + ':':<10} {pattern}")
