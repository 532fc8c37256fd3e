"""The ``routes`` command group and its sub-commands."""

from __future__ import annotations

import click

from ..bench import bench
from ..experiments.cli import experiment
from ._common import get_app
from .cluster_cmd import cluster
from .revoke_cmd import revoke
from .tasks_cmd import send, status
from .topology_cmd import definitions, explain, permissions, topology, verify
from .workers_cmd import workers

__all__ = ["routes"]


#: Commands that measure or demonstrate routing_demo itself: another app
#: that runs ``celery -A its_app routes`` does not see them.
OWN_COMMANDS = frozenset({"experiment", "bench"})


class RoutesGroup(click.Group):
    """The ``routes`` group; ``experiment`` and ``bench`` only for this
    project's app. The group is registered for every Celery app in the
    environment (``celery.commands``), and those two know only ours."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        return names if _is_own_app(ctx) else [n for n in names if n not in OWN_COMMANDS]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in OWN_COMMANDS and not _is_own_app(ctx):
            return None
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] in OWN_COMMANDS and not _is_own_app(ctx):
            ctx.fail(
                f"No such command {args[0]!r} for this app: it measures routing_demo's "
                f"own app (celery -A routing_demo routes {args[0]})."
            )
        return super().resolve_command(ctx, args)


def _is_own_app(ctx: click.Context) -> bool:
    from ..celery import RoutingDemoCelery

    return isinstance(get_app(ctx), RoutingDemoCelery)


@click.group(cls=RoutesGroup)
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
