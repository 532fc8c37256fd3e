"""The shop's tests run pytest-celery's ``celery_setup`` on local processes:
a throw-away vhost of the session's RabbitMQ, its Redis, and one real
``celery -A shop worker`` per entry of ``routes_worker_selections``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["routing_demo.testing.pytest_plugin"]

HERE = Path(__file__).parent


@pytest.fixture
def local_worker_app() -> str:
    """What ``celery -A`` loads in the workers."""
    return "shop"


@pytest.fixture
def local_worker_options() -> dict[str, object]:
    """The workers import ``shop`` from here."""
    return {"pythonpath": [HERE]}
