"""``routes send`` and ``routes status``: a task's trip, and what the backend
knows about an id."""

from __future__ import annotations

from typing import Any

import click
from celery import states
from celery.backends.base import DisabledBackend
from celery.backends.rpc import RPCBackend
from celery.exceptions import TimeoutError as CeleryTimeoutError

from ..sent_state import SENT, install, records_sent_state
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


@click.command(context_settings={"ignore_unknown_options": True})
@task_call_options
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the result.")
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
    as_json: bool,
) -> None:
    """Send TASK, wait, and print its id, state, result, queue and worker.

    ARGS are JSON values. Exits 1 if the task failed, 4 on timeout (the id
    is printed first, for `routes status`).

    \b
    Examples:
      celery -A routing_demo routes send add 2 3
      celery -A routing_demo routes send mul 6 7 --json
      # Results any process can read later: Redis
      celery -A routing_demo --result-backend redis://localhost:6379/0 routes send sub 9 4
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
    try:
        result = app.tasks[name].apply_async(
            [parse_value(arg) for arg in args], kwargs, **overrides
        )
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
            document["meaning"] = (
                "unknown or expired: no SENT record exists, so this id was never sent by a "
                "process that records SENT, or its record expired "
                f"(result_expires={app.conf.result_expires})"
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
@json_option
@click.pass_context
def status(ctx: click.Context, task_id: str, as_json: bool) -> None:
    """What the result backend knows about TASK_ID, in plain words.

    Tells a task sent but not started (SENT, recorded at publish time) from
    an unknown or expired id, which Celery alone reports as PENDING for
    both. Exits 0 when known, 1 if it failed or was revoked, 4 when unknown,
    expired, or unknowable (rpc://).

    \b
    Examples:
      celery -A routing_demo --result-backend redis://localhost:6379/0 routes status 6c1d…
      celery -A routing_demo routes status 6c1d… --json
    """
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
