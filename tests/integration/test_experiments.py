"""Each routing experiment, run as its command runs it, asserted on its tallies.

Every test gets a throw-away vhost and real ``celery worker`` processes with
the experiment's settings module; the assertions read the workers' own
totals, the broker's counters and the experiment's findings, not only its
verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from routing_demo.experiments.catalogue import run_experiment
from routing_demo.experiments.lab import Outcome
from routing_demo.rabbitmq import ManagementAPI

pytestmark = pytest.mark.integration


@pytest.fixture
def run(
    vhost_factory: Callable[[str], str], management: ManagementAPI, tmp_path: Path
) -> Callable[[str], Outcome]:
    def run_one(name: str) -> Outcome:
        outcome = run_experiment(
            name,
            broker_url=vhost_factory(f"exp-{name}"),
            backend_url="rpc://",
            management=management,
            run_dir=tmp_path / name,
            timeout=90.0,
        )
        failed = [f"{c.claim}: {c.observed}" for c in outcome.checks if not c.passed]
        assert not failed, failed
        return outcome

    return run_one


def ran(outcome: Outcome) -> dict[str, dict[str, int]]:
    return {base: worker["ran"] for base, worker in outcome.workers.items()}


def test_when_direct_then_each_task_runs_on_its_queues_worker_only(run) -> None:
    outcome = run("direct")
    tally = ran(outcome)
    assert set(tally["add"]) == {"add"} and set(tally["sub"]) == {"sub"}
    assert set(tally["default"]) == {"mul"}
    assert sum(sum(counts.values()) for counts in tally.values()) == outcome.sent
    for queue in ("add", "sub", "default"):
        counters = outcome.queues[queue]
        assert counters.published == counters.delivered == sum(tally[queue].values())


def test_when_topic_then_add_only_queue_sees_no_sub_and_add_runs_on_both(run) -> None:
    outcome = run("topic")
    tally = ran(outcome)
    assert tally["addonly"].get("sub", 0) == 0
    routed = outcome.findings["published per route"]
    assert tally["all"] == {"add": routed["arith.add"], "sub": routed["arith.sub"]}
    assert tally["addonly"] == {"add": routed["arith.add"] + routed["calc.add"]}
    assert outcome.queues["arith_add"].published == routed["arith.add"] + routed["calc.add"]
    assert outcome.queues["unroutable"].ready == routed["calc.sub"]
    matches = outcome.findings["matches (asked of RabbitMQ)"]
    assert "*.add" not in matches["arith.sub"] and matches["calc.sub"] == []


def test_when_broadcast_then_every_worker_runs_it_once(run) -> None:
    outcome = run("fanout")
    tally = ran(outcome)
    assert [counts["clear_cache"] for counts in tally.values()] == [2, 2, 2]
    assert sum(counts.get("mul", 0) for counts in tally.values()) == 6
    queues = outcome.findings["broadcast queue per worker"]
    assert len(set(queues.values())) == 3
    assert all(outcome.queues[name].published == 2 for name in queues.values())


def test_when_priority_then_high_overtakes_all_but_the_prefetched_backlog(run) -> None:
    outcome = run("priority")
    phases = outcome.findings["by prefetch"]
    # prefetch 1: the high tasks finish before the whole backlog
    assert phases[1]["order"] == "GHHHLLLLLL"
    assert phases[4]["lows_before_first_high"] == 3
    # prefetch 16 holds the whole backlog: priority never gets a say
    assert phases[16]["order"] == "GLLLLLLHHH"
    assert outcome.queues["priority"].published == outcome.sent


def test_when_quorum_then_countdown_and_eta_go_through_the_delay_queues(run) -> None:
    outcome = run("quorum")
    assert outcome.findings["queue types"] == {"add": "quorum", "sub": "quorum"}
    assert outcome.findings["ETA tasks held by workers right after sending"] == 0
    assert outcome.queues["celery_delayed_1"].published == 2
    assert outcome.findings["channels in confirm mode"] > 0
    delayed = outcome.findings["published as (task -> exchange, routing key)"]
    assert any("celery_delayed_27" in publish for publish in delayed)
    tally = ran(outcome)
    assert set(tally["add"]) == {"add"} and set(tally["sub"]) == {"sub"}


def test_when_bad_messages_then_dead_letter_and_unroutable_fill(run) -> None:
    outcome = run("deadletter")
    assert outcome.queues["dead_letter"].ready == 3
    assert outcome.queues["unroutable"].ready == 2
    held = outcome.findings["held messages (management API, left in place)"]
    assert sorted(m["left_queue"] for m in held["dead_letter"]) == ["add", "default", "default"]
    assert {m["routing_key"] for m in held["unroutable"]} == {"ad"}


def test_when_queue_moved_live_then_tallies_follow_it(run) -> None:
    outcome = run("rerouting")
    first, both, last = outcome.findings["phases"]
    assert first["ran"] == {"add@alpha": 4, "sub@beta": 4}
    assert both["consumers on add (broker)"] == 2
    assert last["ran"] == {"add@beta": 4, "sub@beta": 4}
    assert last["consumes"]["alpha"] == []
