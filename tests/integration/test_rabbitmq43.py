"""RabbitMQ 4.3's conditions, proved on the broker we have (3.10).

RabbitMQ 4.3 denies by default transient queues that are not exclusive, and
global QoS (``basic.qos global=true``). While every kind of client runs (a
worker per queue with events on, one of them with beat; a remote control
client; an event receiver; an ``rpc://`` result client), the management API
must show every queue of the vhost durable or exclusive, and no channel with
a global prefetch limit. Once for classic queues, once for quorum queues.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from routing_demo.rabbitmq import ManagementAPI
from routing_demo.tasks import add
from routing_demo.testing.process import wait_until
from routing_demo.workers import WorkerGroup, worker_nodes

from .queue_types import queue_type_client, queue_type_env, running

pytestmark = pytest.mark.integration

#: Workers as deployed: events on (``-E``), mingle and gossip on.
WORKER_OPTIONS = ("--concurrency=1", "--loglevel=INFO", "--events")


class EventRecorder(threading.Thread):
    """A ``celery events``-style receiver in a thread: consumes the vhost's
    events (through its own ``celeryev.*`` queue) until ``stop()``."""

    def __init__(self, app: Celery) -> None:
        super().__init__(name="event-recorder", daemon=True)
        self.app = app
        self.events: list[dict[str, Any]] = []
        self.receiver: Any = None
        self.started_receiving = threading.Event()

    def run(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self.events.append})
            self.started_receiving.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.join(10)


class ControlWaiter(threading.Thread):
    """A control client that broadcasts ``ping`` and keeps collecting the
    replies (on its reply queue) for ``seconds``."""

    def __init__(self, app: Celery, seconds: float) -> None:
        super().__init__(name="control-waiter", daemon=True)
        self.app, self.seconds = app, seconds
        self.replies: dict[str, Any] = {}

    def run(self) -> None:
        for reply in self.app.control.ping(timeout=self.seconds):
            self.replies.update(reply)


def task_consumer_channels(management: ManagementAPI, vhost: str) -> set[str]:
    """Names of the channels consuming a task queue."""
    return {
        consumer["channel_details"]["name"]
        for consumer in management.consumers(vhost)
        if consumer["queue"]["name"] in {"add", "sub", "default"}
    }


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_when_every_kind_of_client_runs_then_no_transient_shared_queue_and_no_global_qos(
    queue_type: str,
    vhost_factory: Callable[[str], str],
    management: ManagementAPI,
    tmp_path: Path,
) -> None:
    broker_url = vhost_factory(f"rmq43-{queue_type}")
    vhost = broker_url.rsplit("/", 1)[1]
    nodes = worker_nodes(suffix=f"-{uuid.uuid4().hex[:6]}")
    beat_node = next(node for node in nodes if node.name.startswith("default-"))
    env = queue_type_env(broker_url, queue_type, tmp_path)
    env["ROUTING_DEMO_BEAT_INTERVAL"] = "1"
    workers = WorkerGroup(
        nodes,
        tmp_path,
        env=env,
        worker_options=WORKER_OPTIONS,
        node_options={beat_node.name: ["--beat"]},
    )
    client = queue_type_client(broker_url, queue_type)
    recorder = EventRecorder(client)
    try:
        with running(workers, client):
            recorder.start()
            assert recorder.started_receiving.wait(10)
            # A remote control client: its reply queue, the workers' pidboxes.
            pongs = client.control.inspect(timeout=2).ping()
            assert set(pongs) == {node.hostname for node in nodes}
            # An rpc:// result client: its reply queue.
            assert client.send_task(add.name, (2, 3)).get(timeout=30) == 5
            # Beat sends too, and the events reach the receiver.
            wait_until(
                lambda: "Sending due task" in workers.log_path(beat_node).read_text(),
                timeout=30,
                message="beat sent nothing",
            )
            wait_until(
                lambda: any(event.get("type") == "task-succeeded" for event in recorder.events),
                timeout=30,
                message="no task event reached the event receiver",
            )

            expected = {
                *(f"{node.hostname}.celery.pidbox" for node in nodes),
                client.backend.oid,
            }

            def all_queues() -> list[dict[str, Any]] | None:
                queues = management.queues(vhost)
                names = {queue["name"] for queue in queues}
                kinds_present = (
                    expected <= names
                    and any(name.startswith("celeryev.") for name in names)
                    and any(name.endswith(".reply.celery.pidbox") for name in names)
                )
                return queues if kinds_present else None

            # A control client's reply queue lives while it waits for replies:
            # look while one waits (``ping`` collects replies for its timeout).
            long_ping = ControlWaiter(client, seconds=6)
            long_ping.start()
            try:
                queues = wait_until(all_queues, timeout=15, message="queues missing from the vhost")
            finally:
                long_ping.join(10)
            assert set(long_ping.replies) == {node.hostname for node in nodes}
            transient_shared = [
                queue["name"] for queue in queues if not (queue["durable"] or queue["exclusive"])
            ]
            assert transient_shared == []

            # Channel figures are sampled: wait until every task consumer's
            # channel reports the prefetch limit it was given.
            def settled_channels() -> list[dict[str, Any]] | None:
                consuming = task_consumer_channels(management, vhost)
                channels = management.channels(vhost)
                limited = {
                    channel["name"]
                    for channel in channels
                    if channel.get("prefetch_count", 0) or channel.get("global_prefetch_count", 0)
                }
                return channels if len(consuming) == len(nodes) and consuming <= limited else None

            channels = wait_until(
                settled_channels, timeout=30, message="task consumers' channels not reported"
            )
            global_prefetch = {
                channel["name"]: channel["global_prefetch_count"]
                for channel in channels
                if channel.get("global_prefetch_count", 0)
            }
            assert global_prefetch == {}
    finally:
        recorder.stop()
        client.close()
