"""Faults on pytest-celery's ``celery_setup``: a worker killed mid-task, a
broker restarted mid-stream. No task may be lost.

The project runs with ``task_acks_late`` and ``task_reject_on_worker_lost``:
a message is acknowledged only after its task ran, so RabbitMQ gives back
whatever a dead worker or a dropped connection left unacknowledged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pytest_celery import CeleryBrokerCluster, CeleryTestSetup, CeleryWorkerCluster

from routing_demo.tasks import add, sub
from routing_demo.testing.checks import queue_counts, wait_for_log_count, workers_by_queue
from routing_demo.testing.process import wait_until
from routing_demo.topology import add_queue, sub_queue
from routing_demo.workers import WorkerNode
from tests.slow_tasks import SLEEP_THEN_ADD

pytestmark = pytest.mark.integration

RESULT_TIMEOUT = 60


class TestWorkerKilledMidTask:
    """One ``add`` worker, SIGKILLed (its whole process group) while it runs a task."""

    @pytest.fixture
    def celery_worker_cluster(self, local_worker_factory) -> Iterator[CeleryWorkerCluster]:
        worker = local_worker_factory(WorkerNode("add", "-Q", add_queue.name))
        worker.ready()
        yield CeleryWorkerCluster(worker)

    def test_when_worker_is_killed_mid_task_then_the_task_completes_after_restart(
        self, celery_setup: CeleryTestSetup
    ) -> None:
        worker = celery_setup.worker
        result = celery_setup.app.send_task(SLEEP_THEN_ADD, (1.5, 40, 2), queue=add_queue.name)
        wait_until(
            lambda: result.state == "STARTED", timeout=RESULT_TIMEOUT, message="task never started"
        )
        first_pid = worker.container.pid

        worker.kill()

        assert worker.container.status == "exited"
        assert worker.container.group_processes() == []
        # The unacknowledged message went back to its queue, and waits there.
        wait_until(
            lambda: queue_counts(celery_setup.app, add_queue.name).messages == 1,
            timeout=10,
            message="the killed worker's message did not return to its queue",
        )

        worker.restart()

        assert worker.container.pid != first_pid
        assert result.get(timeout=RESULT_TIMEOUT) == 42
        assert result.worker == worker.hostname()
        received = f"Task {SLEEP_THEN_ADD}[{result.id}] received"
        assert worker.logs().count(received) == 2
        worker.assert_log_exists(f"Task {SLEEP_THEN_ADD}[{result.id}] succeeded", timeout=5)


class TestBrokerRestartedMidStream:
    """The three workers on a private RabbitMQ node that is restarted while
    they work through a backlog."""

    @pytest.fixture
    def celery_broker_cluster(self, private_rabbitmq_broker) -> Iterator[CeleryBrokerCluster]:
        cluster = CeleryBrokerCluster(private_rabbitmq_broker)
        yield cluster
        cluster.teardown()

    def test_when_broker_restarts_mid_stream_then_workers_reconnect_and_every_task_completes(
        self, celery_setup: CeleryTestSetup
    ) -> None:
        app = celery_setup.app
        workers = workers_by_queue(celery_setup)
        connected = "Connected to amqp://"
        for worker in workers.values():
            assert worker.logs().count(connected) == 1

        before = [
            app.send_task(SLEEP_THEN_ADD, (0.3, index, 1), queue=queue.name)
            for index in range(8)
            for queue in (add_queue, sub_queue)
        ]
        # Mid-stream: some results are in, most tasks still wait or run.
        wait_until(
            lambda: sum(result.ready() for result in before) >= 2,
            timeout=RESULT_TIMEOUT,
            message="no task finished before the restart",
        )
        assert sum(result.ready() for result in before) < len(before)

        celery_setup.broker.restart()

        for worker in workers.values():
            worker.assert_log_exists("Connection to broker lost", timeout=RESULT_TIMEOUT)
            wait_for_log_count(worker, connected, 2, timeout=RESULT_TIMEOUT)
        after = [app.send_task(task.name, (7, 5)) for task in (add, sub)]

        assert [result.get(timeout=RESULT_TIMEOUT) for result in before] == [
            index + 1 for index in range(8) for _ in range(2)
        ]
        assert [result.get(timeout=RESULT_TIMEOUT) for result in after] == [12, 2]
        assert after[0].worker == workers[add_queue.name].hostname()
        assert after[1].worker == workers[sub_queue.name].hostname()
        for queue in (add_queue, sub_queue):
            assert queue_counts(app, queue.name) == (0, 1)
