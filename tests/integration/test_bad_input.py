"""Bad input gets a clear error, loses nothing, and never stops a worker.

Every case ends the same way: the client or the worker's log says what was
wrong, the message is accounted for (a FAILURE result or a dead letter), and
the worker that met it runs the next good task.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery.exceptions import NotRegistered
from kombu import Producer
from kombu.exceptions import ContentDisallowed, DecodeError

from routing_demo.tasks import add, mul
from routing_demo.testing.process import wait_until
from routing_demo.topology import task_exchange, unroutable_queue

from .stack import DeadLetters, Stack

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("stack", ["redis"], indirect=True)]


@pytest.fixture(scope="module")
def dead_letters(stack: Stack) -> DeadLetters:
    return DeadLetters(stack)


def assert_still_serves(stack: Stack, base: str, task: str = add.name) -> None:
    result = stack.client.send_task(task, (20, 22))
    assert result.get(timeout=30) == (42 if task == add.name else 20 * 22)
    assert result.worker == stack.node(base).hostname


def publish_raw(
    stack: Stack,
    body: bytes,
    content_type: str,
    *,
    celery_headers: bool = True,
    content_encoding: str = "binary",
) -> str:
    """Publish a hand-made message to the ``add`` route; return its id.

    The id travels as the AMQP ``correlation_id`` (as Celery sends it) and,
    unless ``celery_headers`` is false, in Celery's ``id`` header too.
    """
    task_id = str(uuid.uuid4())
    headers = {"lang": "py", "task": add.name, "id": task_id, "root_id": task_id}
    with stack.connection() as connection:
        Producer(connection.default_channel).publish(
            body,
            exchange=task_exchange.name,
            routing_key="add",
            content_type=content_type,
            content_encoding=content_encoding,
            headers=headers if celery_headers else {},
            correlation_id=task_id,
            delivery_mode=2,
        )
    return task_id


class Trap:
    """Unpickling this object creates ``path``: proof that something unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_when_wrong_argument_types_then_failure_names_the_argument(stack: Stack) -> None:
    result = stack.client.send_task(add.name, ("a", None))
    with pytest.raises(TypeError, match=r"add\(\) takes numbers only: x='a' is str"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    assert_still_serves(stack, "add")


def test_when_wrong_argument_count_then_failure_says_so(stack: Stack) -> None:
    result = stack.client.send_task(add.name, (1, 2, 3))
    with pytest.raises(TypeError, match="positional arguments but 3 were given"):
        result.get(timeout=30)
    assert_still_serves(stack, "add")


def test_when_task_unknown_then_failure_and_dead_letter(
    stack: Stack, dead_letters: DeadLetters
) -> None:
    result = stack.client.send_task("routing_demo.tasks.nope", (1, 2))
    with pytest.raises(NotRegistered, match=r"routing_demo\.tasks\.nope"):
        result.get(timeout=30)
    death = dead_letters.wait_for(result.id).headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("rejected", "default")
    assert "Received unregistered task of type 'routing_demo.tasks.nope'" in stack.log("default")
    assert_still_serves(stack, "default", mul.name)


def test_when_body_is_pickled_then_never_unpickled_and_dead_lettered(
    stack: Stack, dead_letters: DeadLetters, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled"
    body = pickle.dumps(((Trap(marker), 1), {}, {}))
    task_id = publish_raw(stack, body, "application/x-python-serialize")
    death = dead_letters.wait_for(task_id).headers["x-death"][0]
    assert (death["reason"], death["queue"]) == ("rejected", "add")
    with pytest.raises(ContentDisallowed, match="untrusted content of type pickle"):
        stack.client.AsyncResult(task_id).get(timeout=30)
    assert not marker.exists()
    assert "Refusing to deserialize untrusted content of type pickle" in stack.log("add")
    assert_still_serves(stack, "add")


#: Bodies the worker must refuse: (case, body, content type, content encoding,
#: exception the sender's ``.get()`` raises, what the worker's log says).
REFUSED = [
    (
        "yaml",
        b"- [1, 2]\n- {}\n- {}\n",
        "application/x-yaml",
        "utf-8",
        ContentDisallowed,
        "Refusing to deserialize untrusted content of type yaml",
    ),
    (
        "malformed-json",
        b'[[1, 2], {}, {"unterminated',
        "application/json",
        "utf-8",
        DecodeError,
        "Can't decode message body",
    ),
    (
        "invalid-utf8",
        b"\xff\xfe[[1, 2], {}, {}]",
        "application/json",
        "utf-8",
        DecodeError,
        "Can't decode message body",
    ),
]


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "raised", "logged"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_when_body_refused_then_dead_lettered_and_sender_told(
    stack: Stack,
    dead_letters: DeadLetters,
    body: bytes,
    content_type: str,
    encoding: str,
    raised: type[Exception],
    logged: str,
) -> None:
    task_id = publish_raw(stack, body, content_type, content_encoding=encoding)
    message = dead_letters.wait_for(task_id)
    assert message.headers["x-death"][0]["reason"] == "rejected"
    # py-amqp hands over a utf-8 body as text when it can decode it.
    kept = message.body.encode() if isinstance(message.body, str) else message.body
    assert kept == body, "the dead letter keeps the original body"
    with pytest.raises(raised):
        stack.client.AsyncResult(task_id).get(timeout=30)
    assert logged in stack.log("add")
    assert_still_serves(stack, "add")


def test_when_celery_headers_missing_then_dead_lettered(
    stack: Stack, dead_letters: DeadLetters
) -> None:
    task_id = publish_raw(stack, b"[[1, 2], {}, {}]", "application/json", celery_headers=False)
    assert dead_letters.wait_for(task_id).headers["x-death"][0]["reason"] == "rejected"
    assert "Received and deleted unknown message" in stack.log("add")
    assert_still_serves(stack, "add")


def test_when_message_uses_protocol_1_then_it_still_runs(stack: Stack) -> None:
    """Celery 5 still reads the old protocol (everything in the body, no
    ``task`` header): such a message is a valid task, not bad input."""
    task_id = str(uuid.uuid4())
    body = json.dumps({"task": add.name, "id": task_id, "args": [4, 5], "kwargs": {}}).encode()
    with stack.connection() as connection:
        Producer(connection.default_channel).publish(
            body,
            exchange=task_exchange.name,
            routing_key="add",
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )
    result = stack.client.AsyncResult(task_id)
    assert result.get(timeout=30) == 9
    assert result.worker == stack.node("add").hostname


def test_when_payload_is_10_mb_then_failure_message_stays_short(stack: Stack) -> None:
    result = stack.client.send_task(add.name, ("x" * 10_000_000, 1))
    with pytest.raises(TypeError, match=r"x='x+\.\.\.x+' is str") as raised:
        result.get(timeout=60)
    assert len(str(raised.value)) < 200
    assert_still_serves(stack, "add")


def test_when_broker_down_then_client_fails_fast_with_clear_error(stack: Stack) -> None:
    """Nothing listens on the port: the send raises within seconds, no hang."""
    sender = "from routing_demo.tasks import add; add.delay(1, 2)"
    env = {**os.environ, "CELERY_BROKER_URL": "pyamqp://guest:guest@127.0.0.1:1//"}
    completed = subprocess.run(
        [sys.executable, "-c", sender], env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode != 0
    assert "PublishFailed: publishing routing_demo.tasks.add failed" in completed.stderr
    assert "RabbitMQ could not be reached ([Errno 111] Connection refused)" in completed.stderr


def test_when_routing_key_matches_no_queue_then_message_is_kept_as_unroutable(
    stack: Stack,
) -> None:
    """A typo in an explicit routing key: RabbitMQ cannot route the message,
    and the task exchange's alternate exchange keeps it."""
    result = stack.client.send_task(add.name, (1, 2), exchange=task_exchange.name, routing_key="ad")
    with stack.connection() as connection:
        queue = unroutable_queue(connection.default_channel)
        message = wait_until(
            lambda: queue.get(no_ack=True), timeout=30, message="the message vanished"
        )
    assert message.headers["id"] == result.id
    assert message.delivery_info["routing_key"] == "ad"
