"""The Celery app. ``celery -A routing_demo …`` finds it here by itself.

Creating the app connects to nothing: the configuration module is loaded
lazily, and the broker is first contacted when a task is sent or a worker
starts.
"""

from __future__ import annotations

import contextvars
import os
from typing import TYPE_CHECKING, Any

from celery import Celery
from celery.app import backends
from celery.backends.rpc import RPCBackend as CeleryRPCBackend
from kombu.exceptions import OperationalError

from .backends import RPCBackend
from .batch import active_batch, batch_producer
from .publish import BoundedPublish, BrokerBlocked, PublishFailed, refusing_queue
from .quorum import round_up_short_delay
from .sent_state import install as record_sent_state
from .transports.pyamqp import send_deadline

if TYPE_CHECKING:
    from .topology import Queues

__all__ = ["DEFAULT_CONFIG_MODULE", "RoutingDemoCelery", "app", "client_app"]

#: Configuration module used unless ``CELERY_CONFIG_MODULE`` names another
#: (an experiment's topology, a test's variant).
DEFAULT_CONFIG_MODULE = "routing_demo.conf.celeryconfig"


#: Set while ``send_task`` sends one task on its own: the producer it
#: acquires is Celery's, with a confirm wait per message.
_sending_one: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "routing_demo_sending_one", default=False
)


class RoutingDemoCelery(Celery):
    """Celery, with countdowns that quorum queues can take and a publish
    that ends within ``publish_timeout`` (``routing_demo.publish``).

    Every way of sending a task (``delay``, ``apply_async``, ``retry``,
    ``send_task``) ends in ``send_task``: there a positive countdown or ETA
    under one second is rounded up to one second when the task would travel
    through native delayed delivery (quorum queues), which cannot express
    less and would raise ``ValueError`` instead. See ``routing_demo.quorum``.

    Inside ``routing_demo.batch.pipelined`` (and in a ``group``) the send
    joins the batch: its confirm is collected with the others'.
    """

    def _get_backend(self) -> Any:
        """Celery's backend for ``result_backend``, with ``rpc://`` served by
        ``routing_demo.backends.RPCBackend`` (see there)."""
        backend_cls, url = backends.by_url(
            self.backend_cls or self.conf.result_backend, self.loader
        )
        if backend_cls is CeleryRPCBackend:
            backend_cls = RPCBackend
        return backend_cls(app=self, url=url)

    def producer_or_acquire(self, producer: Any = None) -> Any:
        """Celery's producer for a caller that sends through a producer of its
        own acquiring, which means several tasks (a ``group``, a chord's
        header): here a pipelined batch's producer (``routing_demo.batch``),
        so that the tasks are confirmed together, not one by one."""
        if producer is None and not _sending_one.get() and not self.conf.task_always_eager:
            return batch_producer(self)
        return super().producer_or_acquire(producer)

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
        batch = active_batch(self)
        if batch is not None and options.get("producer") in (None, batch.producer):
            # The batch confirms this message, and republishes it if need be.
            options.update(producer=batch.producer, retry=False, countdown=countdown, eta=eta)
            return batch.send(
                name,
                args,
                kwargs,
                options,
                lambda: super(RoutingDemoCelery, self).send_task(name, args, kwargs, **options),
            )
        publish = BoundedPublish(self, name)
        token = _sending_one.set(True)
        deadline = send_deadline.set(publish.deadline if publish.total else None)
        try:
            return super().send_task(
                name, args, kwargs, countdown=countdown, eta=eta, **publish.options(options)
            )
        except BrokerBlocked as exc:
            raise exc.for_task(name) from exc
        except PublishFailed:
            raise
        except OperationalError as exc:
            refused_by = (
                refusing_queue(self, name, args, kwargs, options) if publish.refused(exc) else None
            )
            raise publish.failure(exc, refused_by) from exc
        finally:
            send_deadline.reset(deadline)
            _sending_one.reset(token)


#: Task events without publisher confirms, naming the queue each task came by
#: (``routing_demo.events``).
app = RoutingDemoCelery(
    "routing_demo", events="routing_demo.events:Events", task_cls="routing_demo.events:Task"
)
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", DEFAULT_CONFIG_MODULE))
#: Workers log when RabbitMQ blocks publishers, once per alarm (``routing_demo.alarms``).
app.steps["worker"].add("routing_demo.alarms:WatchAlarms")
#: Publishing records SENT (Redis backend only), so that a task waiting in its
#: queue no longer reads like an unknown or expired id (both are PENDING).
record_sent_state(app)


def client_app(
    broker_url: str,
    backend_url: str | None = None,
    *,
    queues: Queues | None = None,
    name: str = "routing_demo-client",
    app_cls: type[Celery] = Celery,
    config_module: str = DEFAULT_CONFIG_MODULE,
    **settings: Any,
) -> Celery:
    """An app to send tasks with: ``config_module``'s settings, pointed at
    ``broker_url`` (and ``backend_url`` for results, when given).

    ``queues`` (``routing_demo.topology.build_queues``) replaces the
    configured queues and their type: the sender must declare each queue as
    its workers do, or RabbitMQ refuses the second declaration. ``app_cls``
    ``RoutingDemoCelery`` gives the shipped app's own sending (pipelined
    batches, bounded publish); ``settings`` are set last.

    A new app rather than :data:`app`: that one keeps the connection pool of
    whatever broker it first used, and follows ``CELERY_CONFIG_MODULE``.
    """
    made = app_cls(name, set_as_current=False)
    made.config_from_object(config_module)
    overrides: dict[str, Any] = {"broker_url": broker_url}
    if backend_url is not None:
        overrides["result_backend"] = backend_url
    if queues is not None:
        overrides.update(task_queues=queues.task_queues, task_default_queue_type=queues.queue_type)
    made.conf.update(overrides, **settings)
    return made
