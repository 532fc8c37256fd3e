"""The Celery app. ``celery -A routing_demo …`` finds it here by itself.

Creating the app connects to nothing: the configuration module is loaded
lazily, and the broker is first contacted when a task is sent or a worker
starts.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.backends.rpc import RPCBackend as CeleryRPCBackend
from kombu.exceptions import OperationalError

from .backends import RPCBackend
from .publish import BoundedPublish, PublishFailed
from .quorum import round_up_short_delay
from .sent_state import install as record_sent_state

__all__ = ["DEFAULT_CONFIG_MODULE", "RoutingDemoCelery", "app"]

#: Configuration module used unless ``CELERY_CONFIG_MODULE`` names another
#: (an experiment's topology, a test's variant).
DEFAULT_CONFIG_MODULE = "conf.celeryconfig"


class RoutingDemoCelery(Celery):
    """Celery, with countdowns that quorum queues can take and a publish
    that ends within ``publish_timeout`` (``routing_demo.publish``).

    Every way of sending a task (``delay``, ``apply_async``, ``retry``,
    ``send_task``) ends in ``send_task``: there a positive countdown or ETA
    under one second is rounded up to one second when the task would travel
    through native delayed delivery (quorum queues), which cannot express
    less and would raise ``ValueError`` instead. See ``routing_demo.quorum``.
    """

    def _get_backend(self) -> Any:
        """Celery's backend for ``result_backend``, with ``rpc://`` served by
        ``routing_demo.backends.RPCBackend`` (see there)."""
        backend = super()._get_backend()
        if type(backend) is CeleryRPCBackend:
            return RPCBackend(app=self, url=backend.url)
        return backend

    def send_task(
        self,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        countdown: float | None = None,
        eta: Any = None,
        **options: Any,
    ) -> Any:
        countdown, eta = round_up_short_delay(self, countdown, eta)
        publish = BoundedPublish(self, name)
        try:
            return super().send_task(
                name, args, kwargs, countdown=countdown, eta=eta, **publish.options(options)
            )
        except PublishFailed:
            raise
        except OperationalError as exc:
            raise publish.failure(exc) from exc


app = RoutingDemoCelery("routing_demo")
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", DEFAULT_CONFIG_MODULE))
#: Publishing records SENT (Redis backend only), so that a task waiting in its
#: queue no longer reads like an unknown or expired id (both are PENDING).
record_sent_state(app)
