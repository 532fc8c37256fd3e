"""pytest-celery's ``celery_setup`` on local processes, for this directory's tests.

The fixtures come from ``routing_demo.testing.fixtures``: a throw-away vhost
of the shared RabbitMQ, a database of the shared Redis, and one real
``celery -A routing_demo worker`` per queue. Every worker here also loads
``tests.slow_tasks`` (a task slow enough to be interrupted).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from routing_demo.testing import plugin
from routing_demo.testing.fixtures import *  # noqa: F403  (pytest finds the fixtures by name)

HERE = Path(__file__).parent


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """``--docker``, unless the plugin is registered for the whole run already."""
    if not pluginmanager.has_plugin(plugin.__name__):
        plugin.pytest_addoption(parser)


@pytest.fixture
def local_worker_options() -> dict[str, object]:
    return {"include": ["tests.slow_tasks"], "pythonpath": [HERE.parents[1]]}
