"""A Dramatiq app on Dramatiq's defaults, for ``dramatiq
routing_demo.bench.peers.dramatiq_app -p P -t T`` and for the measuring child.

``ROUTING_DEMO_BENCH_DRAMATIQ_URL`` is the broker (``amqp://`` URLs,
``;``-separated for a cluster), ``ROUTING_DEMO_BENCH_DRAMATIQ_CONFIRM``
(``1``/``0``) Dramatiq's ``confirm_delivery``, ``ROUTING_DEMO_QUEUE_TYPE``
the type of its queue (quorum on a cluster, like the shipped app's). The one
middleware added to Dramatiq's own is the bench's gate
(:mod:`routing_demo.bench.peers.gate`): pause and resume from the bench and
a count of finished tasks, which Dramatiq has no remote control for.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from . import DRAMATIQ_QUEUE
from .gate import GateServer

__all__ = ["CONFIRM_ENV", "QUEUE", "URL_ENV", "add", "broker"]

#: The broker URL(s), pika's ``amqp://`` scheme.
URL_ENV = "ROUTING_DEMO_BENCH_DRAMATIQ_URL"
#: ``1`` turns Dramatiq's ``confirm_delivery`` on.
CONFIRM_ENV = "ROUTING_DEMO_BENCH_DRAMATIQ_CONFIRM"
QUEUE = DRAMATIQ_QUEUE


class QueueTypeBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, its queues declared with ``x-queue-type``."""

    def __init__(self, *, queue_type: str, **options: Any) -> None:
        super().__init__(**options)
        self.queue_type = queue_type

    def _build_queue_arguments(self, queue_name: str) -> dict[str, Any]:
        arguments = super()._build_queue_arguments(queue_name)
        if self.queue_type != "classic":
            arguments["x-queue-type"] = self.queue_type
        return arguments


class BenchGate(Middleware):
    """Holds every task at a gate the bench opens and closes, counts finished ones."""

    def __init__(self, url: str) -> None:
        self.server = GateServer(url)

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        self.server.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.server.stop()

    def before_process_message(self, broker: Any, message: Any) -> None:
        self.server.open.wait()

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        self.server.passed()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        self.server.passed()


_url = os.environ.get(URL_ENV, "amqp://guest:guest@127.0.0.1:5672/%2F")
broker = QueueTypeBroker(
    url=_url,
    confirm_delivery=os.environ.get(CONFIRM_ENV, "0") == "1",
    queue_type=os.environ.get("ROUTING_DEMO_QUEUE_TYPE", "classic").strip().lower() or "classic",
)
broker.add_middleware(BenchGate(_url))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def add(x: int, y: int) -> int:
    """Return ``x + y``, as the shipped ``add`` does."""
    return x + y
