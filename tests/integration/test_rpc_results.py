"""rpc:// results: every state still reaches the caller, and the worker
publishes them without waiting for publisher confirms while every task
publish stays confirmed.

The confirm check reads the broker's own record: the management plugin's
per-channel confirm mode and publish/confirm counters (sampled every few
seconds, hence the polls), and the ``connection_name`` each connection gave
itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from routing_demo.backends import RESULT_CONNECTION_NAME
from routing_demo.events import EVENT_CONNECTION_NAME
from routing_demo.polling import wait_until
from routing_demo.tasks import add

from .stack import Stack, publishing_channels

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("stack", ["rpc"], indirect=True)
def test_when_a_task_runs_then_its_caller_sees_started_then_success(stack: Stack) -> None:
    """``task_track_started`` stays: STARTED travels to the reply queue too."""
    states: list[str] = []
    result = stack.client.send_task(add.name, (2, 3))
    assert result.get(timeout=30, on_message=lambda meta: states.append(meta["status"])) == 5
    assert states == ["STARTED", "SUCCESS"]


def _publishing_channels(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The vhost's channels that published something: (result connections',
    others'), leaving out the workers' task events (``routing_demo.events``:
    transient, and unconfirmed for the same reason)."""
    channels = publishing_channels(stack)
    results = [channel for owner, channel in channels if owner == RESULT_CONNECTION_NAME]
    others = [
        channel
        for owner, channel in channels
        if owner not in (RESULT_CONNECTION_NAME, EVENT_CONNECTION_NAME)
    ]
    return results, others


@pytest.mark.parametrize("stack", ["rpc"], indirect=True)
def test_when_a_worker_publishes_results_then_the_broker_confirms_none_but_every_task(
    stack: Stack,
) -> None:
    sent = [stack.client.send_task(add.name, (i, i)) for i in range(5)]
    assert [result.get(timeout=30) for result in sent] == [2 * i for i in range(5)]

    def sampled() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        results, others = _publishing_channels(stack)
        # STARTED and SUCCESS for each task, once the plugin has sampled them.
        published = sum(channel["message_stats"]["publish"] for channel in results)
        complete = all("confirm" in channel for channel in (*results, *others))
        return (results, others) if published >= 2 * len(sent) and others and complete else None

    results, others = wait_until(
        sampled, timeout=30, message="the broker never reported the worker's result publishes"
    )
    for channel in results:
        assert channel["confirm"] is False, channel["name"]
        assert not channel["message_stats"].get("confirm"), channel["name"]
    # Task publishes (the client's) and the workers' own replies stay confirmed.
    for channel in others:
        assert channel["confirm"] is True, channel["name"]
