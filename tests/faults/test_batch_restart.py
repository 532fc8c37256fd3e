"""A pipelined batch keeps "returned means stored" through a broker restart.

20,000 tasks go out in one ``send_all`` (pipelined publisher confirms) on
the private node; when a quarter of them is published the node is stopped
and started again. The batch reconnects, republishes what was not
confirmed, and returns; the ledger then counts every task as run, none
lost (a republished task whose first copy was stored runs twice: at least
once, never lost).
"""

from __future__ import annotations

import threading
import uuid

import pytest
from celery import Celery

from routing_demo.batch import pipelined, send_all
from routing_demo.celery import RoutingDemoCelery
from routing_demo.polling import wait_until
from routing_demo.testing.app import config_module
from routing_demo.testing.ledger import Ledger
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.workers import worker_nodes

from .conftest import ADD, SUB, show, start_workers

pytestmark = pytest.mark.integration

BATCH = 20_000
#: Seconds for the batch to be published and for every task to run.
BATCH_TIMEOUT = 300.0


def shipped_app(celery_setup_config: dict) -> Celery:
    """The project's app class with the test broker: ``send_all`` and
    ``group`` are pipelined on it, not on a plain ``Celery``."""
    app = RoutingDemoCelery("batch-restart", set_as_current=False)
    app.config_from_object(config_module())
    app.conf.update(celery_setup_config)
    return app


def test_when_broker_restarts_in_a_pipelined_batch_then_every_returned_task_runs(
    broker_node: PrivateRabbitMQNode,
    celery_setup_config: dict,
    local_worker_factory,
    ledger: Ledger,
) -> None:
    app = shipped_app(celery_setup_config)
    start_workers([local_worker_factory(node, concurrency=2) for node in worker_nodes()])
    ids = [str(uuid.uuid4()) for _ in range(BATCH)]
    signatures = [
        app.signature(ADD if index % 2 == 0 else SUB, (index, 1), task_id=task_id)
        for index, task_id in enumerate(ids)
    ]
    restarted = threading.Event()
    try:
        with pipelined(app) as batch:

            def restart_mid_batch() -> None:
                wait_until(
                    lambda: batch.window.published >= BATCH // 4,
                    timeout=BATCH_TIMEOUT,
                    message="the batch did not get a quarter of the way",
                )
                broker_node.stop()
                broker_node.start()
                broker_node.ready()
                restarted.set()

            restarter = threading.Thread(target=restart_mid_batch, daemon=True)
            restarter.start()
            results = send_all(signatures, ignore_result=True)
            published_before_end = batch.window.published
        # Here every task is confirmed: send_all returned.
        ledger.sent(result.id for result in results)
        restarter.join(BATCH_TIMEOUT)
        assert restarted.is_set()
        assert batch.window.reconnects >= 1, "the restart never reached the batch"
        assert batch.window.confirmed >= BATCH
        assert published_before_end >= BATCH
        report = ledger.wait_for(timeout=BATCH_TIMEOUT)
        show(f"broker restart in a pipelined batch of {BATCH}", report)
        assert [result.id for result in results] == ids
        assert report.sent == BATCH
        assert report.lost == frozenset()
        assert ledger.wrong_results() == []
    finally:
        app.close()
