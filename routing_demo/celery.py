"""The Celery app. ``celery -A routing_demo …`` finds it here by itself.

Creating the app connects to nothing: the configuration module is loaded
lazily, and the broker is first contacted when a task is sent or a worker
starts.
"""

from __future__ import annotations

import os

from celery import Celery

from .sent_state import install as record_sent_state

#: Configuration module used unless ``CELERY_CONFIG_MODULE`` names another
#: (an experiment's topology, a test's variant).
DEFAULT_CONFIG_MODULE = "conf.celeryconfig"

app = Celery("routing_demo")
app.config_from_object(os.environ.get("CELERY_CONFIG_MODULE", DEFAULT_CONFIG_MODULE))
#: Publishing records SENT (Redis backend only), so that a task waiting in its
#: queue no longer reads like an unknown or expired id (both are PENDING).
record_sent_state(app)
