"""The test setup's Celery app: the project's own configuration, pointed at
the test's broker and backend.

pytest-celery's ``CeleryTestSetup.create_setup_app`` builds a bare app that
knows only ``broker_url`` and ``result_backend``. Routing tests need the
app the project ships, with its queues and ``task_routes``, or they would
test a topology nobody runs; ``RoutingDemoSetup`` builds that one instead.
"""

from __future__ import annotations

import os

from celery import Celery
from pytest_celery import CeleryTestSetup

from ..celery import DEFAULT_CONFIG_MODULE

__all__ = ["RoutingDemoSetup", "config_module"]


def config_module() -> str:
    """The configuration module the workers load, so the setup app loads it too."""
    return os.environ.get("CELERY_CONFIG_MODULE", DEFAULT_CONFIG_MODULE)


class RoutingDemoSetup(CeleryTestSetup):
    """``CeleryTestSetup`` whose app carries routing_demo's configuration.

    Send tasks by name through ``celery_setup.app`` (``app.send_task(add.name,
    …)`` or ``app.signature(add.name, …)``): the task objects in
    ``routing_demo.tasks`` belong to the project's module-level app, whose
    broker is the one in the configuration, not the test's.
    """

    @classmethod
    def create_setup_app(cls, celery_setup_config: dict, celery_setup_app_name: str) -> Celery:
        if celery_setup_config is None:
            raise ValueError("celery_setup_config is None")
        if not celery_setup_app_name:
            raise ValueError("celery_setup_app_name is empty")
        app = Celery(celery_setup_app_name)
        app.config_from_object(config_module())
        app.conf.update(celery_setup_config)
        cls.update_app_config(app)
        return app
