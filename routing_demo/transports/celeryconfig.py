"""The project's settings (``routing_demo.conf.celeryconfig``), with the transport taken from
the broker URL.

Load it with ``CELERY_CONFIG_MODULE=routing_demo.transports.celeryconfig``
to run the same app on librabbitmq by URL alone::

    CELERY_CONFIG_MODULE=routing_demo.transports.celeryconfig \\
    CELERY_BROKER_URL=librabbitmq://guest:guest@localhost:5672// \\
        celery -A routing_demo worker -Q add -n add@%h

``broker_transport`` is derived from ``CELERY_BROKER_URL`` (which Celery
reads itself and which wins over ``broker_url``), else from ``broker_url``:
``librabbitmq://`` gets the kombu 5.7 adapter, ``amqp://`` stays on py-amqp
(see :mod:`routing_demo.transports`). Every other setting is
``routing_demo.conf.celeryconfig``'s, unchanged.
"""

from __future__ import annotations

import os

from routing_demo.conf import celeryconfig as _base
from routing_demo.conf.celeryconfig import *  # noqa: F403  (the settings, unchanged)
from routing_demo.transports import broker_transport_for

#: ``None`` (kombu's choice from the scheme) for schemes other than
#: ``librabbitmq``, ``amqp`` and ``pyamqp``.
broker_transport = broker_transport_for(os.environ.get("CELERY_BROKER_URL") or _base.broker_url)
