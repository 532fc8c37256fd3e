"""The demo: a worker per queue, a batch of tasks, and a check of where each ran.

Run ``python -m routing_demo.demo``. It starts the ``add``, ``sub`` and
default-queue workers with ``celery multi``, sends a seeded mix of ``add``,
``sub`` and (unrouted) ``mul`` tasks, prints which worker ran each, stops the
workers and exits 1 if any task ran on a worker other than the one the
topology assigns to its queue.

It runs on the configured broker when that answers; when none does, on a
private RabbitMQ node started for the demo's lifetime (and likewise a private
``redis-server`` when results go to a Redis that does not answer), and it
says which it used.
"""

from __future__ import annotations

import os
import random
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import click
from celery.result import AsyncResult

from . import celery_app
from .local_rabbitmq import RABBITMQ_SERVER
from .local_services import (
    PrivateRedis,
    amqp_check,
    choose,
    install_hint,
    private_broker_node,
    redacted,
    redis_check,
    server_installed,
)
from .options import run_dir_option
from .tasks import add, mul, sub
from .testing.defaults import REDIS_SERVER
from .topology import TASK_ROUTES, default_queue
from .workers import WorkerGroup, WorkerNode, worker_nodes

__all__ = ["expected_nodes", "main", "use_reachable_services"]


@dataclass(frozen=True)
class Outcome:
    """One task of the batch: what was sent, what came back, where it ran."""

    result: AsyncResult
    task: str
    args: tuple[int, int]
    expected_node: str

    @property
    def ran_where_expected(self) -> bool:
        return self.result.worker == self.expected_node


def expected_nodes(nodes: list[WorkerNode]) -> dict[str, str]:
    """Task name -> the node that must run it, from the topology's routes and
    each node's queue selection (a route-less task belongs to the default queue)."""
    node_by_queue = {queue: node.hostname for node in nodes for queue in node.consumed_queues()}
    return {
        task.name: node_by_queue[TASK_ROUTES.get(task.name, {}).get("queue", default_queue.name)]
        for task in (add, sub, mul)
    }


def send_batch(count: int, seed: int, expected: dict[str, str]) -> list[Outcome]:
    """Send ``count`` tasks, a seeded mix of add, sub and mul, and wait for all."""
    rng = random.Random(seed)
    outcomes = []
    for _ in range(count):
        task = rng.choice((add, sub, mul))
        args = (rng.randint(0, 99), rng.randint(0, 99))
        outcomes.append(Outcome(task.delay(*args), task.name, args, expected[task.name]))
    return outcomes


def print_report(outcomes: list[Outcome], timeout: float) -> None:
    header = f"{'task':<24} {'args':<9} {'result':>6}  {'key':<8} {'ran on':<22} check"
    click.echo(header)
    click.echo("-" * len(header))
    for outcome in outcomes:
        value = outcome.result.get(timeout=timeout)
        verdict = (
            "ok" if outcome.ran_where_expected else f"WRONG (expected {outcome.expected_node})"
        )
        click.echo(
            f"{outcome.task:<24} {outcome.args!s:<9} {value:>6}  "
            f"{outcome.result.queue:<8} {outcome.result.worker:<22} {verdict}"
        )


def _private_dir(stack: ExitStack, what: str) -> Path:
    """A temporary directory for a private service, removed when ``stack`` closes."""
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"routing_demo-{what}-")))


def _set_env(stack: ExitStack, name: str, value: str) -> None:
    """Set ``name`` (which Celery reads before its configuration) until ``stack`` closes."""
    previous = os.environ.get(name)
    os.environ[name] = value

    def restore() -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    stack.callback(restore)


def use_reachable_services(stack: ExitStack) -> None:
    """Point the app and its workers at a broker that answers: the configured
    one, or a private node of its own (stopped when ``stack`` closes); the
    same for Redis when results go to Redis. Says which, and why."""
    broker_url = celery_app.conf.broker_url
    broker = choose("RabbitMQ", broker_url, [("AMQP", broker_url, lambda: amqp_check(broker_url))])
    if broker.shared:
        click.echo(f"broker: {redacted(broker_url)} ({broker.reason})")
    else:
        if not server_installed(RABBITMQ_SERVER):
            raise click.ClickException(
                f"{broker.reason}, and {install_hint(RABBITMQ_SERVER, 'RabbitMQ server')}"
            )
        node = private_broker_node(_private_dir(stack, "broker"))
        click.echo(f"broker: {broker.reason}; starting a private RabbitMQ node {node.nodename}")
        stack.callback(node.stop)
        node.start()
        node.wait_ready()
        _set_env(stack, "CELERY_BROKER_URL", node.url)
        click.echo(f"broker: private node {node.nodename} at {redacted(node.url)}, for this run")
    backend_url = str(celery_app.conf.result_backend)
    if not backend_url.startswith(("redis://", "rediss://")):
        return
    redis = choose("Redis", backend_url, [("PING", backend_url, lambda: redis_check(backend_url))])
    if redis.shared:
        click.echo(f"results: {redacted(backend_url)} ({redis.reason})")
        return
    if not server_installed(REDIS_SERVER):
        raise click.ClickException(
            f"{redis.reason}, and {install_hint(REDIS_SERVER, 'Redis server')}"
        )
    server = stack.enter_context(PrivateRedis(_private_dir(stack, "redis")))
    _set_env(stack, "CELERY_RESULT_BACKEND", server.url)
    click.echo(f"results: {redis.reason}; private redis-server at {server.url}, for this run")


@click.command()
@click.option("--tasks", "count", default=12, show_default=True, help="How many tasks to send.")
@click.option("--seed", default=7, show_default=True, help="Seed for the task mix.")
@run_dir_option("Where worker pidfiles and logs go.")
@click.option(
    "--timeout", default=60.0, show_default=True, help="Seconds to wait for workers and results."
)
def main(count: int, seed: int, run_dir: Path, timeout: float) -> None:
    """Start a worker per queue, send a batch, show which worker ran each task.

    \b
    Examples:
      # The default batch against the local RabbitMQ
      python -m routing_demo.demo
      # Results through Redis instead of rpc://
      CELERY_RESULT_BACKEND=redis://localhost:6379/0 python -m routing_demo.demo --tasks 30
    """
    with ExitStack() as stack:
        use_reachable_services(stack)
        nodes = worker_nodes()
        workers = WorkerGroup(nodes, run_dir)
        for node in nodes:
            click.echo(f"starting {node.hostname} ({node.queue_option} {node.queue_names})")
        workers.start()
        try:
            workers.wait_ready(celery_app, timeout=timeout)
            outcomes = send_batch(count, seed, expected_nodes(nodes))
            print_report(outcomes, timeout)
        finally:
            workers.stop()
    misrouted = [outcome for outcome in outcomes if not outcome.ran_where_expected]
    click.echo(
        f"{len(outcomes) - len(misrouted)}/{len(outcomes)} tasks ran on their queue's worker"
    )
    if misrouted:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
