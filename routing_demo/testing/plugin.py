"""The command-line option of the local pytest-celery fixtures, and the app
they run.

``--docker`` runs the ``celery_setup`` tests on pytest-celery's own RabbitMQ
and Redis containers instead of the local services (a Docker daemon must be
running); ``ROUTING_DEMO_TEST_DOCKER=1`` does the same. Register this module
as a plugin (``-p routing_demo.testing.plugin``) for the option to be known
to every ``pytest`` command line.

``local_worker_app`` (what ``celery -A`` loads in the local workers,
routing_demo's app unless a ``conftest.py`` overrides it) and
``local_project_app`` (that app, loaded) live here too, so that every
fixture of ``routing_demo.testing.fixtures`` finds them wherever it is
imported.
"""

from __future__ import annotations

import pytest

from .fixtures import local_project_app, local_worker_app

__all__ = ["local_project_app", "local_worker_app", "pytest_addoption"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("routing_demo").addoption(
        "--docker",
        action="store_true",
        dest="celery_docker",
        default=False,
        help="run celery_setup tests on pytest-celery's Docker RabbitMQ and Redis "
        "containers (needs a Docker daemon); default: local services and processes",
    )
