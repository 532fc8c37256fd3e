"""Which sends a batch may stamp from a template, and what a stamp changes.

No broker: the template is Celery's own message, built by
``app.amqp.create_task_message`` as ``send_task`` would build it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from amqp import Message
from celery import Celery
from celery.signals import before_task_publish
from kombu.utils.json import dumps, loads

from routing_demo.task_template import Published, TaskTemplates
from routing_demo.tasks import add


@pytest.fixture
def app() -> Iterator[Celery]:
    app = Celery("template-test", set_as_current=False)
    app.config_from_object("routing_demo.conf.celeryconfig")
    yield app
    app.close()


def celery_message(app: Celery, args: tuple) -> Published:
    """What Celery would publish for ``add(*args)``."""
    headers, properties, body, _ = app.amqp.create_task_message("first-id", add.name, args, {})
    message = Message(
        dumps(body).encode(),
        content_type="application/json",
        content_encoding="utf-8",
        application_headers=headers,
        delivery_mode=2,
        **properties,
    )
    return Published(message, "routing_demo.tasks", "add")


def test_when_options_only_differ_per_call_then_the_send_has_a_template_key(app: Celery) -> None:
    templates = TaskTemplates(app)
    first = templates.key(add.name, {"task_id": "a", "ignore_result": False, "countdown": None})
    again = templates.key(add.name, {"task_id": "b", "ignore_result": False, "group_id": "g"})
    assert first is not None
    assert first == again


@pytest.mark.parametrize(
    "options",
    [
        {"countdown": 5},
        {"eta": "2030-01-01T00:00:00"},
        {"expires": 60},
        {"link": object()},
        {"headers": {"x": 1}},
        {"something_new": 1},
        {"queue": ["not", "hashable"]},
    ],
)
def test_when_an_option_changes_more_than_the_per_call_fields_then_celery_sends_it(
    app: Celery, options: dict
) -> None:
    assert TaskTemplates(app).key(add.name, options) is None


def test_when_a_router_function_may_route_on_arguments_then_nothing_is_stamped(
    app: Celery,
) -> None:
    app.conf.task_routes = [lambda name, args, kwargs, options, task=None, **kw: None]
    assert TaskTemplates(app).key(add.name, {}) is None


def test_when_before_task_publish_has_a_receiver_then_nothing_is_stamped(app: Celery) -> None:
    def rewrite(**_: object) -> None:
        pass

    before_task_publish.connect(rewrite, weak=False)
    try:
        assert TaskTemplates(app).key(add.name, {}) is None
    finally:
        before_task_publish.disconnect(rewrite)


def test_when_stamped_then_only_the_per_call_fields_differ_from_celerys_message(
    app: Celery,
) -> None:
    templates = TaskTemplates(app)
    key = templates.key(add.name, {})
    templates.learn(key, celery_message(app, (1, 2)))
    stamped = templates.stamp(key, (7, 8), {}, {"task_id": "next-id", "group_id": "g"})
    assert stamped is not None
    celery_headers = celery_message(app, (7, 8)).message.properties["application_headers"]
    headers = stamped.published.message.properties["application_headers"]
    assert headers == {
        **celery_headers,
        "id": "next-id",
        "root_id": "next-id",
        "group": "g",
    }
    assert stamped.published.message.properties["correlation_id"] == "next-id"
    assert loads(stamped.published.message.body)[:2] == [[7, 8], {}]
    assert (stamped.published.exchange, stamped.published.routing_key) == (
        "routing_demo.tasks",
        "add",
    )
