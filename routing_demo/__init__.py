"""routing_demo: Celery tasks routed through their own RabbitMQ queues."""

from .celery import app as celery_app

__all__ = ["celery_app"]
