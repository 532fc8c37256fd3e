"""Celery configuration module for bench workers: the shipped settings, then
the variant named in the environment (``ROUTING_DEMO_BENCH_SETTINGS``,
``ROUTING_DEMO_BENCH_TOPOLOGY``). Selected with ``CELERY_CONFIG_MODULE``.

Importing it also registers the ``bench_progress`` inspect command that the
bench polls to know when a worker has finished its batch.
"""

from routing_demo.bench import control as _control  # noqa: F401  (registers bench_progress)
from routing_demo.bench.settings import settings_from_environ as _settings_from_environ
from routing_demo.conf.celeryconfig import *  # noqa: F403

globals().update(_settings_from_environ())
