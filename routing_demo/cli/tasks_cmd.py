"""``routes send`` and ``routes status``: a task's trip, and what the backend
knows about an id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from celery import states, uuid
from celery.backends.base import DisabledBackend
from celery.backends.rpc import RPCBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.signals import after_task_publish

from ..sent_state import SENT, install, records_sent_state, sent_ids_expire, sent_record
from ..timeline import Change, Outcome, follow, json_line
from ..transports.pyamqp import sending_within
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNKNOWN,
    broker_errors,
    emit_json,
    get_app,
    json_option,
    parse_value,
    resolve_task,
    task_call_options,
)

__all__ = ["send", "status"]

follow_option = click.option(
    "--follow",
    "follow_events",
    is_flag=True,
    help="Print each state change as it happens, until the task ends (needs workers with -E).",
)

enable_events_option = click.option(
    "--enable-events",
    is_flag=True,
    help=(
        "With --follow: first turn task events on in every worker (celery control "
        "enable_events); they stay on until `celery control disable_events`."
    ),
)


def turn_on_events(app: Any) -> None:
    """Ask every worker to send task events, and say who answered (stderr)."""
    with sending_within(1.0):
        replies = app.control.enable_events(reply=True, timeout=1.0) or []
    workers = sorted(name for reply in replies for name in reply)
    named = ", ".join(workers) or "none answered"
    click.echo(
        f"task events turned on in {len(workers)} worker(s): {named} "
        "(`celery control disable_events` turns them off)",
        err=True,
    )


@click.command(context_settings={"ignore_unknown_options": True})
@task_call_options
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the result.")
@follow_option
@enable_events_option
@json_option
@click.pass_context
def send(
    ctx: click.Context,
    task: str,
    args: tuple[str, ...],
    kwargs_json: str,
    queue: str | None,
    routing_key: str | None,
    exchange: str | None,
    timeout: float,
    follow_events: bool,
    enable_events: bool,
    as_json: bool,
) -> None:
    """Send TASK, wait, and print its id, state, result, queue and worker.

    ARGS are JSON values. Exits 1 if the task failed, 4 on timeout (the id
    is printed first, for `routes status`). With --follow, prints each state
    change as it happens instead (see `routes status --follow`), SENT first.

    \b
    Examples:
      celery -A routing_demo routes send add 2 3
      celery -A routing_demo routes send mul 6 7 --json
      # Results any process can read later: Redis
      celery -A routing_demo --result-backend redis://localhost:6379/0 routes send sub 9 4
      # Every state change, live (workers started with -E, or --enable-events)
      celery -A routing_demo routes send flaky 2 --follow
    """
    app = get_app(ctx)
    install(app)
    name = resolve_task(app, task)
    kwargs = parse_value(kwargs_json)
    if not isinstance(kwargs, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--kwargs")
    overrides = {
        key: value
        for key, value in (("queue", queue), ("routing_key", routing_key), ("exchange", exchange))
        if value is not None
    }
    call_args = [parse_value(arg) for arg in args]
    if follow_events:
        task_id = uuid()

        def send_now() -> Change:
            return send_recorded(app, name, call_args, kwargs, task_id=task_id, **overrides)

        try:
            if enable_events:
                turn_on_events(app)
            outcome = follow(
                app, task_id, change_printer(as_json), timeout=timeout, after_attach=send_now
            )
        except broker_errors(app) as exc:
            click.echo(
                f"cannot send {name}: the broker refused or cannot be reached: {exc}", err=True
            )
            ctx.exit(EXIT_FAILED)
        ctx.exit(follow_exit(task_id, outcome, timeout))
    try:
        result = app.tasks[name].apply_async(call_args, kwargs, **overrides)
    except broker_errors(app) as exc:
        click.echo(f"cannot send {name}: the broker refused or cannot be reached: {exc}", err=True)
        ctx.exit(EXIT_FAILED)
    if not as_json:
        click.echo(f"id:     {result.id}")
    outcome: dict[str, Any] = {"id": result.id, "task": name}
    try:
        value = result.get(timeout=timeout, propagate=False)
    except CeleryTimeoutError:
        outcome.update(state=result.state, timed_out=True)
        if as_json:
            emit_json(outcome)
        else:
            click.echo(f"state:  {result.state} after {timeout:g}s (timed out)")
            click.echo("Is a worker consuming its queue? `routes workers status`, `routes explain`")
        ctx.exit(EXIT_UNKNOWN)
    outcome.update(
        state=result.state,
        result=value if result.successful() else repr(value),
        queue=result.queue,
        worker=result.worker,
        timed_out=False,
    )
    if as_json:
        emit_json(outcome)
    else:
        click.echo(f"state:  {outcome['state']}")
        click.echo(f"result: {outcome['result']}")
        click.echo(f"queue:  {outcome['queue']}")
        click.echo(f"worker: {outcome['worker']}")
    if not result.successful():
        ctx.exit(EXIT_FAILED)


#: What each state means for someone holding only the id.
MEANINGS = {
    SENT: "sent, not started yet: waiting in its queue (or no worker consumes that queue)",
    states.STARTED: "started: a worker is running it",
    states.RETRY: "waiting to be retried",
    states.SUCCESS: "finished successfully",
    states.FAILURE: "failed",
    states.REVOKED: "revoked",
}


def describe_state(app: Any, task_id: str) -> tuple[dict[str, Any], int]:
    """The backend's record of ``task_id``, what it means, and the exit code."""
    backend = app.backend
    document: dict[str, Any] = {"id": task_id, "backend": type(backend).__name__}
    if isinstance(backend, DisabledBackend):
        document.update(state=None, meaning="no result backend is configured: nothing is stored")
        return document, EXIT_UNKNOWN
    if isinstance(backend, RPCBackend):
        document.update(
            state=None,
            meaning=(
                "rpc:// sends a result only to the process that sent the task, as a "
                "message: another process cannot know whether this id is queued, running, "
                "finished, expired or unknown. Use a stored backend (e.g. redis://) for that."
            ),
        )
        return document, EXIT_UNKNOWN
    meta = backend.get_task_meta(task_id)
    state = meta.get("status")
    document.update(
        state=state,
        name=meta.get("name"),
        worker=meta.get("worker"),
        queue=meta.get("queue") or meta.get("routing_key"),
        date_sent=meta.get("date_sent"),
        date_done=meta.get("date_done"),
    )
    if state == states.SUCCESS:
        document["result"] = meta.get("result")
    elif state in states.EXCEPTION_STATES:
        document["result"] = repr(meta.get("result"))
    if state == states.PENDING:
        if records_sent_state(backend):
            sent_at = sent_record(app, task_id)
            document["expired"] = sent_at is not None
            if sent_at is not None:
                document["date_sent"] = sent_at
                document["meaning"] = (
                    f"expired: sent at {sent_at}, but its result is gone "
                    f"(result_expires={app.conf.result_expires} s), so Celery reads PENDING "
                    "again; how it ended is no longer known"
                )
            else:
                document["meaning"] = (
                    "unknown: no send of this id is on record, so it was never sent, or "
                    "sent before the record's "
                    f"{sent_ids_expire(app)} s (routing_demo_sent_ids_expire), or by a "
                    "process that does not record SENT"
                )
        else:
            document["meaning"] = (
                f"PENDING: {type(backend).__name__} cannot record SENT, so this reads the "
                "same for a queued task and for an unknown or expired id"
            )
        return document, EXIT_UNKNOWN
    document["meaning"] = MEANINGS.get(state, state)
    code = EXIT_FAILED if state in (states.FAILURE, states.REVOKED) else EXIT_OK
    return document, code


@click.command()
@click.argument("task_id")
@follow_option
@enable_events_option
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    help="With --follow: seconds to wait for the task to end.",
)
@json_option
@click.pass_context
def status(
    ctx: click.Context,
    task_id: str,
    follow_events: bool,
    enable_events: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """What the result backend knows about TASK_ID, in plain words.

    Tells a task sent but not started (SENT, recorded at publish time) from
    an unknown or expired id, which Celery alone reports as PENDING for
    both. Exits 0 when known, 1 if it failed or was revoked, 4 when unknown,
    expired, or unknowable (rpc://).

    With --follow, prints the stored state and then every change as it
    happens, one line each (time in UTC, state, worker, the queue and the
    exchange/routing key the message came by, the retry reason, result or
    exception), until the task ends: exit 0 on SUCCESS, 1 on FAILURE,
    REVOKED or REJECTED, 4 when --timeout passes first. The changes come
    from Celery's task events: start workers with -E. --json prints one
    JSON object per line.

    \b
    Examples:
      celery -A routing_demo --result-backend redis://localhost:6379/0 routes status 6c1d…
      celery -A routing_demo routes status 6c1d… --json
      # Every change until it ends (workers started with -E, or --enable-events)
      celery -A routing_demo --result-backend redis://localhost:6379/0 routes status 6c1d… --follow
    """
    if follow_events:
        app = get_app(ctx)
        try:
            if enable_events:
                turn_on_events(app)
            outcome = follow(app, task_id, change_printer(as_json), timeout=timeout)
        except broker_errors(app) as exc:
            click.echo(f"cannot follow {task_id}: the broker cannot be reached: {exc}", err=True)
            ctx.exit(EXIT_UNKNOWN)
        ctx.exit(follow_exit(task_id, outcome, timeout))
    document, code = describe_state(get_app(ctx), task_id)
    if as_json:
        emit_json(document)
    else:
        click.echo(f"{'id:':<10} {document['id']}")
        click.echo(f"{'state:':<10} {document['state'] or '(unknowable here)'}")
        click.echo(f"{'meaning:':<10} {document['meaning']}")
        for key in ("name", "queue", "worker", "date_sent", "date_done", "result"):
            if document.get(key) is not None:
                click.echo(f"{key + ':':<10} {document[key]}")
    ctx.exit(code)


def change_printer(as_json: bool) -> Any:
    """Prints a ``Change`` as one line of text or of JSON, at once."""

    def print_change(change: Change) -> None:
        click.echo(json_line(change) if as_json else change.line())

    return print_change


def send_recorded(
    app: Any, name: str, args: list[Any], kwargs: dict[str, Any], **options: Any
) -> Change:
    """Send task ``name`` and return its SENT change: the time the publish
    began, and the exchange and routing key it was published with (Celery's
    ``after_task_publish``)."""
    task_id = options["task_id"]
    published: dict[str, Any] = {}

    def record(headers: Any = None, exchange: Any = None, routing_key: Any = None, **_: Any):
        if (headers or {}).get("id") == task_id:
            published.update(exchange=getattr(exchange, "name", exchange), routing_key=routing_key)

    sent_at = datetime.now(UTC)
    after_task_publish.connect(record, weak=False)
    try:
        app.tasks[name].apply_async(args, kwargs, **options)
    finally:
        after_task_publish.disconnect(record)
    return Change(
        task_id=task_id,
        state=SENT,
        time=sent_at,
        source="publish",
        exchange=published.get("exchange"),
        routing_key=published.get("routing_key"),
    )


def follow_exit(task_id: str, outcome: Outcome, timeout: float) -> int:
    """The exit code of a follow, saying on stderr why it stopped early."""
    if outcome.ended:
        return EXIT_OK if outcome.last.state == states.SUCCESS else EXIT_FAILED
    if outcome.events == 0:
        click.echo(
            f"no task events came for {task_id} in {timeout:g}s: are the workers started "
            "with -E (--events)? `celery -A … control enable_events` turns them on live.",
            err=True,
        )
    else:
        last = outcome.last.state if outcome.last else "?"
        click.echo(f"{task_id} has not ended after {timeout:g}s (last: {last})", err=True)
    return EXIT_UNKNOWN
