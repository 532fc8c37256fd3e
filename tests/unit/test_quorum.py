"""The quorum containment with no broker: the short-countdown rounding of
``routing_demo.quorum`` and the worker consumer's bootsteps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from celery import Celery
from celery.worker.consumer.tasks import Tasks as CeleryTasks

from routing_demo.celery import RoutingDemoCelery
from routing_demo.consumer import (
    Consumer,
    DeclareQueues,
    DelayedDelivery,
    PerConsumerPrefetchTasks,
)
from routing_demo.quorum import NATIVE_DELAY_STEP, round_up_short_delay
from routing_demo.topology import build_queues


def make_app(queue_type: str) -> Celery:
    app = RoutingDemoCelery(f"test-{queue_type}", set_as_current=False)
    app.conf.update(
        broker_url="pyamqp://guest:guest@127.0.0.1:1//",  # never contacted
        task_queues=build_queues(queue_type).task_queues,
    )
    return app


@pytest.fixture
def quorum_app() -> Iterator[Celery]:
    app = make_app("quorum")
    yield app
    app.close()


@pytest.fixture
def classic_app() -> Iterator[Celery]:
    app = make_app("classic")
    yield app
    app.close()


@pytest.mark.parametrize("countdown", [0.001, 0.3, 0.999])
def test_when_countdown_is_under_a_second_on_quorum_then_it_becomes_one_second(
    quorum_app: Celery, countdown: float
) -> None:
    assert round_up_short_delay(quorum_app, countdown, None) == (NATIVE_DELAY_STEP, None)


def test_when_eta_is_under_a_second_away_on_quorum_then_it_becomes_a_one_second_countdown(
    quorum_app: Celery,
) -> None:
    eta = quorum_app.now() + timedelta(seconds=0.5)
    assert round_up_short_delay(quorum_app, None, eta) == (NATIVE_DELAY_STEP, None)
    assert round_up_short_delay(quorum_app, None, eta.isoformat()) == (NATIVE_DELAY_STEP, None)


@pytest.mark.parametrize("countdown", [None, 0, -2, 1, 1.5, 3600])
def test_when_countdown_is_none_past_or_a_second_or_more_then_it_is_left_alone(
    quorum_app: Celery, countdown: float | None
) -> None:
    assert round_up_short_delay(quorum_app, countdown, None) == (countdown, None)


def test_when_queues_are_classic_then_a_short_countdown_is_left_alone(classic_app: Celery) -> None:
    # Classic queues: the worker holds the task until its ETA; nothing to round.
    assert round_up_short_delay(classic_app, 0.3, None) == (0.3, None)


def test_when_the_consumer_boots_then_queues_are_declared_before_consuming_and_binding() -> None:
    blueprint = Consumer.Blueprint()
    blueprint.steps = steps = blueprint.claim_steps()
    order = list(blueprint._finalize_steps(steps))
    assert CeleryTasks not in order  # replaced, not doubled
    assert order.index(DeclareQueues) < order.index(PerConsumerPrefetchTasks)
    assert order.index(PerConsumerPrefetchTasks) < order.index(DelayedDelivery)


def test_when_the_task_consumer_sets_qos_then_it_is_never_global() -> None:
    # Celery's own answer would be True on RabbitMQ 3.3-3.13 with classic queues.
    assert PerConsumerPrefetchTasks.qos_global(None, None) is False  # type: ignore[arg-type]
