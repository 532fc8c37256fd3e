"""A Celery app that is not routing_demo, for the ``routes`` tools to read.

Its own direct exchange ``jobs`` feeds ``emails`` and ``reports``; what a
worker rejects from either is dead-lettered to the fanout ``jobs.parked``,
whose ``parked`` queue holds it and is declared outside ``task_queues`` so
that no worker consumes it. ``app`` declares no worker selection (the tools
then ask the live workers); ``planned_app`` declares one per queue. Workers
load it as ``celery -A tests.other_app worker`` (``tests.other_app:planned_app``
for the other), with the repository root on ``PYTHONPATH``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue

__all__ = [
    "PLANNED_SELECTIONS",
    "app",
    "emails_queue",
    "jobs_exchange",
    "make_app",
    "parked_exchange",
    "parked_queue",
    "planned_app",
    "reports_queue",
]

#: Where every task is published. A *direct* exchange: for a route that names
#: only a queue, Celery publishes to the default exchange with the queue's
#: name as the routing key, which reaches the same queue.
jobs_exchange = Exchange("jobs", type="direct", durable=True)
#: Receives what a worker rejects from ``emails`` or ``reports``.
parked_exchange = Exchange("jobs.parked", type="fanout", durable=True)

#: Dead letters go to ``jobs.parked``: that is what makes ``parked`` a holding queue.
_dead_letters = {"x-dead-letter-exchange": parked_exchange.name}
emails_queue = Queue(
    "emails", jobs_exchange, routing_key="emails", durable=True, queue_arguments=_dead_letters
)
reports_queue = Queue(
    "reports", jobs_exchange, routing_key="reports", durable=True, queue_arguments=_dead_letters
)
#: Holds dead letters; consumed by nobody.
parked_queue = Queue("parked", parked_exchange, durable=True)

#: One worker per queue: ``mailer`` takes ``emails``, ``reporter`` all the rest.
PLANNED_SELECTIONS = {"mailer": "-Q emails", "reporter": "-X emails"}


def send_email(to: str) -> str:
    return to


def report(number: int) -> int:
    return number


def make_app(main: str = "tests.other_app", **settings: Any) -> Celery:
    """The app, with ``settings`` on top (``routes_worker_selections=…``).
    ``CELERY_BROKER_URL`` names the broker, as for any Celery app."""
    made = Celery(main, set_as_current=False)
    made.conf.update(
        {
            "broker_url": "pyamqp://localhost//",
            "task_queues": [emails_queue, reports_queue],
            "task_default_queue": emails_queue.name,
            "task_default_exchange": jobs_exchange.name,
            "task_default_exchange_type": jobs_exchange.type,
            "task_default_routing_key": emails_queue.routing_key,
            "task_routes": {"tests.other_app.report": {"queue": reports_queue.name}},
            "task_create_missing_queues": False,
            "routes_holding_queues": [parked_queue],
            **settings,
        }
    )
    made.task(name="tests.other_app.send_email")(send_email)
    made.task(name="tests.other_app.report")(report)
    return made


#: What ``celery -A tests.other_app`` loads: no worker selection declared.
app = make_app()
#: The same app with a worker selection per queue declared.
planned_app = make_app(routes_worker_selections=PLANNED_SELECTIONS)
