"""``routing_demo.celery.client_app``: the sending app the tests, the bench's
callers and the experiments build, with no broker (nothing is contacted)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from celery import Celery

from routing_demo.celery import RoutingDemoCelery, client_app
from routing_demo.topology import TASK_ROUTES, build_queues

#: Port 1: a broker nobody answers on, so any attempt to connect would fail.
BROKER = "pyamqp://u:p@127.0.0.1:1/vh"


@pytest.fixture
def made() -> Iterator[Callable[..., Celery]]:
    apps: list[Celery] = []

    def make(*args: object, **kwargs: object) -> Celery:
        apps.append(client_app(*args, **kwargs))
        return apps[-1]

    yield make
    for app in apps:
        app.close()


def test_when_only_broker_given_then_project_settings_on_that_broker(made) -> None:
    app = made(BROKER)
    assert type(app) is Celery
    assert app.main == "routing_demo-client"
    assert app.conf.broker_url == BROKER
    assert app.conf.result_backend == "rpc://"  # conf.celeryconfig's
    assert app.conf.task_routes == TASK_ROUTES


def test_when_backend_and_queues_given_then_they_replace_the_configured_ones(made) -> None:
    queues = build_queues("quorum", delivery_limit=3)
    app = made(BROKER, "redis://127.0.0.1:1/0", queues=queues)
    assert app.conf.result_backend == "redis://127.0.0.1:1/0"
    assert app.conf.task_queues == queues.task_queues
    assert app.conf.task_default_queue_type == "quorum"


def test_when_class_name_module_and_settings_given_then_each_is_used(made) -> None:
    app = made(
        BROKER,
        name="other-client",
        app_cls=RoutingDemoCelery,
        config_module="routing_demo.conf.experiments.topic",
        broker_transport_options={},  # over the module's, which asks for confirms
    )
    assert isinstance(app, RoutingDemoCelery)
    assert app.main == "other-client"
    assert app.conf.broker_transport_options == {}
    assert app.conf.task_routes != TASK_ROUTES
