"""RabbitMQ's resource alarms, as workers and the ``routes`` commands see them.

A memory alarm (``vm_memory_high_watermark``) or a disk alarm
(``disk_free_limit``) makes RabbitMQ block every connection that publishes,
cluster-wide, until it clears. Consumers are not blocked: draining queues is
what frees memory. Two views of it here:

- ``WatchAlarms``, a worker step: a connection of its own publishes an empty
  probe every ``PROBE_INTERVAL`` seconds (RabbitMQ blocks, and tells, only a
  connection that publishes during the alarm) and logs the alarm when
  RabbitMQ blocks it and again when it is lifted: once per alarm, not per
  task. The worker's consuming connection never publishes, so it is never
  blocked and the worker keeps running tasks.
- ``broker_alarms``: the alarms each broker node reports (management API),
  for ``routes workers status`` and ``routes verify``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from amqp import Message
from celery import Celery, bootsteps

from .rabbitmq import ManagementAPI

__all__ = [
    "PROBE_ROUTING_KEY",
    "WATCH_CONNECTION_NAME",
    "Alarm",
    "AlarmWatch",
    "WatchAlarms",
    "broker_alarms",
]

logger = logging.getLogger(__name__)

#: Routing key of the one empty message a watch publishes to the default
#: exchange: no queue has this name, so RabbitMQ drops it.
PROBE_ROUTING_KEY = "routing_demo.alarm-watch"

#: The name a watch's connection gives itself (AMQP client property
#: ``connection_name``): the management UI tells it from the app's own.
WATCH_CONNECTION_NAME = "routing_demo alarm watch"
#: A watch's connection: named, and without publisher confirms.
WATCH_TRANSPORT_OPTIONS: dict[str, Any] = {
    "confirm_publish": False,
    "client_properties": {"connection_name": WATCH_CONNECTION_NAME},
}

#: Seconds between two probes of a watch: how late an alarm may be logged.
PROBE_INTERVAL = 2.0

#: Seconds between reconnection attempts of a watch whose broker is away.
RECONNECT_INTERVAL = 5.0


@dataclass(frozen=True)
class Alarm:
    """One resource alarm on one broker node."""

    node: str
    #: ``memory`` or ``disk``.
    resource: str

    def __str__(self) -> str:
        return (
            f"{self.resource} alarm on {self.node}: RabbitMQ blocks every publishing "
            "connection until it clears; consumers keep running"
        )

    def as_dict(self) -> dict[str, str]:
        return {"node": self.node, "resource": self.resource}


def broker_alarms(api: ManagementAPI) -> list[Alarm]:
    """The memory and disk alarms in effect now, cluster-wide."""
    return [
        Alarm(alarm["node"], "memory" if alarm["resource"] == "memory" else "disk")
        for alarm in api.alarms()
    ]


class AlarmWatch(threading.Thread):
    """Logs when RabbitMQ blocks and unblocks publishers (see the module)."""

    def __init__(self, app: Celery, name: str = "alarm watch") -> None:
        super().__init__(name=f"routing_demo {name}", daemon=True)
        self.app = app
        self._stopping = threading.Event()
        #: Monotonic time the current alarm began, or ``None``.
        self.blocked_since: float | None = None

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._watch()
            except Exception as exc:  # a lost broker: try again, quietly
                logger.debug("alarm watch: %r; reconnecting", exc)
            self._stopping.wait(RECONNECT_INTERVAL)

    def _watch(self) -> None:
        # No confirms: a confirmed probe would wait for an alarm to clear.
        with self.app.connection_for_write(transport_options=WATCH_TRANSPORT_OPTIONS) as conn:
            conn.ensure_connection(max_retries=1)
            raw = conn.connection
            if not hasattr(raw, "blocked_reason"):
                logger.debug("alarm watch: transport %s reports no alarms", conn.transport_cls)
                self._stopping.wait()
                return
            raw.on_blocked, raw.on_unblocked = self._on_blocked, self._on_unblocked
            channel = conn.default_channel
            next_probe = 0.0
            while not self._stopping.is_set():
                # RabbitMQ 3.x blocks (and tells) a connection only when it
                # publishes during an alarm: probe while not blocked.
                if raw.blocked_reason is None and time.monotonic() >= next_probe:
                    channel.basic_publish(Message(b""), "", PROBE_ROUTING_KEY)
                    next_probe = time.monotonic() + PROBE_INTERVAL
                try:
                    conn.drain_events(timeout=1.0)
                except TimeoutError:
                    conn.heartbeat_check()

    def _on_blocked(self, reason: str) -> None:
        self.blocked_since = time.monotonic()
        logger.warning(
            "RabbitMQ blocks publishers: %s (a resource alarm). This worker keeps "
            "consuming, which is what frees memory; what it publishes (retries, rpc "
            "results, events) waits until the alarm clears",
            reason,
        )

    def _on_unblocked(self) -> None:
        since, self.blocked_since = self.blocked_since, None
        lasted = f" after {time.monotonic() - since:.1f}s" if since is not None else ""
        logger.warning("RabbitMQ unblocked publishers%s: the resource alarm cleared", lasted)


class WatchAlarms(bootsteps.StartStopStep):
    """Worker step running an ``AlarmWatch`` for the worker's lifetime."""

    label = "alarm watch"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.watch: AlarmWatch | None = None

    def start(self, parent: Any) -> None:
        self.watch = AlarmWatch(parent.app)
        self.watch.start()

    def stop(self, parent: Any) -> None:
        if self.watch is not None:
            self.watch.stop()
