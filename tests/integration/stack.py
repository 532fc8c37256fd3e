"""A running test stack: a vhost, its workers, and a client app bound to it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu import Connection
from kombu.message import Message

from routing_demo.alarms import WATCH_CONNECTION_NAME
from routing_demo.polling import wait_until
from routing_demo.rabbitmq import ManagementAPI, queue_counts
from routing_demo.topology import QUEUES, Queues, dead_letter_queue
from routing_demo.workers import WorkerGroup, WorkerNode


@dataclass
class Stack:
    """A vhost, its running workers and a client app to send tasks with."""

    backend: str
    broker_url: str
    backend_url: str
    vhost: str
    client: Celery
    workers: WorkerGroup
    #: The broker's management API (the shared node's, or a cluster node's).
    management: ManagementAPI
    #: The queues as the workers declare them (classic, or quorum on a cluster).
    queues: Queues = QUEUES

    @property
    def env(self) -> dict[str, str]:
        """Environment for another process to use this stack."""
        return {"CELERY_BROKER_URL": self.broker_url, "CELERY_RESULT_BACKEND": self.backend_url}

    def node(self, base: str) -> WorkerNode:
        """The worker whose base name starts with ``base`` (``add``, ``sub``, ``default``)."""
        return next(node for node in self.workers.nodes if node.name.startswith(f"{base}-"))

    def connection(self) -> Connection:
        return self.client.connection_for_write()

    def log(self, base: str) -> str:
        return self.workers.log_path(self.node(base)).read_text()


def publishing_channels(stack: Stack) -> list[tuple[str | None, dict[str, Any]]]:
    """The stack vhost's channels that published something, as the management
    API reports them, each with the ``connection_name`` its connection gave
    itself (``None``: it gave none). The workers' alarm watches are left out:
    their empty probes go to no queue (``routing_demo.alarms``)."""
    named = {
        connection["name"]: (connection.get("client_properties") or {}).get("connection_name")
        for connection in stack.management.connections(stack.vhost)
    }
    channels = [
        (named.get(channel["connection_details"]["name"]), channel)
        for channel in stack.management.channels(stack.vhost)
        if (channel.get("message_stats") or {}).get("publish")
    ]
    return [(name, channel) for name, channel in channels if name != WATCH_CONNECTION_NAME]


class DeadLetters:
    """Reads the ``dead_letter`` queue, keeping every message by task id
    (its ``correlation_id``, which Celery sets to the task id).

    Messages are acknowledged as they are read, so a later look does not see
    them again; what one test reads and does not want stays in ``seen``.
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: dict[str, Message] = {}

    def wait_for(self, task_id: str, timeout: float = 30.0) -> Message:
        with self.stack.connection() as connection:
            queue = dead_letter_queue(connection.default_channel)

            def read() -> bool:
                # Each look drains what is there before pausing.
                while task_id not in self.seen and (message := queue.get(no_ack=True)):
                    self.seen[message.properties.get("correlation_id", "")] = message
                return task_id in self.seen

            wait_until(read, timeout=timeout, message=f"task {task_id} never reached {queue.name}")
        return self.seen[task_id]


def consumer_count(stack: Stack, queue: str) -> int:
    """Consumers on ``queue`` as the broker counts them now (a passive declare)."""
    with stack.connection() as connection:
        return queue_counts(connection, queue)[1]


def wait_consumers(stack: Stack, queue: str, expected: int, timeout: float = 30.0) -> None:
    """Poll until ``queue`` has ``expected`` consumers. Celery's add/cancel
    consumer commands reply *before* the worker acts, so the reply alone
    does not mean the next message meets the new state."""
    wait_until(
        lambda: consumer_count(stack, queue),
        done=lambda count: count == expected,
        timeout=timeout,
        message=f"{queue} does not have {expected} consumers",
    )


@contextmanager
def consumers_paused(stack: Stack, *bases: str) -> Iterator[None]:
    """Each named worker stops consuming its own queue (same name) for the
    block, so messages sent meanwhile stay in their queues; then it resumes."""
    control = stack.client.control
    for base in bases:
        assert control.cancel_consumer(base, destination=[stack.node(base).hostname], reply=True)
    try:
        for base in bases:
            wait_consumers(stack, base, 0)
        yield
    finally:
        for base in bases:
            control.add_consumer(base, destination=[stack.node(base).hostname], reply=True)
        for base in bases:
            wait_consumers(stack, base, 1)
