"""Experiment ``fanout``: a broadcast task that every worker runs once.

kombu's ``Broadcast`` declares a *fanout* exchange (``broadcast_tasks``) and,
in every process that loads these settings, a queue of its own with a unique
name (``bcast.<uuid>``), auto-deleted when its worker goes away. A fanout
exchange ignores routing keys and copies each message to every bound queue:
one ``clear_cache`` message becomes one run per worker. Ordinary tasks keep
their direct routes and are shared out between the workers that consume
their queue, once each.
"""

from kombu.common import Broadcast

from routing_demo.conf.celeryconfig import *  # noqa: F403
from routing_demo.conf.celeryconfig import include
from routing_demo.topology import TASK_QUEUES, TASK_ROUTES

#: Selected with ``-Q broadcast_tasks`` (the alias); the queue's real name is
#: unique per worker process.
broadcast_queue = Broadcast("broadcast_tasks")

include = [*include, "routing_demo.experiments.tasks"]
task_queues = (*TASK_QUEUES, broadcast_queue)
#: Results of a broadcast task are ignored (the task says so): several
#: workers would store a result under the same task id.
task_routes = {
    **TASK_ROUTES,
    "routing_demo.experiments.tasks.clear_cache": {"queue": "broadcast_tasks"},
}
