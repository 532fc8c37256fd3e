"""Routes as Celery's own router resolves them, with no broker."""

from __future__ import annotations

import pytest

from routing_demo import celery_app
from routing_demo.tasks import add, mul, sub
from routing_demo.topology import TASK_QUEUES, default_queue, task_exchange, worker_selections
from routing_demo.workers import worker_nodes


@pytest.mark.parametrize(
    ("task_name", "queue_name"),
    [
        (add.name, "add"),
        (sub.name, "sub"),
        (mul.name, "default"),
        ("some.other.task", "default"),
    ],
)
def test_when_routed_by_celery_then_task_lands_on_its_queue(
    task_name: str, queue_name: str
) -> None:
    route = celery_app.amqp.router.route({}, task_name, (1, 2), {})
    assert route["queue"].name == queue_name
    assert route["queue"].exchange.name == task_exchange.name
    assert route["queue"].routing_key == queue_name


class _Recorder:
    """Stands in for a kombu producer: keeps what would have been published."""

    def publish(self, body: object, **fields: object) -> None:
        self.fields = fields


def published(task_name: str, **options: object) -> tuple[str, str]:
    """(exchange, routing key) of the message Celery would publish."""
    recorder = _Recorder()
    message = celery_app.amqp.create_task_message("id", task_name, (1, 2), {})
    route = celery_app.amqp.router.route(options, task_name, (1, 2), {})
    celery_app.amqp.send_task_message(recorder, task_name, message, retry=False, **route)
    exchange = recorder.fields["exchange"]
    return getattr(exchange, "name", exchange), recorder.fields["routing_key"]


@pytest.mark.parametrize(
    ("task_name", "routing_key"),
    [
        (add.name, "add"),
        (sub.name, "sub"),
        (mul.name, "default"),
    ],
)
def test_when_task_sent_then_published_through_the_task_exchange(
    task_name: str, routing_key: str
) -> None:
    """Not through the default exchange, which would bypass the bindings."""
    assert published(task_name) == (task_exchange.name, routing_key)


def test_when_queue_overridden_then_its_routing_key_is_used() -> None:
    assert published(add.name, queue="sub") == (task_exchange.name, "sub")


def test_when_routing_key_overridden_then_it_is_used_on_the_task_exchange() -> None:
    assert published(add.name, routing_key="ad") == (task_exchange.name, "ad")


def test_when_option_names_a_queue_then_it_beats_the_route() -> None:
    route = celery_app.amqp.router.route({"queue": "sub"}, add.name, (1, 2), {})
    assert route["queue"].name == "sub"


def test_when_route_names_undeclared_queue_then_router_refuses() -> None:
    from celery.exceptions import QueueNotFound

    with pytest.raises(QueueNotFound):
        celery_app.amqp.router.route({"queue": "typo"}, add.name, (), {})


def test_when_every_route_resolves_then_it_names_a_declared_queue() -> None:
    declared = {queue.name for queue in TASK_QUEUES}
    for name, route in celery_app.conf.task_routes.items():
        assert route["queue"] in declared, name


def test_when_queues_declared_then_durable_and_dead_lettered() -> None:
    for queue in TASK_QUEUES:
        assert queue.durable and queue.exchange.durable
        assert queue.queue_arguments == {"x-dead-letter-exchange": "routing_demo.dlx"}
    assert celery_app.conf.task_default_queue == default_queue.name
    assert celery_app.conf.task_default_delivery_mode == "persistent"


@pytest.mark.parametrize("node", worker_nodes(), ids=lambda node: node.name)
def test_when_worker_selects_queues_then_celery_agrees_with_the_topology(node) -> None:
    """Apply the node's -Q/-X the way ``celery worker`` does (select/deselect
    on the app's queue map) and compare with what the project expects."""
    queues = celery_app.amqp.Queues(celery_app.conf.task_queues)
    names = node.queue_names.split(",")
    if node.queue_option == "-Q":
        queues.select(names)
    else:
        for name in names:
            queues.deselect(name)
    assert sorted(queues.consume_from) == sorted(node.consumed_queues())
    assert node.consumed_queues(), f"{node.name} would consume nothing"


def test_when_selections_derived_then_one_worker_per_queue() -> None:
    assert worker_selections() == {
        "add": ("-Q", "add"),
        "sub": ("-Q", "sub"),
        "default": ("-X", "add,sub"),
    }
    consumed = [queue for node in worker_nodes() for queue in node.consumed_queues()]
    assert sorted(consumed) == sorted(queue.name for queue in TASK_QUEUES)
