"""add, sub and unrouted tasks reach their own queue's worker, and only it.

Proved three ways: the result's record of the worker that ran each task
(``result_extended``), each worker's own task counters (``inspect stats``),
and the broker's queues (messages counted while they sit in a queue,
consumers and bindings as RabbitMQ reports them).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kombu import Queue

from routing_demo.polling import wait_until
from routing_demo.rabbitmq import queue_counts
from routing_demo.tasks import add, mul, sub
from routing_demo.topology import TASK_QUEUES, dead_letter_queue, task_exchange, unroutable_queue

from .conftest import STACKS, Stacks
from .stack import Stack, consumers_paused

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session", params=STACKS)
def stack(request: pytest.FixtureRequest, stacks: Stacks) -> Stack:
    """The routing proofs run on every stack: the shared node with each result
    backend, and the 3-node cluster with quorum queues."""
    return stacks.get(request)


#: Which worker (by base name) must run each task: add and sub have routes,
#: mul has none and so belongs to the default queue's ``-X add,sub`` worker.
EXPECTED_WORKER = {add.name: "add", sub.name: "sub", mul.name: "default"}
EXPECTED_VALUE = {
    add.name: lambda x, y: x + y,
    sub.name: lambda x, y: x - y,
    mul.name: lambda x, y: x * y,
}


def queue_depths(stack: Stack) -> dict[str, tuple[int, int]]:
    """Queue name -> (messages ready, consumers), from a passive declare: the
    broker's answer at this instant, unlike the management API's sampled stats."""
    with stack.connection() as connection:
        return {queue.name: queue_counts(connection, queue.name) for queue in TASK_QUEUES}


def test_when_tasks_sent_then_each_runs_on_its_queues_worker(stack: Stack) -> None:
    sent = [
        (name, (i, 2 * i + 1), stack.client.send_task(name, (i, 2 * i + 1)))
        for i in range(8)
        for name in (add.name, sub.name, mul.name)
    ]
    for name, args, result in sent:
        assert result.get(timeout=30) == EXPECTED_VALUE[name](*args)
        assert result.worker == stack.node(EXPECTED_WORKER[name]).hostname, name
        assert result.name == name

    # Each worker's own ledger: the task names it has executed since it started.
    totals = {
        base: set(
            stack.client.control.inspect([stack.node(base).hostname], timeout=5).stats()[
                stack.node(base).hostname
            ]["total"]
        )
        for base in ("add", "sub", "default")
    }
    # Other tests share these workers (e.g. flaky's retries): only the three
    # tasks sent here are compared.
    assert {base: names & {add.name, sub.name, mul.name} for base, names in totals.items()} == {
        "add": {add.name},
        "sub": {sub.name},
        "default": {mul.name},
    }


def test_when_workers_run_then_each_consumes_exactly_its_selection(stack: Stack) -> None:
    hostnames = [node.hostname for node in stack.workers.nodes]
    active = stack.client.control.inspect(hostnames, timeout=5).active_queues()
    consumed = {host: sorted(queue["name"] for queue in queues) for host, queues in active.items()}
    assert consumed == {
        stack.node("add").hostname: ["add"],
        stack.node("sub").hostname: ["sub"],
        stack.node("default").hostname: ["default"],
    }
    # The broker agrees: one consumer on each task queue, none left over.
    assert {name: consumers for name, (_, consumers) in queue_depths(stack).items()} == {
        "add": 1,
        "sub": 1,
        "default": 1,
    }


def test_when_consumers_paused_then_each_message_sits_in_its_own_queue(stack: Stack) -> None:
    paused = {base: stack.node(base) for base in ("add", "sub", "default")}
    with consumers_paused(stack, *paused):
        results = [stack.client.send_task(add.name, (1, 1)) for _ in range(3)]
        results += [stack.client.send_task(sub.name, (1, 1)) for _ in range(2)]
        results += [stack.client.send_task(mul.name, (1, 1))]
        assert queue_depths(stack) == {"add": (3, 0), "sub": (2, 0), "default": (1, 0)}
    assert [result.get(timeout=30) for result in results] == [2, 2, 2, 0, 0, 1]
    assert [result.worker for result in results] == [
        *[paused["add"].hostname] * 3,
        *[paused["sub"].hostname] * 2,
        paused["default"].hostname,
    ]


def test_when_workers_declared_topology_then_broker_has_its_bindings(stack: Stack) -> None:
    management = stack.management
    bindings = {
        (binding["source"], binding["destination"], binding["routing_key"])
        for binding in management.bindings(stack.vhost)
        if binding["source"]  # the default exchange's implicit bindings are noise
    }
    expected = {(task_exchange.name, queue.name, queue.routing_key) for queue in TASK_QUEUES}
    if stack.queues.queue_type == "quorum":
        # Native delayed delivery binds each task queue again with ``#.<key>``:
        # a delayed message comes back with its delay's bits before the key.
        expected |= {
            (task_exchange.name, queue.name, f"#.{queue.routing_key}") for queue in TASK_QUEUES
        }
    holding = (dead_letter_queue, unroutable_queue)
    expected |= {(queue.exchange.name, queue.name, "") for queue in holding}
    assert expected <= bindings
    # No binding from our exchanges to anything the topology does not declare.
    ours = {task_exchange.name, *(queue.exchange.name for queue in holding)}
    assert {binding for binding in bindings if binding[0] in ours} == expected
    for queue in stack.queues.task_queues:
        broker_queue = management.queue(stack.vhost, queue.name)
        assert broker_queue["durable"] is True
        assert broker_queue["arguments"] == queue.queue_arguments
        assert broker_queue["type"] == stack.queues.queue_type
    exchange = next(x for x in management.exchanges(stack.vhost) if x["name"] == task_exchange.name)
    assert (exchange["type"], exchange["durable"]) == (task_exchange.type, True)
    assert exchange["arguments"] == {"alternate-exchange": unroutable_queue.exchange.name}


#: Reads a result by id in a fresh interpreter: a process that sent nothing.
READER = (
    "import json, sys; from routing_demo import celery_app; "
    "r = celery_app.AsyncResult(sys.argv[1]); "
    "print(json.dumps({'state': r.state, 'result': r.result, 'worker': r.worker, "
    "'name': r.name, 'queue': r.queue}))"
)


def read_elsewhere(stack: Stack, task_id: str) -> dict[str, object]:
    completed = subprocess.run(
        [sys.executable, "-c", READER, task_id],
        env={**stack.env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(completed.stdout)


@pytest.mark.parametrize("stack", ["redis"], indirect=True)
def test_when_redis_backend_then_another_process_reads_state_by_id(stack: Stack) -> None:
    result = stack.client.send_task(sub.name, (10, 4))
    assert result.get(timeout=30) == 6
    assert read_elsewhere(stack, result.id) == {
        "state": "SUCCESS",
        "result": 6,
        "worker": stack.node("sub").hostname,
        "name": sub.name,
        "queue": "sub",
    }


@pytest.mark.parametrize("stack", ["rpc"], indirect=True)
def test_when_rpc_backend_then_another_process_cannot_read_the_result(stack: Stack) -> None:
    """The documented limit of ``rpc://``: the result travels to the sender's
    reply queue, so any other process only ever sees PENDING."""
    result = stack.client.send_task(sub.name, (10, 4))
    assert result.get(timeout=30) == 6
    assert read_elsewhere(stack, result.id)["state"] == "PENDING"


def test_when_message_published_then_it_is_persistent_in_a_durable_queue(stack: Stack) -> None:
    """Peek at a message while it sits in ``add``: delivery mode 2 (persistent)."""
    with consumers_paused(stack, "add"):
        result = stack.client.send_task(add.name, (2, 3))
        with stack.connection() as connection:
            queue = Queue("add", channel=connection.default_channel)
            message = wait_until(
                lambda: queue.get(no_ack=False),
                timeout=10,
                message="the task never reached the add queue",
                interval=0,
            )
            assert message.headers["id"] == result.id
            assert message.properties["delivery_mode"] == 2
            message.requeue()
    assert result.get(timeout=30) == 5
