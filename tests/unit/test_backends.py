"""The rpc:// backend's result producers: no confirm wait where the app's
connections confirm, the app's own pool where they do not. No broker needed:
pools and connections are created lazily."""

from __future__ import annotations

from celery import Celery

from routing_demo.backends import RESULT_CONNECTION_NAME, RPCBackend
from routing_demo.conf import celeryconfig


def make_app(**settings: object) -> Celery:
    app = Celery("routing_demo-unit", set_as_current=False)
    app.config_from_object(celeryconfig)
    app.conf.update(broker_url="pyamqp://guest:guest@127.0.0.1:5672/unit", **settings)
    return app


def test_when_the_app_confirms_then_results_use_unconfirmed_named_connections() -> None:
    app = make_app()
    backend = RPCBackend(app=app)
    assert app.conf.broker_transport_options["confirm_publish"] is True
    pool = backend.result_producer_pool
    assert pool is not app.amqp.producer_pool
    options = pool.connections.connection.transport_options
    assert options["confirm_publish"] is False
    assert options["client_properties"] == {"connection_name": RESULT_CONNECTION_NAME}
    # The app's own pool, for task publishes, keeps its confirms.
    assert app.amqp.producer_pool.connections.connection.transport_options["confirm_publish"]
    assert backend.result_producer_pool is pool


def test_when_the_app_does_not_confirm_then_results_use_its_own_pool() -> None:
    app = make_app(broker_transport_options={})
    backend = RPCBackend(app=app)
    assert backend.result_producer_pool is app.amqp.producer_pool
