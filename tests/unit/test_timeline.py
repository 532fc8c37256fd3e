"""Task timelines without RabbitMQ: events and backend records as changes,
the worker's event dispatcher without confirms, the delivery origin on its
events, and ``follow`` on kombu's in-memory transport."""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any

import pytest
from celery import Celery, states, uuid
from celery.contrib.testing.mocks import TaskMessage
from kombu import Connection

from routing_demo.conf import celeryconfig
from routing_demo.events import (
    EVENT_CONNECTION_NAME,
    EventDispatcher,
    Events,
    Request,
    Task,
    delivery_origin,
)
from routing_demo.sent_state import SENT
from routing_demo.timeline import (
    RECEIVED,
    REJECTED,
    Change,
    change_from_event,
    change_from_meta,
    follow,
    json_line,
)

BROKER_URL = "pyamqp://guest:guest@127.0.0.1:5672/unit"


def make_app(**settings: Any) -> Celery:
    app = Celery("routing_demo-unit", set_as_current=False, events=Events, task_cls=Task)
    app.config_from_object(celeryconfig)
    app.conf.update(broker_url=BROKER_URL, **settings)
    return app


class RecordingProducer:
    """Records what is published through it; ``connection`` says whether it
    would wait for confirms."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.published: list[tuple[Any, dict[str, Any]]] = []

    def publish(self, body: Any, **options: Any) -> None:
        self.published.append((body, options))


# --- Changes ------------------------------------------------------------------


def event(type: str, task_id: str = "t1", **fields: Any) -> dict[str, Any]:
    return {
        "type": type,
        "uuid": task_id,
        "hostname": "default@host",
        "timestamp": 1_800_000_000.5,
        **fields,
    }


def test_when_a_task_event_arrives_then_it_reads_as_its_state_with_origin() -> None:
    change = change_from_event(
        event(
            "task-retried",
            exception="TransientError('attempt 1')",
            exchange="routing_demo",
            routing_key="default",
            queue="default",
        )
    )
    assert change is not None
    assert (change.state, change.worker, change.queue) == (states.RETRY, "default@host", "default")
    assert change.details == {"exception": "TransientError('attempt 1')"}
    assert not change.ended
    line = change.line()
    assert line.startswith("2027-01-15T08:00:00.500Z  RETRY")
    assert "queue=default via routing_demo/default" in line
    assert "TransientError('attempt 1')" in line


@pytest.mark.parametrize(
    ("type", "fields", "state", "ended"),
    [
        ("task-received", {}, RECEIVED, False),
        ("task-started", {}, states.STARTED, False),
        ("task-succeeded", {"result": "3"}, states.SUCCESS, True),
        ("task-failed", {"exception": "E()"}, states.FAILURE, True),
        ("task-revoked", {"terminated": True, "expired": False}, states.REVOKED, True),
        ("task-rejected", {"requeue": False}, REJECTED, True),
        ("task-rejected", {"requeue": True}, REJECTED, False),
    ],
)
def test_when_events_arrive_then_only_end_states_end(
    type: str, fields: dict[str, Any], state: str, ended: bool
) -> None:
    change = change_from_event(event(type, **fields))
    assert change is not None
    assert (change.state, change.ended) == (state, ended)


def test_when_an_event_is_not_a_task_state_then_it_is_no_change() -> None:
    assert change_from_event({"type": "worker-heartbeat", "hostname": "x"}) is None


def test_when_the_backend_holds_sent_then_exchange_and_key_come_from_the_record() -> None:
    meta = {
        "status": SENT,
        "date_sent": "2027-01-15T08:00:00.250000+00:00",
        "exchange": "routing_demo",
        "routing_key": "default",
    }
    change = change_from_meta("t1", meta)
    assert change is not None
    assert (change.state, change.source, change.worker) == (SENT, "backend", None)
    assert (change.exchange, change.routing_key) == ("routing_demo", "default")
    assert json.loads(json_line(change))["time"] == "2027-01-15T08:00:00.250Z"


def test_when_the_backend_knows_nothing_then_there_is_no_change() -> None:
    assert change_from_meta("t1", {"status": states.PENDING}) is None


def test_when_json_is_asked_then_each_change_is_one_line_of_json() -> None:
    change = Change("t1", states.SUCCESS, None, "event", worker="w@h", details={"result": "3"})
    text = json_line(change)
    assert "\n" not in text
    assert json.loads(text) == {
        "id": "t1",
        "time": None,
        "state": states.SUCCESS,
        "worker": "w@h",
        "queue": None,
        "exchange": None,
        "routing_key": None,
        "source": "event",
        "result": "3",
    }


# --- The worker's side: no confirms, and the delivery origin ------------------


def test_when_the_worker_makes_its_dispatcher_then_its_connection_does_not_confirm() -> None:
    app = make_app()
    # What the worker's Events bootstep does: a new connection for the dispatcher.
    connection = app.connection_for_write()
    dispatcher = app.events.Dispatcher(connection, hostname="default@host", enabled=False)
    assert isinstance(dispatcher, EventDispatcher)
    assert dispatcher.connection is connection
    assert connection.transport_options["confirm_publish"] is False
    assert connection.transport_options["client_properties"] == {
        "connection_name": EVENT_CONNECTION_NAME
    }
    # Task publishes keep their confirms.
    assert app.connection_for_write().transport_options["confirm_publish"] is True
    assert app.conf.broker_transport_options == {"confirm_publish": True}


def test_when_an_event_goes_to_a_confirming_producer_then_an_unconfirmed_one_sends_it() -> None:
    app = make_app()
    dispatcher = app.events.Dispatcher(
        app.connection_for_write(), hostname="h", enabled=False, buffer_while_offline=False
    )
    confirming = RecordingProducer(app.connection_for_write())
    unconfirmed = RecordingProducer(dispatcher.connection)

    class Pool:
        @contextmanager
        def acquire(self, block: bool = True) -> Any:
            yield unconfirmed

    dispatcher._event_producer_pool = Pool()  # type: ignore[assignment]
    dispatcher.publish("task-sent", {"uuid": "t1"}, confirming)
    assert confirming.published == []
    assert [body["type"] for body, _ in unconfirmed.published] == ["task-sent"]
    # And the pool the dispatcher would use really does not confirm.
    fresh = app.events.Dispatcher(app.connection_for_write(), hostname="h", enabled=False)
    options = fresh.event_producer_pool.connections.connection.transport_options
    assert options["confirm_publish"] is False


@pytest.fixture
def selected_app() -> Celery:
    """An app whose worker consumes everything but ``add`` and ``sub`` (``-X add,sub``)."""
    app = make_app()
    app.amqp.queues.deselect(["add", "sub"])
    return app


def test_when_a_message_came_by_the_default_key_then_its_queue_is_default(
    selected_app: Celery,
) -> None:
    origin = delivery_origin(selected_app, {"exchange": "routing_demo", "routing_key": "default"})
    assert origin == {"exchange": "routing_demo", "routing_key": "default", "queue": "default"}


def test_when_no_consumed_queue_matches_then_the_queue_is_unknown(selected_app: Celery) -> None:
    # This worker does not consume ``add``: it cannot have come from there.
    origin = delivery_origin(selected_app, {"exchange": "routing_demo", "routing_key": "add"})
    assert origin["queue"] is None
    assert origin["routing_key"] == "add"


def test_when_a_worker_request_sends_events_then_they_carry_the_origin(
    selected_app: Celery,
) -> None:
    app = selected_app

    @app.task(name="unit.noop", shared=False)
    def noop() -> None:
        """Does nothing."""

    task = noop
    assert task.Request == "routing_demo.events:Request"
    dispatcher = app.events.Dispatcher(Connection("memory://"), hostname="default@host")
    recording = RecordingProducer(Connection("memory://"))
    dispatcher.producer = recording
    task_id = uuid()
    message = TaskMessage("unit.noop", id=task_id)
    message.delivery_info = {"exchange": "routing_demo", "routing_key": "default"}
    message.properties = {}
    request = Request(message, app=app, task=task, eventer=dispatcher, hostname="default@host")
    # Celery's strategy sends task-received straight through the dispatcher.
    dispatcher.send("task-received", uuid=task_id, name="unit.noop")
    request.send_event("task-started")
    sent = [body for body, _ in recording.published]
    assert [body["type"] for body in sent] == ["task-received", "task-started"]
    for body in sent:
        assert (body["queue"], body["exchange"], body["routing_key"]) == (
            "default",
            "routing_demo",
            "default",
        )


# --- follow, on the in-memory transport -----------------------------------------


@pytest.fixture
def memory_app() -> Celery:
    app = Celery("routing_demo-unit-memory", set_as_current=False)
    app.conf.update(broker_url="memory://", result_backend="cache+memory://")
    return app


def publish_events(app: Celery, *events: dict[str, Any]) -> None:
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, hostname="default@host")
        for fields in events:
            fields = dict(fields)
            dispatcher.send(fields.pop("type"), **fields)
        dispatcher.close()


def test_when_following_from_the_send_then_every_change_until_the_end(memory_app: Celery) -> None:
    task_id = uuid()
    other = uuid()
    seen: list[Change] = []

    def send() -> Change:
        publish_events(
            memory_app,
            {"type": "task-received", "uuid": task_id},
            {"type": "task-started", "uuid": other},
            {"type": "task-started", "uuid": task_id},
            {"type": "task-retried", "uuid": task_id, "exception": "E('1')"},
            {"type": "task-started", "uuid": task_id},
            {"type": "task-succeeded", "uuid": task_id, "result": "2"},
            {"type": "task-started", "uuid": task_id},  # after the end: not read
        )
        return Change(task_id, SENT, None, "publish")

    outcome = follow(memory_app, task_id, seen.append, timeout=30, after_attach=send)
    assert [change.state for change in seen] == [
        SENT,
        RECEIVED,
        states.STARTED,
        states.RETRY,
        states.STARTED,
        states.SUCCESS,
    ]
    assert outcome.ended and outcome.events == 5
    assert seen[3].details == {"exception": "E('1')"}


def test_when_the_task_already_ended_then_the_stored_end_is_all(memory_app: Celery) -> None:
    task_id = uuid()
    memory_app.backend.store_result(task_id, 3, states.SUCCESS)
    seen: list[Change] = []
    outcome = follow(memory_app, task_id, seen.append, timeout=30)
    assert [(change.state, change.source) for change in seen] == [(states.SUCCESS, "backend")]
    assert outcome.ended and outcome.events == 0


def test_when_events_repeat_the_stored_state_then_it_is_printed_once(memory_app: Celery) -> None:
    task_id = uuid()
    memory_app.backend.store_result(task_id, None, states.STARTED)
    backend_read = memory_app.backend.get_task_meta

    def read_while_events_fly(asked: str) -> Any:
        # The worker's events of the stored stage arrive just after the read.
        meta = backend_read(asked)
        publish_events(
            memory_app,
            {"type": "task-received", "uuid": task_id},
            {"type": "task-started", "uuid": task_id},
            {"type": "task-succeeded", "uuid": task_id, "result": "3"},
        )
        return meta

    memory_app.backend.get_task_meta = read_while_events_fly  # type: ignore[method-assign]
    seen: list[Change] = []
    follow(memory_app, task_id, seen.append, timeout=30)
    assert [(change.state, change.source) for change in seen] == [
        (states.STARTED, "backend"),
        (states.SUCCESS, "event"),
    ]


def test_when_no_events_come_then_the_stored_end_ends_the_follow(memory_app: Celery) -> None:
    task_id = uuid()
    memory_app.backend.store_result(task_id, None, states.STARTED)
    reads = 0
    backend_read = memory_app.backend.get_task_meta

    def read(asked: str) -> Any:
        nonlocal reads
        reads += 1
        if reads == 2:  # the task ends between the first and the second look
            memory_app.backend.store_result(task_id, 3, states.SUCCESS)
        return backend_read(asked)

    memory_app.backend.get_task_meta = read  # type: ignore[method-assign]
    seen: list[Change] = []
    outcome = follow(memory_app, task_id, seen.append, timeout=30, idle_interval=0.05)
    assert [(change.state, change.source) for change in seen] == [
        (states.STARTED, "backend"),
        (states.SUCCESS, "backend"),
    ]
    assert outcome.ended and outcome.events == 0
    # The end was seen on two looks in a row before it was believed.
    assert reads >= 3


def test_when_nothing_happens_then_follow_gives_up_at_the_timeout(memory_app: Celery) -> None:
    seen: list[Change] = []
    outcome = follow(memory_app, uuid(), seen.append, timeout=0.2, idle_interval=0.05)
    assert seen == [] and not outcome.ended and outcome.events == 0
