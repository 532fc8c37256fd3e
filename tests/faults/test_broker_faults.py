"""The broker goes away: restarted mid-stream, restarted with a backlog and no
worker, down when a worker starts. A ledger counts what ran.

What the project relies on (``conf/celeryconfig.py``): durable queues and
persistent messages survive a restart; publisher confirms
(``confirm_publish``) make a publish return only once RabbitMQ has the
message, else raise; ``task_publish_retry_policy`` keeps retrying a publish
for longer than a restart takes; workers reconnect by themselves.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from routing_demo.tasks import add, sub
from routing_demo.testing.app import RoutingDemoSetup
from routing_demo.testing.checks import queue_counts
from routing_demo.testing.ledger import Ledger
from routing_demo.testing.process import wait_until
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.topology import add_queue, sub_queue
from routing_demo.workers import WorkerNode, worker_nodes

from .conftest import RUN_TIMEOUT, Producer, show, start_workers

pytestmark = pytest.mark.integration


#: Tasks in the broker-restart stream: a few thousand fast ones.
STREAM = 3000

CONNECTED = "Connected to amqp://"


def active_queue_names(app: Celery, hostname: str) -> set[str] | None:
    """The queues a worker says it consumes (``inspect active_queues``)."""
    replies = app.control.inspect(destination=[hostname], timeout=2).active_queues() or {}
    queues = replies.get(hostname)
    return None if queues is None else {queue["name"] for queue in queues}


def test_when_broker_restarts_mid_stream_then_workers_resume_and_no_publish_is_lost(
    broker_node: PrivateRabbitMQNode, celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    app = celery_setup_app
    workers = start_workers(
        [local_worker_factory(node, concurrency=2) for node in worker_nodes()],
    )
    producer = Producer(app, ledger, STREAM, pause_at=STREAM // 2)
    producer.start()
    # Mid-stream: half published, workers busy with it.
    assert producer.paused.wait(RUN_TIMEOUT)
    wait_until(
        lambda: ledger.redis.hlen(ledger.runs_key) >= 100,
        timeout=RUN_TIMEOUT,
        message="workers ran nothing before the restart",
    )

    broker_node.stop()
    producer.resume.set()  # the next publish meets a dead connection
    broker_node.start()
    broker_node.ready()
    producer.join(RUN_TIMEOUT)

    assert not producer.is_alive()
    report = ledger.wait_for(timeout=RUN_TIMEOUT)
    show("broker restart mid-stream", report)
    # Every publish returned or raised; every one that returned ran.
    assert len(ledger.sent_ids) + len(ledger.refused_ids) == STREAM
    assert report.lost == frozenset()
    assert ledger.wrong_results() == []
    for worker in workers:
        assert worker.container.current_logs().count(CONNECTED) >= 2
        # After reconnecting, each worker consumes its own queues and no other.
        own = set(worker.container.consumed_queues())
        assert (
            wait_until(
                lambda worker=worker: active_queue_names(app, worker.hostname()),
                timeout=RUN_TIMEOUT,
                message=f"{worker.hostname()} did not answer inspect active_queues",
            )
            == own
        )


def test_when_broker_restarts_with_a_backlog_and_no_worker_then_persistent_messages_survive(
    broker_node: PrivateRabbitMQNode, celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    app = celery_setup_app
    persistent = [app.send_task(add.name, (index, 1)).id for index in range(50)]
    persistent += [app.send_task(sub.name, (index, 1)).id for index in range(50)]
    ledger.sent(persistent)
    # The control: transient messages (delivery mode 1) in the same durable queue.
    transient = [app.send_task(add.name, (index, 2), delivery_mode=1).id for index in range(10)]
    assert queue_counts(app, add_queue.name).messages == 60
    assert queue_counts(app, sub_queue.name).messages == 50

    broker_node.restart()

    assert queue_counts(app, add_queue.name).messages == 50
    assert queue_counts(app, sub_queue.name).messages == 50
    start_workers(
        [local_worker_factory(WorkerNode(q.name, "-Q", q.name)) for q in (add_queue, sub_queue)]
    )
    report = ledger.wait_for(timeout=RUN_TIMEOUT)
    show("durable queues, persistent messages, broker restart without workers", report)
    assert report.lost == frozenset()
    assert report.duplicated == {}
    assert ledger.wrong_results() == []
    assert not set(transient) & ledger.runs().keys()


def test_when_broker_is_down_at_worker_start_then_worker_waits_and_publishes_wait_or_raise(
    broker_node: PrivateRabbitMQNode, celery_setup_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    app = celery_setup_app
    # A producer connected before the outage.
    ledger.sent([app.send_task(add.name, (1, 1)).id])
    broker_node.stop()

    # A publish on that producer's connection keeps retrying (the project's policy).
    waited: dict[str, object] = {}
    waiting_id = str(uuid.uuid4())

    def publish() -> None:
        try:
            app.send_task(add.name, (2, 2), task_id=waiting_id)
        except OperationalError as exc:
            waited["raised"] = exc
        else:
            waited["returned"] = waiting_id

    publisher = threading.Thread(target=publish, name="publisher", daemon=True)
    publisher.start()
    # A worker started now waits for the broker, and says so.
    worker = local_worker_factory(WorkerNode("add", "-Q", add_queue.name))
    # A client without a connection gets a clear error. Its retry policy is
    # short here: the project's retries a refused connection for about 60 s.
    client = RoutingDemoSetup.create_setup_app(
        {
            "broker_url": broker_node.url,
            "result_backend": app.conf.result_backend,
            "task_publish_retry_policy": {"max_retries": 2, "interval_step": 1},
        },
        "client",
    )
    refused_id = str(uuid.uuid4())
    with pytest.raises(OperationalError, match="Connection refused"):
        client.send_task(add.name, (3, 3), task_id=refused_id)
    ledger.refused([refused_id])
    wait_until(
        lambda: "Cannot connect to amqp://" in worker.container.current_logs(),
        timeout=RUN_TIMEOUT,
        message="the worker did not report the broker it waits for",
    )
    assert worker.container.status == "running"
    assert "Connection refused" in worker.container.current_logs()

    broker_node.start()
    broker_node.ready()
    worker.ready()
    publisher.join(RUN_TIMEOUT)

    assert not publisher.is_alive()
    print(f"\npublish during the outage: {waited}")
    if "returned" in waited:
        ledger.sent([waiting_id])
    else:
        ledger.refused([waiting_id])
    report = ledger.wait_for(timeout=RUN_TIMEOUT)
    show("broker down at worker start-up", report)
    assert report.lost == frozenset()
    assert ledger.wrong_results() == []
    # The refused publish never reached the broker, so it never ran.
    assert refused_id not in ledger.runs()
    client.close()
