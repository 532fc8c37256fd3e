"""The test setup's Celery app: the project's own configuration, pointed at
the test's broker and backend.

pytest-celery's ``CeleryTestSetup.create_setup_app`` builds a bare app that
knows only ``broker_url`` and ``result_backend``. Routing tests need the
configuration the project ships, with its queues and ``task_routes``, or they
would test a topology nobody runs: ``ProjectSetup.for_app("shop")`` builds
an app with the settings of the app ``celery -A shop`` loads;
``RoutingDemoSetup`` one with routing_demo's configuration module.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from celery import Celery
from celery.app.utils import find_app
from pytest_celery import CeleryTestSetup

from ..celery import DEFAULT_CONFIG_MODULE
from .defaults import WORKER_APP

__all__ = ["ProjectSetup", "RoutingDemoSetup", "config_module"]


def config_module() -> str:
    """The configuration module the workers load, so the setup app loads it too."""
    return os.environ.get("CELERY_CONFIG_MODULE", DEFAULT_CONFIG_MODULE)


class ProjectSetup(CeleryTestSetup):
    """``CeleryTestSetup`` whose app carries the settings of ``project_app``
    (what ``celery -A`` loads: ``"shop"``, ``"shop.celery:app"``).

    Send tasks by name through ``celery_setup.app`` (``app.send_task(name,
    …)``): the project's own task objects belong to its module-level app,
    whose broker is the one in its configuration, not the test's.
    """

    #: What ``celery -A`` loads; ``for_app`` makes a subclass for another.
    project_app: ClassVar[str] = WORKER_APP

    @classmethod
    def for_app(cls, project_app: str) -> type[ProjectSetup]:
        """This class, for the app ``celery -A project_app`` loads."""
        return type(f"{cls.__name__}[{project_app}]", (cls,), {"project_app": project_app})

    @classmethod
    def config_source(cls) -> Any:
        """What the setup app's ``config_from_object`` reads: every setting
        the project's app has that is not Celery's default."""
        return find_app(cls.project_app).conf.table(censored=False)

    @classmethod
    def create_setup_app(cls, celery_setup_config: dict, celery_setup_app_name: str) -> Celery:
        if celery_setup_config is None:
            raise ValueError("celery_setup_config is None")
        if not celery_setup_app_name:
            raise ValueError("celery_setup_app_name is empty")
        app = Celery(celery_setup_app_name)
        app.config_from_object(cls.config_source())
        app.conf.update(celery_setup_config)
        cls.update_app_config(app)
        return app


class RoutingDemoSetup(ProjectSetup):
    """``ProjectSetup`` for routing_demo: its configuration module (the one
    ``CELERY_CONFIG_MODULE`` names now), as its workers load it."""

    @classmethod
    def config_source(cls) -> Any:
        return config_module()
