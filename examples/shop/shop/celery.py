"""The shop's Celery app. ``celery -A shop …`` finds it here by itself.

Orders and e-mails each have a queue on the shop's own direct exchange, and
a worker of their own: a burst of receipts must never delay an order. The
broker and result backend come from ``CELERY_BROKER_URL`` and
``CELERY_RESULT_BACKEND``, which Celery reads before these settings.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue

__all__ = ["app", "emails_queue", "orders_queue", "shop_exchange"]

#: Every task is published here; a direct exchange delivers a message to the
#: queue bound with its routing key, and to no other.
shop_exchange = Exchange("shop", type="direct", durable=True)
orders_queue = Queue("orders", shop_exchange, routing_key="orders", durable=True)
emails_queue = Queue("emails", shop_exchange, routing_key="emails", durable=True)

app = Celery("shop", include=["shop.tasks"])
app.conf.update(
    broker_url="pyamqp://localhost//",
    result_backend="redis://localhost:6379/0",
    #: Results record the worker and the queue of each task.
    result_extended=True,
    task_queues=[orders_queue, emails_queue],
    #: A task without a route is an order: nothing lands on a queue no worker reads.
    task_default_queue=orders_queue.name,
    task_default_exchange=shop_exchange.name,
    task_default_exchange_type=shop_exchange.type,
    task_default_routing_key=orders_queue.routing_key,
    task_create_missing_queues=False,
    task_routes={
        "shop.tasks.place_order": {"queue": orders_queue.name},
        "shop.tasks.send_receipt": {"queue": emails_queue.name},
    },
    #: One worker per queue, by node name: `celery -A shop worker -Q orders -n orders@%h`.
    routes_worker_selections={"orders": "-Q orders", "mailer": "-Q emails"},
)
