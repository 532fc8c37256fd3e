"""``routes revoke``: Celery's revoke, with where each task was, whether the
workers heard it, and what the result backend says afterwards.

A revoke is a broadcast: every worker running now adds the ids to the revoked
set it keeps in memory (and, started with ``--statedb``, on disk: see
``routing_demo.revokes``), and discards such a task when its message reaches
a pool process. Until then the backend would still read ``SENT`` for a task
waiting in its queue, or held by a worker until its countdown; Celery's
workers mark only ``PENDING`` ids revoked, not our ``SENT``. So a task that
has not started is marked ``REVOKED`` here, at once.
"""

from __future__ import annotations

import contextlib
import signal as signals
from dataclasses import dataclass, field
from typing import Any

import click
from celery import Celery, states
from celery.app.task import Context
from celery.backends.base import DisabledBackend
from celery.backends.rpc import RPCBackend

from ..polling import wait_until
from ..sent_state import SENT, records_sent_state, sent_record
from ..transports.pyamqp import sending_within
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNKNOWN,
    broker_errors,
    emit_json,
    get_app,
    json_option,
)

__all__ = ["revoke"]

#: States of a task that has not started (or waits for its next attempt): a
#: revoke may mark these ``REVOKED`` in the backend. Anything else was
#: started or finished by a worker, whose record stays.
NOT_STARTED = frozenset({SENT, states.PENDING, states.RECEIVED, states.RETRY})

#: ``inspect query_task``'s words for where a worker holds a task.
WHERE = {
    "scheduled": "held by {worker} until its countdown/ETA (scheduled)",
    "reserved": "prefetched by {worker}, waiting for a pool process (reserved)",
    "active": "running on {worker} (active)",
    "ready": "just finished on {worker}",
}


@dataclass
class Revoked:
    """What is known about one revoked id, before and after."""

    id: str
    #: The backend's state before the revoke (``None``: it cannot tell).
    state_before: str | None
    #: Worker node -> how it held the task (``scheduled``, ``reserved``, ``active``).
    held_by: dict[str, str] = field(default_factory=dict)
    #: When the task was sent, from the long-lived send record (Redis only).
    sent_at: str | None = None
    name: str | None = None
    queue: str | None = None
    state: str | None = None
    marked_revoked: bool = False
    known: bool = True
    meaning: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "held_by": [{"worker": w, "as": how} for w, how in sorted(self.held_by.items())],
            "state_before": self.state_before,
            "state": self.state,
            "marked_revoked": self.marked_revoked,
            "known": self.known,
            "sent_at": self.sent_at,
            "meaning": self.meaning,
        }

    def where(self) -> str:
        if not self.held_by and self.state_before == states.RETRY:
            # A retry keeps the task's id; the worker forgets the id's new
            # request when the failed attempt ends, so ``query_task`` misses it.
            return "waiting for its retry (no worker lists a retry's countdown)"
        if not self.held_by:
            return "not held by any worker"
        return "; ".join(
            WHERE.get(how, how + " on {worker}").format(worker=worker)
            for worker, how in sorted(self.held_by.items())
        )


def stores_states(backend: Any) -> bool:
    """Whether another process can read a task's state from ``backend``."""
    return not isinstance(backend, (DisabledBackend, RPCBackend))


def read_before(app: Celery, task_id: str) -> Revoked:
    """The backend's record of ``task_id``, read before the workers hear the
    revoke (they write ``REVOKED`` over ``PENDING`` themselves)."""
    backend = app.backend
    if not stores_states(backend):
        return Revoked(task_id, state_before=None)
    meta = backend.get_task_meta(task_id)
    return Revoked(
        task_id,
        state_before=meta.get("status"),
        sent_at=sent_record(app, task_id),
        name=meta.get("name"),
        queue=meta.get("queue") or meta.get("routing_key"),
    )


def where_held(app: Celery, task_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Task id -> worker node -> (how it holds the task, the request's info),
    from ``inspect query_task``."""
    with sending_within(timeout):
        replies = app.control.inspect(timeout=timeout).query_task(*task_ids) or {}
    held: dict[str, dict[str, Any]] = {}
    for worker, tasks in replies.items():
        for task_id, (how, info) in (tasks or {}).items():
            held.setdefault(task_id, {})[worker] = (how, info)
    return held


def mark_if_not_started(app: Celery, task: Revoked, info: dict[str, Any] | None) -> bool:
    """Mark ``task`` revoked in the backend unless a worker has started it.

    Called only after the workers acknowledged the revoke, so none of them
    starts it any more; the state is read again just before the write,
    in case a worker started it in the meantime. The record keeps the task's
    name and queue (``result_extended``).
    """
    backend = app.backend
    if backend.get_task_meta(task.id).get("status") not in NOT_STARTED:
        return False
    delivery_info = (info or {}).get("delivery_info") or {"routing_key": task.queue}
    request = Context(
        id=task.id,
        task=task.name or (info or {}).get("name"),
        hostname=(info or {}).get("hostname"),
        delivery_info=delivery_info,
    )
    backend.mark_as_revoked(task.id, reason="revoked", request=request)
    return True


def explain(task: Revoked, backend: Any, acknowledged: bool) -> tuple[str, bool]:
    """What the revoke meant for ``task``, and whether the id is known."""
    later = (
        "The revoke was still sent to the workers: a task with this id that arrives "
        "later is discarded (while they remember the revoke)."
        if acknowledged
        else "No worker heard the revoke, so nothing keeps a task with this id from running."
    )
    if task.state_before is None:
        if task.held_by:
            return f"{type(backend).__name__} keeps no state; a worker held the task.", True
        kind = "rpc://" if isinstance(backend, RPCBackend) else "no result backend"
        return (
            f"{kind} keeps no state another process can read: the backend cannot tell whether "
            f"this id is queued, finished or unknown. {later}",
            False,
        )
    ended = task.state in states.READY_STATES and task.state != states.REVOKED
    if ended and task.state_before not in states.READY_STATES:
        # It ran to its end between the first read and the revoke.
        return f"it finished ({task.state}) before the revoke reached it: its record stays", True
    if task.held_by or task.state_before in NOT_STARTED - {states.PENDING}:
        if "active" in task.held_by.values():
            return "it was running: revoked", True
        if task.state_before == states.RETRY:
            return "it was waiting to be retried: revoked", True
        if not task.held_by:
            return "it had not started (waiting in its queue): revoked", True
        return "it had not started: revoked", True
    if task.state_before == states.PENDING:
        # Celery's workers write REVOKED for an id the backend has no record of.
        recorded = (
            " The workers recorded it as REVOKED."
            if task.state == states.REVOKED and acknowledged
            else ""
        )
        if task.sent_at:
            return (
                f"sent at {task.sent_at}, but neither its result nor its SENT state is kept any "
                "more: still queued, or finished longer ago than result_expires. "
                f"{later}{recorded}",
                True,
            )
        if records_sent_state(backend):
            return (
                f"unknown id: no result, no SENT record, and no worker holds it. {later}{recorded}",
                False,
            )
        return (
            f"PENDING: {type(backend).__name__} cannot record SENT, so a queued task and an "
            f"unknown id read the same, and no worker holds it. {later}{recorded}",
            False,
        )
    if task.state_before in states.READY_STATES:
        return f"it had already finished ({task.state_before}): its record stays", True
    return f"a worker has started it ({task.state_before}): its record stays", True


def settle(
    app: Celery,
    task: Revoked,
    holders: dict[str, Any],
    acknowledged: bool,
    terminate: bool,
    timeout: float,
) -> None:
    """After the broadcast: mark ``task`` revoked if it had not started, wait
    for a terminated one to read REVOKED, and read its state."""
    backend = app.backend
    task.held_by = {worker: how for worker, (how, _) in holders.items()}
    info = next((info for _, info in holders.values()), None)
    if info and not task.name:
        task.name = info.get("name")
    running = "active" in task.held_by.values()
    waiting = task.held_by or task.state_before in NOT_STARTED - {states.PENDING}
    if acknowledged and stores_states(backend) and waiting and not running:
        task.marked_revoked = mark_if_not_started(app, task, info)
    if running and terminate and stores_states(backend):
        # The worker writes REVOKED as it stops the pool process, before it
        # replies; a worker that replied first gets ``timeout`` seconds more.
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: backend.get_task_meta(task.id).get("status") in states.READY_STATES,
                timeout=timeout,
                message=f"{task.id} not finished after --terminate",
            )
    if task.state_before is not None:
        task.state = backend.get_task_meta(task.id).get("status")
    task.meaning, task.known = explain(task, backend, acknowledged)


def signal_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``TERM``, ``SIGTERM``, ``term`` or ``15`` -> ``SIGTERM``."""
    text = value.strip().upper()
    try:
        number = int(text) if text.isdigit() else signals.Signals[f"SIG{text.removeprefix('SIG')}"]
        return signals.Signals(number).name
    except (KeyError, ValueError):
        raise click.BadParameter(f"no such signal: {value!r}") from None


@click.command()
@click.argument("task_ids", nargs=-1, required=True, metavar="ID [ID]...")
@click.option(
    "--terminate",
    is_flag=True,
    help="Also stop a running task: its pool process gets --signal (prefork).",
)
@click.option(
    "--signal",
    "signal",
    default="SIGTERM",
    show_default=True,
    callback=signal_name,
    help="The signal --terminate sends: TERM, KILL, INT, USR1, … (with or without SIG).",
)
@click.option(
    "--timeout",
    default=1.0,
    show_default=True,
    help="Seconds to wait for the workers' replies (and for a terminated task's state).",
)
@json_option
@click.pass_context
def revoke(
    ctx: click.Context,
    task_ids: tuple[str, ...],
    terminate: bool,
    signal: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Revoke tasks by id: workers discard them instead of running them.

    Prints which workers acknowledged the revoke, where each task was
    (scheduled, reserved or running on a worker, or not held by any), and
    its state afterwards. A task that has not started reads REVOKED in a
    stored backend (Redis) at once. Workers started by `routes workers
    start` keep revoked ids across a restart, even after a SIGKILL.

    Exits 0 when every id was found and revoked, 4 when an id is unknown
    (or the backend, e.g. rpc://, cannot tell), 1 if no worker
    acknowledged the revoke or the broker cannot be reached.

    \b
    Examples:
      celery -A routing_demo --result-backend redis://localhost:6379/0 routes revoke 6c1d…
      # Stop it if it is running (SIGTERM to its pool process)
      celery -A routing_demo routes revoke 6c1d… --terminate
      celery -A routing_demo routes revoke 6c1d… 9f2e… --terminate --signal KILL --json
    """
    app = get_app(ctx)
    ids = list(dict.fromkeys(task_ids))
    tasks = [read_before(app, task_id) for task_id in ids]
    try:
        held = where_held(app, ids, timeout)
        with sending_within(timeout):
            replies = app.control.revoke(
                ids, terminate=terminate, signal=signal, reply=True, timeout=timeout
            )
    except broker_errors(app) as exc:
        click.echo(f"cannot revoke: the broker refused or cannot be reached: {exc}", err=True)
        ctx.exit(EXIT_FAILED)
    acknowledged = sorted(worker for reply in replies or [] for worker in reply)
    for task in tasks:
        settle(app, task, held.get(task.id, {}), bool(acknowledged), terminate, timeout)
    backend = app.backend
    if not acknowledged:
        code = EXIT_FAILED
    elif all(task.known for task in tasks):
        code = EXIT_OK
    else:
        code = EXIT_UNKNOWN
    if as_json:
        emit_json(
            {
                "acknowledged_by": acknowledged,
                "terminate": terminate,
                "signal": signal if terminate else None,
                "backend": type(backend).__name__,
                "tasks": [task.as_dict() for task in tasks],
            }
        )
    else:
        print_text(tasks, acknowledged, terminate, signal, timeout)
    ctx.exit(code)


def print_text(
    tasks: list[Revoked], acknowledged: list[str], terminate: bool, signal: str, timeout: float
) -> None:
    if acknowledged:
        click.echo(f"revoke acknowledged by: {', '.join(acknowledged)}")
    else:
        click.echo(
            f"revoke acknowledged by no worker within {timeout:g}s: none is running, or none "
            "answered (a longer --timeout?)"
        )
    if terminate:
        click.echo(f"terminate: running tasks get {signal}")
    for task in tasks:
        click.echo(task.id + (f" ({task.name})" if task.name else ""))
        click.echo(f"  {'was:':<8} {task.where()}")
        if task.state_before is None:
            click.echo(f"  {'state:':<8} (unknowable here)")
        else:
            after = task.state + (" (marked revoked now)" if task.marked_revoked else "")
            click.echo(f"  {'state:':<8} {task.state_before} -> {after}")
        click.echo(f"  {'meaning:':<8} {task.meaning}")
