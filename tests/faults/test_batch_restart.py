"""A pipelined batch keeps "returned means stored" through a broker restart.

20,000 tasks go out in one ``send_all`` (pipelined publisher confirms) on
the private node; when a quarter of them is published the node is stopped
and started again. The batch reconnects, republishes what was not
confirmed, and returns. Then:

- with no worker running, every returned task id is read back from its
  queue on the broker: stored, none missing (a republished task whose first
  copy was stored sits there twice: at least once, never lost);
- in the ``soak`` run (``pytest -m soak -s tests/faults``) workers consume
  throughout and the ledger counts every task as run, none lost.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from celery import Celery

from routing_demo.batch import Batch, pipelined, send_all
from routing_demo.polling import wait_until
from routing_demo.rabbitmq import queue_counts
from routing_demo.tasks import add, sub
from routing_demo.testing.ledger import Ledger
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.topology import add_queue, sub_queue
from routing_demo.workers import worker_nodes

from .conftest import show, start_workers

pytestmark = pytest.mark.integration

BATCH = 20_000
#: Seconds for the batch to be published (and, in the soak run, to run).
BATCH_TIMEOUT = 300.0


def send_through_restart(app: Celery, node: PrivateRabbitMQNode) -> tuple[list[str], Batch]:
    """Send the batch, restarting ``node`` once a quarter of it is out;
    return the ids ``send_all`` returned and the finished batch."""
    signatures = [
        app.signature(
            add.name if index % 2 == 0 else sub.name, (index, 1), task_id=str(uuid.uuid4())
        )
        for index in range(BATCH)
    ]
    restarted = threading.Event()
    with pipelined(app) as batch:

        def restart_mid_batch() -> None:
            wait_until(
                lambda: batch.window.published >= BATCH // 4,
                timeout=BATCH_TIMEOUT,
                message="the batch did not get a quarter of the way",
            )
            node.stop()
            node.start()
            node.ready()
            restarted.set()

        restarter = threading.Thread(target=restart_mid_batch, daemon=True)
        restarter.start()
        results = send_all(signatures, ignore_result=True)
    restarter.join(BATCH_TIMEOUT)
    assert restarted.is_set()
    assert batch.window.reconnects >= 1, "the restart never reached the batch"
    assert batch.window.confirmed >= BATCH
    ids = [result.id for result in results]
    assert ids == [signature.id for signature in signatures]
    return ids, batch


def stored_ids(app: Celery) -> Counter[str]:
    """Task id -> copies, of every message now in the add and sub queues
    (read and acknowledged)."""
    found: Counter[str] = Counter()
    with app.connection_for_read() as connection:
        channel = connection.channel()
        expected = sum(queue_counts(channel, queue.name)[0] for queue in (add_queue, sub_queue))
        channel.basic_qos(0, 2000, False)

        def take(message) -> None:
            found[message.headers["id"]] += 1

        for queue in (add_queue, sub_queue):
            channel.basic_consume(queue.name, callback=take, no_ack=True)
        while sum(found.values()) < expected:
            connection.drain_events(timeout=30)
    return found


def test_when_broker_restarts_in_a_pipelined_batch_then_every_returned_task_is_stored(
    broker_node: PrivateRabbitMQNode, shipped_app: Celery
) -> None:
    ids, batch = send_through_restart(shipped_app, broker_node)
    stored = stored_ids(shipped_app)
    missing = set(ids) - stored.keys()
    copies = {task_id: n for task_id, n in stored.items() if n > 1}
    print(
        f"\nBATCH restart: sent={len(ids)} stored={len(stored)} missing={len(missing)} "
        f"stored twice={len(copies)} reconnects={batch.window.reconnects}"
    )
    assert missing == set()
    assert stored.keys() == set(ids)


@pytest.mark.soak
def test_soak_when_broker_restarts_in_a_pipelined_batch_then_every_returned_task_runs(
    broker_node: PrivateRabbitMQNode, shipped_app: Celery, local_worker_factory, ledger: Ledger
) -> None:
    start_workers([local_worker_factory(node, concurrency=2) for node in worker_nodes()])
    ids, _ = send_through_restart(shipped_app, broker_node)
    ledger.sent(ids)
    report = ledger.wait_for(timeout=BATCH_TIMEOUT)
    show(f"broker restart in a pipelined batch of {BATCH}", report)
    assert report.sent == BATCH
    assert report.lost == frozenset()
    assert ledger.wrong_results() == []
