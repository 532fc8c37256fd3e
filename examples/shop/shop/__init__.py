"""A shop whose orders and e-mails travel on queues of their own."""

from .celery import app

__all__ = ["app"]
