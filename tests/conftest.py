"""Shared test set-up: which broker and Redis the session uses.

Unit tests need nothing. Integration tests (marker ``integration``) need a
RabbitMQ with its management API and a Redis: the ones named by
``ROUTING_DEMO_TEST_BROKER``/``ROUTING_DEMO_TEST_REDIS`` (default: loopback)
when they answer with that, otherwise a private node and server of the
session's own (``routing_demo.testing.session_services``). The choice is made
before the test modules are imported and printed in the header. Only a
missing server binary skips a test locally; with ``CI`` set it fails it, so a
CI run cannot turn green by testing nothing.

The hooks and the fixtures ``session_services``, ``management``,
``vhost_factory`` and ``redis_url`` are the packaged ones
(``routing_demo.testing.pytest_plugin``), imported by name: the local
``celery_setup`` fixtures stay with the directories that use them.
"""

from __future__ import annotations

from routing_demo.testing.pytest_plugin import (  # noqa: F401  (hooks and fixtures used by name)
    management,
    pytest_report_header,
    pytest_sessionstart,
    pytest_unconfigure,
    redis_url,
    session_services,
    vhost_factory,
)

# The session's RabbitMQ cluster, for the cluster tier and the routing suite.
from .cluster.session import rabbitmq_cluster, test_network  # noqa: F401
