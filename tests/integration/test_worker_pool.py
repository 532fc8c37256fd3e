"""The pool each worker runs, as the worker itself reports it (``inspect
stats``): prefork, one process per core unless ``-c`` says otherwise, no
per-task timers and no recycling of pool processes."""

from __future__ import annotations

from typing import Any

import pytest

from routing_demo.tasks import add

from .stack import Stack

pytestmark = pytest.mark.integration


def pool_stats(stack: Stack, base: str) -> dict[str, Any]:
    hostname = stack.node(base).hostname
    replies = stack.client.control.inspect([hostname], timeout=10).stats() or {}
    assert hostname in replies, f"{hostname} did not answer inspect stats"
    return replies[hostname]["pool"]


@pytest.mark.parametrize("stack", ["rpc"], indirect=True)
def test_when_tasks_run_then_the_pool_arms_no_time_limit_and_keeps_its_processes(
    stack: Stack,
) -> None:
    before = pool_stats(stack, "add")
    sent = [stack.client.send_task(add.name, (i, 1)) for i in range(20)]
    assert [result.get(timeout=30) for result in sent] == [i + 1 for i in range(20)]
    after = pool_stats(stack, "add")
    # A time limit would arm a timer per task in the worker's main process.
    assert after["timeouts"] == [0, 0]
    # No recycling: the same pool processes serve every task.
    assert after["max-tasks-per-child"] == "N/A"
    assert after["processes"] == before["processes"]
