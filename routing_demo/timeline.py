"""A task's state changes as they happen, from Celery's task events, joined
to what the result backend already knows.

The result backend keeps only a task's latest state; the workers' task
events (``celery worker -E``) tell every change: RECEIVED, STARTED, each
RETRY with its reason, and the end. ``follow`` first binds an event queue
and starts consuming, *then* reads the backend (the ``SENT`` record of
``routing_demo.sent_state``, or a later state), so no change that happens
between the two is missed; a task that has already ended is reported from
the backend at once. The worker's events name the exchange, routing key and
queue the message came by (``routing_demo.events``). Nothing here depends
on pytest or click.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from celery import Celery, states
from celery.backends.base import DisabledBackend
from celery.backends.rpc import RPCBackend
from kombu import Consumer

from .sent_state import SENT

__all__ = [
    "END_STATES",
    "RECEIVED",
    "REJECTED",
    "Change",
    "Outcome",
    "change_from_event",
    "change_from_meta",
    "follow",
    "json_line",
    "reads_stored_state",
]

#: Celery's state names for what only events tell.
RECEIVED = states.RECEIVED
REJECTED = states.REJECTED

#: Celery task event type -> the state it reports.
EVENT_STATES = {
    "task-sent": SENT,
    "task-received": RECEIVED,
    "task-started": states.STARTED,
    "task-retried": states.RETRY,
    "task-succeeded": states.SUCCESS,
    "task-failed": states.FAILURE,
    "task-revoked": states.REVOKED,
    "task-rejected": REJECTED,
}

#: States after which nothing more happens to the task (REJECTED only when
#: the message was not requeued: see ``Change.ended``).
END_STATES = frozenset({states.SUCCESS, states.FAILURE, states.REVOKED, REJECTED})

#: Event fields shown as a change's details, per state.
_DETAILS = {
    states.RETRY: ("exception",),
    states.SUCCESS: ("result", "runtime"),
    states.FAILURE: ("exception",),
    states.REVOKED: ("terminated", "expired", "signum"),
    REJECTED: ("requeue",),
    RECEIVED: ("retries", "eta"),
}

#: While no later change was printed, events of these states repeat the
#: stored state just read (they were sent around the backend read).
_REPEATS_OF = {
    SENT: frozenset({SENT}),
    states.STARTED: frozenset({RECEIVED, states.STARTED}),
    states.RETRY: frozenset({states.RETRY}),
}

#: Seconds without an event after which ``follow`` looks at the backend again.
IDLE_INTERVAL = 1.0


@dataclass(frozen=True)
class Change:
    """One state change of a task: what, when (UTC), where, and from which
    source (``event``, ``backend`` or ``publish``)."""

    task_id: str
    state: str
    time: datetime | None
    source: str
    worker: str | None = None
    queue: str | None = None
    exchange: str | None = None
    routing_key: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        if self.state == REJECTED:
            return not self.details.get("requeue")
        return self.state in END_STATES

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.task_id,
            "time": _iso(self.time),
            "state": self.state,
            "worker": self.worker,
            "queue": self.queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "source": self.source,
            **self.details,
        }

    def line(self) -> str:
        """One line for people: time, state, worker, where from, details."""
        where = []
        if self.queue is not None:
            where.append(f"queue={self.queue}")
        if self.exchange is not None or self.routing_key is not None:
            exchange = "?" if self.exchange is None else self.exchange or "(default)"
            where.append(f"via {exchange}/{self.routing_key or ''}")
        details = [f"{key}={value}" for key, value in self.details.items()]
        if self.source != "event":
            details.append(f"(from the {self.source})")
        return "  ".join(
            [
                f"{_iso(self.time) or '-':<24}",
                f"{self.state:<8}",
                f"{self.worker or '-':<24}",
                " ".join(where) or "-",
                *details,
            ]
        ).rstrip()


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def change_from_event(event: Mapping[str, Any]) -> Change | None:
    """The change a Celery task event reports, or None for other events."""
    state = EVENT_STATES.get(event.get("type", ""))
    if state is None or not event.get("uuid"):
        return None
    timestamp = event.get("timestamp")
    details = {key: event[key] for key in _DETAILS.get(state, ()) if event.get(key) is not None}
    if state == RECEIVED and not details.get("retries"):
        details.pop("retries", None)
    if isinstance(details.get("runtime"), float):
        details["runtime"] = round(details["runtime"], 6)
    return Change(
        task_id=event["uuid"],
        state=state,
        time=None if timestamp is None else datetime.fromtimestamp(timestamp, UTC),
        source="event",
        worker=event.get("hostname") if state != SENT else None,
        queue=event.get("queue"),
        exchange=event.get("exchange"),
        routing_key=event.get("routing_key"),
        details=details,
    )


def change_from_meta(task_id: str, meta: Mapping[str, Any]) -> Change | None:
    """The result backend's record of ``task_id`` as a change; None when it
    has none (``PENDING``)."""
    state = meta.get("status")
    if not state or state == states.PENDING:
        return None
    details: dict[str, Any] = {}
    if state == states.SUCCESS:
        details["result"] = meta.get("result")
    elif state in (states.FAILURE, states.RETRY):
        details["exception"] = repr(meta.get("result"))
    elif state == states.REVOKED:
        details["reason"] = repr(meta.get("result"))
    return Change(
        task_id=task_id,
        state=state,
        # Celery dates only an end (date_done); our SENT record has date_sent.
        time=_parse_time(meta.get("date_done") or meta.get("date_sent")),
        source="backend",
        worker=meta.get("worker"),
        # SENT records name exchange and routing key; Celery's own records
        # (result_extended) store the delivery's routing key as "queue".
        exchange=meta.get("exchange"),
        routing_key=meta.get("routing_key") or meta.get("queue"),
        details=details,
    )


def reads_stored_state(app: Celery) -> bool:
    """Whether this process can read another process's task states from the
    app's backend (not ``rpc://``, which only the sender receives)."""
    return not isinstance(app.backend, (DisabledBackend, RPCBackend))


@dataclass
class Outcome:
    """How ``follow`` ended: the last change, whether it is an end, and how
    many of the task's events arrived."""

    last: Change | None = None
    events: int = 0

    @property
    def ended(self) -> bool:
        return self.last is not None and self.last.ended


def follow(
    app: Celery,
    task_id: str,
    on_change: Callable[[Change], None],
    *,
    timeout: float,
    after_attach: Callable[[], Change | None] | None = None,
    idle_interval: float = IDLE_INTERVAL,
) -> Outcome:
    """Call ``on_change`` for each state change of ``task_id`` until it ends
    or ``timeout`` seconds pass without an end.

    An event queue (routing key ``task.#``) is bound and consumed first.
    Then ``after_attach`` runs when given (``routes send --follow`` sends the
    task there and returns its SENT change); otherwise the backend is read,
    and its state is the first change. A task whose workers send no events
    (not started with ``-E``) still ends here: once the backend shows an end
    state on two idle looks in a row with no event, that is the last change.
    """
    outcome = Outcome()
    deadline = time.monotonic() + timeout
    stored = reads_stored_state(app)
    snapshot: Change | None = None
    pending: list[Change] = []

    def emit(change: Change) -> None:
        outcome.last = change
        on_change(change)

    def on_event(event: dict[str, Any]) -> None:
        if event.get("uuid") == task_id:
            change = change_from_event(event)
            if change is not None:
                pending.append(change)

    with app.connection_for_read() as connection, ExitStack() as consuming:
        receiver = app.events.Receiver(connection, handlers={"*": on_event}, routing_key="task.#")
        channel = receiver.channel
        for consumer in receiver.get_consumers(partial(Consumer, channel), channel):
            consuming.enter_context(consumer)  # declares, binds, consumes
        if after_attach is not None:
            sent = after_attach()
            if sent is not None:
                emit(sent)
        elif stored:
            snapshot = change_from_meta(task_id, app.backend.get_task_meta(task_id))
            if snapshot is not None:
                emit(snapshot)
                if snapshot.ended:
                    return outcome
        repeats = _REPEATS_OF.get(snapshot.state, frozenset()) if snapshot else frozenset()
        stored_end_seen = False
        next_look = time.monotonic() + idle_interval
        while True:
            while pending:
                change = pending.pop(0)
                outcome.events += 1
                stored_end_seen = False
                next_look = time.monotonic() + idle_interval
                if change.state in repeats:
                    continue
                repeats = frozenset()
                emit(change)
                if change.ended:
                    return outcome
            now = time.monotonic()
            if stored and now >= next_look:
                # No event of this task for a while: has it ended without events?
                ending = change_from_meta(task_id, app.backend.get_task_meta(task_id))
                if ending is not None and ending.ended:
                    if stored_end_seen:
                        emit(ending)
                        return outcome
                    stored_end_seen = True
                else:
                    stored_end_seen = False
                next_look = now + idle_interval
            remaining = deadline - now
            if remaining <= 0:
                return outcome
            wait = min(remaining, max(next_look - now, 0.01) if stored else idle_interval)
            try:
                connection.drain_events(timeout=wait)
            except TimeoutError:
                connection.heartbeat_check()


def json_line(change: Change) -> str:
    """``change`` as one line of JSON."""
    return json.dumps(change.as_json(), default=str)
