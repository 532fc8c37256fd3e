"""The queue-type switch of the topology (``ROUTING_DEMO_QUEUE_TYPE``) and the
quorum delivery limit (``ROUTING_DEMO_QUORUM_DELIVERY_LIMIT``), with no broker."""

from __future__ import annotations

import pytest

from routing_demo.topology import (
    QUEUE_TYPE_ENV,
    QUORUM_DELIVERY_LIMIT,
    QUORUM_DELIVERY_LIMIT_ENV,
    build_queues,
    dead_letter_exchange,
    queue_type_from_env,
)

QUORUM_TASK_ARGUMENTS = {
    "x-dead-letter-exchange": dead_letter_exchange.name,
    "x-queue-type": "quorum",
    "x-delivery-limit": QUORUM_DELIVERY_LIMIT,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


@pytest.fixture(autouse=True)
def _no_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(QUEUE_TYPE_ENV, raising=False)
    monkeypatch.delenv(QUORUM_DELIVERY_LIMIT_ENV, raising=False)


def test_when_classic_then_task_queues_only_dead_letter() -> None:
    queues = build_queues("classic")
    for queue in queues.task_queues:
        assert queue.durable
        assert queue.queue_arguments == {"x-dead-letter-exchange": dead_letter_exchange.name}
    for queue in queues.holding_queues:
        assert queue.durable
        assert not queue.queue_arguments


def test_when_quorum_then_task_queues_get_limit_and_at_least_once_dead_lettering() -> None:
    queues = build_queues("quorum")
    assert queues.queue_type == "quorum"
    assert [queue.name for queue in queues.task_queues] == ["default", "add", "sub"]
    for queue in queues.task_queues:
        assert queue.durable
        assert queue.queue_arguments == QUORUM_TASK_ARGUMENTS
    # Holding queues are quorum too, but dead-letter nowhere and have no limit.
    for queue in queues.holding_queues:
        assert queue.queue_arguments == {"x-queue-type": "quorum"}


@pytest.mark.parametrize(
    ("value", "expected"), [("", "classic"), ("classic", "classic"), (" Quorum ", "quorum")]
)
def test_when_env_names_a_type_then_it_is_chosen(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv(QUEUE_TYPE_ENV, value)
    assert queue_type_from_env() == expected


@pytest.mark.parametrize("value", ["stream", "qourum", "mirrored"])
def test_when_env_names_an_unknown_type_then_value_error_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(QUEUE_TYPE_ENV, value)
    with pytest.raises(ValueError, match=QUEUE_TYPE_ENV):
        queue_type_from_env()


def test_when_build_queues_gets_an_unknown_type_then_value_error() -> None:
    with pytest.raises(ValueError, match="stream"):
        build_queues("stream")


def test_when_delivery_limit_env_is_set_then_quorum_task_queues_use_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(QUORUM_DELIVERY_LIMIT_ENV, "3")
    for queue in build_queues("quorum").task_queues:
        assert queue.queue_arguments["x-delivery-limit"] == 3
    # Classic queues have no delivery limit, whatever the variable says.
    for queue in build_queues("classic").task_queues:
        assert "x-delivery-limit" not in queue.queue_arguments


def test_when_delivery_limit_is_given_then_it_wins_over_the_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(QUORUM_DELIVERY_LIMIT_ENV, "3")
    queues = build_queues("quorum", delivery_limit=5)
    assert {queue.queue_arguments["x-delivery-limit"] for queue in queues.task_queues} == {5}


@pytest.mark.parametrize("value", ["0", "-1", "many", "2.5"])
def test_when_delivery_limit_env_is_not_a_positive_integer_then_value_error_names_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(QUORUM_DELIVERY_LIMIT_ENV, value)
    with pytest.raises(ValueError, match=QUORUM_DELIVERY_LIMIT_ENV):
        build_queues("quorum")
