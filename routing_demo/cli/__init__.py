"""``celery -A routing_demo routes …``: where a task goes, whether the broker
is wired that way, and which worker eats which queue.

Registered through Celery's ``celery.commands`` entry point, so the commands
run under ``celery`` with its global options (``-A``, ``-b``,
``--result-backend``) already applied to the app.
"""

from __future__ import annotations

from .group import routes

__all__ = ["routes"]
