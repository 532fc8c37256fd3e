"""The ``routes`` command group and its sub-commands."""

from __future__ import annotations

import click

from ..bench import bench
from ..experiments.cli import experiment
from .cluster_cmd import cluster
from .revoke_cmd import revoke
from .tasks_cmd import send, status
from .topology_cmd import definitions, explain, permissions, topology, verify
from .workers_cmd import workers

__all__ = ["routes"]


@click.group()
def routes() -> None:
    """Routing tools: explain, verify and run the queue-per-worker topology.

    \b
    Examples:
      # The routing table, and the worker command per queue
      celery -A routing_demo routes topology
      # Where does add(2, 3) go, and would a `-X add,sub` worker take it?
      celery -A routing_demo routes explain add 2 3 -X add,sub
      # Is the broker wired as declared? (non-zero exit when not)
      celery -A routing_demo routes verify
      # One worker per queue, with beat in the default-queue worker
      celery -A routing_demo routes workers start --beat
      celery -A routing_demo routes send add 2 3
      # Revoke a task by id: where it was, who heard it, its state after
      celery -A routing_demo routes revoke 6c1d… --terminate
      celery -A routing_demo routes workers stop
      # A local 3-node RabbitMQ cluster (quorum queues, failover)
      celery -A routing_demo routes cluster start
      # A routing experiment in a throw-away vhost (topic, fanout, priority, …)
      celery -A routing_demo routes experiment run topic
      # Throughput and latency, side by side, as ratios (writes run/bench/)
      celery -A routing_demo routes bench --quick
    """


for command in (
    topology,
    explain,
    verify,
    definitions,
    permissions,
    workers,
    cluster,
    send,
    status,
    revoke,
    experiment,
    bench,
):
    routes.add_command(command)
