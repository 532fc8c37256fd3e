"""The bench's verdicts, the guarantees each row keeps, the peers' plan and
the chart's grouping. No broker."""

from __future__ import annotations

import pytest

from routing_demo.bench import stats, targets
from routing_demo.bench.chart import grouped_rates
from routing_demo.bench.measure import send_metric
from routing_demo.bench.raw_amqp import PipelinedConfirms
from routing_demo.bench.runner import dramatiq_shape, plan_peers
from routing_demo.bench.settings import Variant, shipped_variant


def rate(value: float, unit: str = "tasks/s") -> dict:
    return stats.rate_summary([value * 0.9, value, value * 1.1], unit)


def measurement(mid: str, **metrics) -> dict:
    return {"id": mid, "transport": "pyamqp", "metrics": metrics}


@pytest.fixture
def measurements() -> list[dict]:
    return [
        measurement("raw/pyamqp", publish=rate(10000, "msg/s"), consume_ack=rate(8000, "msg/s")),
        measurement("raw/amqp-confirm-each", publish=rate(600, "msg/s")),
        measurement("raw/amqp-pipelined", publish=rate(8000, "msg/s")),
        measurement(
            "shipped/rpc", send=rate(560), drain=rate(1000), score=rate(350), send_group=rate(6000)
        ),
        measurement("shipped/redis", send=rate(560), drain=rate(800), score=rate(330)),
        measurement("peer/celery-rpc", send=rate(1800), drain=rate(1050), score=rate(600)),
        measurement("peer/celery-redis", send=rate(1800), drain=rate(1000), score=rate(580)),
        measurement("peer/dramatiq", send=rate(5000), drain=rate(900), score=rate(700)),
        measurement("peer/dramatiq-confirms", send=rate(500), drain=rate(900), score=rate(320)),
    ]


def test_when_targets_are_evaluated_then_each_compares_its_pair(measurements):
    found = {t["name"]: t for t in targets.evaluate(measurements)}
    assert list(found) == [t.name for t in targets.TARGETS]
    group = found["group_send_at_least_0.5_of_raw_publish"]
    assert group["value"] == pytest.approx(6000 / 10000)
    assert group["passed"] is True
    assert found["group_send_ahead_of_dramatiq_send"]["value"] == pytest.approx(6000 / 5000)
    assert found["group_send_ahead_of_dramatiq_send"]["passed"] is True
    single = found["apply_async_at_least_0.9_of_raw_confirm_each"]
    assert single["value"] == pytest.approx(560 / 600)
    assert single["passed"] is True
    assert found["drain_at_least_0.9_of_plain_celery_rpc"]["value"] == pytest.approx(1000 / 1050)
    redis = found["drain_at_least_0.9_of_plain_celery_redis"]
    assert redis["value"] == pytest.approx(0.8)
    assert redis["passed"] is False
    assert found["drain_ahead_of_dramatiq"]["passed"] is True


def test_when_a_target_must_be_ahead_then_a_tie_fails():
    ahead = next(t for t in targets.TARGETS if t.name == "drain_ahead_of_dramatiq")
    assert ahead.verdict(1.0) is False
    assert ahead.verdict(1.01) is True
    at_least = next(t for t in targets.TARGETS if t.name.startswith("drain_at_least"))
    assert at_least.verdict(0.9) is True


def test_when_nothing_was_measured_then_no_target_passes():
    assert {t["passed"] for t in targets.evaluate([])} == {None}
    assert "n/a" in targets.format_targets(targets.evaluate([]))


def test_when_a_run_is_not_judged_then_the_output_says_only_a_full_run_judges(measurements):
    text = targets.format_targets(targets.evaluate(measurements), judged=False)
    assert "judged only by a full run" in text
    assert "PASS" not in text and "FAIL" not in text


def test_when_targets_are_formatted_then_the_verdict_leads(measurements):
    lines = targets.format_targets(targets.evaluate(measurements)).splitlines()
    assert [line.split()[0] for line in lines] == ["PASS", "PASS", "PASS", "PASS", "FAIL", "PASS"]
    assert "need > 1.00x" in lines[1] and "need >= 0.50x" in lines[0]


def test_when_guarantees_are_flagged_then_letters_follow_c_p_l_r():
    assert stats.flags(dict.fromkeys(stats.GUARANTEES, True)) == "C P L R"
    assert stats.flags({"persistent": True, "results": True}) == "- P - R"
    assert stats.flags(None) == "?"


def test_when_peers_are_planned_then_each_keeps_what_it_promises():
    specs = {spec.id: spec for spec in plan_peers(shipped_variant())}
    assert set(specs) == {
        "raw/amqp-confirm-each", "raw/amqp-pipelined", "shipped/rpc", "shipped/redis",
        "peer/celery-rpc", "peer/celery-redis", "peer/dramatiq", "peer/dramatiq-confirms",
    }  # fmt: skip
    flags = {mid: stats.flags(spec.guarantees()) for mid, spec in specs.items()}
    assert flags["shipped/rpc"] == "C P L R"
    assert flags["peer/celery-rpc"] == "- P - R"
    assert flags["peer/dramatiq"] == "- P L -"
    assert flags["peer/dramatiq-confirms"] == "C P L -"
    assert flags["raw/amqp-pipelined"] == "C P - -"
    assert specs["shipped/rpc"].batch_sends and specs["shipped/rpc"].results
    assert specs["peer/celery-redis"].backend == "redis"
    assert specs["peer/celery-rpc"].queues == ["celery"]
    assert specs["peer/dramatiq"].queues == ["default"]


def test_when_dramatiq_matches_a_pool_then_processes_times_threads_match_it():
    assert dramatiq_shape(Variant(pool="prefork", concurrency=2)) == (2, 1)
    assert dramatiq_shape(Variant(pool="threads", concurrency=4)) == (1, 4)
    assert dramatiq_shape(Variant(pool="solo")) == (1, 1)


def test_when_send_ways_are_named_then_metrics_read_send_something():
    assert [send_metric(w) for w in ("send", "group", "send_all", "pipelined")] == [
        "send", "send_group", "send_all", "send_pipelined",
    ]  # fmt: skip


def test_when_confirms_arrive_singly_or_multiple_then_pending_and_nacks_are_counted():
    confirms = PipelinedConfirms()
    for tag in range(1, 7):
        confirms.sent(tag)
    confirms.settle(2, False)
    confirms.settle(4, True)
    assert list(confirms.pending) == [5, 6]
    confirms.settle(6, True, nack=True)
    assert not confirms.pending
    assert confirms.nacked == 2


def test_when_chart_groups_rows_then_each_configuration_has_send_and_drain(measurements):
    for m in measurements:
        m["guarantees"] = {"confirms": True, "persistent": True}
    groups = {g["label"].split("  ")[0]: g for g in grouped_rates(stats.build_rows(measurements))}
    assert groups["shipped/rpc"]["send"]["value"] == pytest.approx(560)
    assert groups["shipped/rpc"]["drain"]["value"] == pytest.approx(1000)
    assert groups["shipped/rpc"]["shipped"] and not groups["peer/dramatiq"]["shipped"]
    assert groups["peer/dramatiq"]["peer"]
    assert groups["shipped/rpc send_group"]["drain"] is None
    assert groups["raw/pyamqp"]["drain"]["metric"] == "consume_ack"
    assert "[C P - -]" in next(g["label"] for g in grouped_rates(stats.build_rows(measurements)))
