"""The bench's pure parts: percentiles, ratios, targets, the table and the
JSON document, the plan and the variants. No broker."""

from __future__ import annotations

import json

import pytest

from routing_demo.bench import stats
from routing_demo.bench.runner import (
    FULL,
    QUICK,
    merge_rounds,
    plan,
    queue_placement,
    select,
)
from routing_demo.bench.settings import (
    SETTINGS_ENV,
    TOPOLOGY_ENV,
    Variant,
    client_settings,
    settings_from_environ,
    shipped_variant,
    worker_environ,
)
from routing_demo.topology import QUEUE_TYPE_ENV, build_queues, default_queue


def rate(value: float, unit: str = "tasks/s") -> dict:
    return stats.rate_summary([value * 0.9, value, value * 1.1], unit)


def measurement(mid: str, group: str = "sweep", transport: str = "pyamqp", **metrics) -> dict:
    return {"id": mid, "group": group, "transport": transport, "metrics": metrics}


@pytest.fixture
def measurements() -> list[dict]:
    return [
        measurement(
            "raw/pyamqp",
            "ceiling",
            publish=rate(20000, "msg/s"),
            consume_ack=rate(10000, "msg/s"),
        ),
        measurement("celery/default", send=rate(4000), drain=rate(5000), score=rate(2000)),
        measurement(
            "celery/single-queue", "routing", send=rate(4000), drain=rate(5000), score=rate(2050)
        ),
        measurement("celery/prefetch-64", send=rate(4000), drain=rate(6000), score=rate(2500)),
        measurement(
            "e2e/rpc",
            "e2e",
            e2e_no_results=rate(3000),
            e2e_join_native=rate(1200),
            e2e_naive_get=rate(600),
            latency_rpc=stats.latency_summary([0.001, 0.002, 0.003, 0.004]),
        ),
        measurement(
            "e2e/redis",
            "e2e",
            e2e_join_native=rate(900),
            latency_redis=stats.latency_summary([0.002, 0.004, 0.006, 0.008]),
        ),
    ]


def test_when_values_are_odd_or_even_then_median_is_the_middle():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        stats.median([])


def test_when_percentile_is_asked_then_it_interpolates_like_numpy_linear():
    values = list(range(1, 101))  # 1..100
    assert stats.percentile(values, 50) == pytest.approx(50.5)
    assert stats.percentile(values, 95) == pytest.approx(95.05)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile(values, 0) == 1
    assert stats.percentile(values, 100) == 100
    assert stats.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


def test_when_latency_is_summarised_then_it_is_in_milliseconds():
    summary = stats.latency_summary([0.001, 0.002, 0.003])
    assert summary == {
        "unit": "ms",
        "p50": pytest.approx(2.0),
        "p95": pytest.approx(2.9),
        "p99": pytest.approx(2.98),
        "samples": 3,
    }


def test_when_reference_is_missing_or_zero_then_ratio_is_none():
    assert stats.ratio(5, 10) == 0.5
    assert stats.ratio(None, 10) is None
    assert stats.ratio(5, None) is None
    assert stats.ratio(5, 0) is None


def test_when_rows_are_built_then_each_figure_has_its_ceiling_and_default_ratio(measurements):
    rows = {(r["measurement"], r["metric"]): r for r in stats.build_rows(measurements)}
    send = rows[("celery/default", "send")]
    assert send["over_ceiling"] == pytest.approx(4000 / 20000)  # send over raw publish
    assert send["over_default"] == pytest.approx(1.0)
    drain = rows[("celery/prefetch-64", "drain")]
    assert drain["over_ceiling"] == pytest.approx(6000 / 10000)  # drain over consume+ack
    assert drain["over_default"] == pytest.approx(6000 / 5000)
    redis_join = rows[("e2e/redis", "e2e_join_native")]
    assert redis_join["over_default"] == pytest.approx(900 / 1200)  # over e2e/rpc's
    p95 = rows[("e2e/redis", "latency_redis.p95")]
    assert p95["unit"] == "ms"
    assert p95["over_ceiling"] is None
    assert p95["over_default"] == pytest.approx(
        stats.percentile([2, 4, 6, 8], 95) / stats.percentile([1, 2, 3, 4], 95)
    )
    assert rows[("raw/pyamqp", "publish")]["over_ceiling"] == pytest.approx(1.0)


def test_when_table_is_formatted_then_every_row_is_one_aligned_line(measurements):
    rows = stats.build_rows(measurements)
    table = stats.format_table(rows).splitlines()
    assert table[0].split() == [
        "measurement", "keeps", "metric", "value", "unit", "/ceiling", "/default",
    ]  # fmt: skip
    assert set(table[1]) == {"-"}
    assert len(table) == len(rows) + 4
    assert table[-1].startswith("keeps: C publisher confirms")
    send_line = next(line for line in table if "celery/default" in line and " send " in line)
    assert send_line.split() == ["celery/default", "?", "send", "4000", "tasks/s", "0.20x", "1.00x"]
    latency_line = next(line for line in table if "latency_rpc.p50" in line)
    assert latency_line.split()[3:6] == ["2.50", "ms", "-"]


def test_when_document_is_dumped_then_it_is_json_that_refuses_nan(measurements):
    document = {"measurements": measurements, "rows": stats.build_rows(measurements)}
    assert json.loads(stats.to_json(document)) == json.loads(json.dumps(document))
    with pytest.raises(ValueError):
        stats.to_json({"bad": float("nan")})


def test_when_shipped_config_is_read_then_it_matches_conf_celeryconfig():
    from routing_demo.conf import celeryconfig

    shipped = shipped_variant()
    assert shipped.acks_late is celeryconfig.task_acks_late
    assert shipped.topology == "routed"
    assert shipped.queues == ["add", "sub"]
    assert shipped.confirm_publish is bool(
        celeryconfig.broker_transport_options.get("confirm_publish")
    )


def test_when_plan_is_made_then_each_sweep_changes_one_setting_from_the_shipped_one():
    shipped = shipped_variant()
    specs = plan(shipped, ["pyamqp", "pyamqp-speedups"])
    ids = [spec.id for spec in specs]
    assert len(ids) == len(set(ids))
    assert ids[:2] == ["raw/pyamqp", "raw/pyamqp-speedups"]
    assert {"celery/default", "celery/single-queue", "e2e/rpc", "e2e/redis"} <= set(ids)
    assert "celery/transport-pyamqp-speedups" in ids
    prefetch = sorted(s.variant.prefetch_multiplier for s in specs if "prefetch" in s.id)
    assert sorted({*prefetch, shipped.prefetch_multiplier}) == [1, 4, 16, 64, 256]
    pools = {s.variant.pool for s in specs if s.group == "sweep"}
    assert pools == {"prefork", "threads", "solo"}
    for spec in specs:
        if spec.group == "sweep" and spec.id != "celery/default":
            differing = {
                key
                for key, value in spec.variant.as_dict().items()
                if value != shipped.as_dict()[key]
            }
            assert differing == set(spec.changed)
            assert len(differing) == 1


def test_when_variant_is_single_queue_then_worker_and_client_use_only_default():
    environ = worker_environ(Variant(topology="single", acks_late=False, confirm_publish=True))
    settings = settings_from_environ(environ)
    assert settings["task_queues"] == (default_queue,)
    assert settings["task_routes"] == {}
    assert settings["task_acks_late"] is False
    assert settings["broker_transport_options"]["confirm_publish"] is True
    assert json.loads(environ[SETTINGS_ENV])["task_acks_late"] is False
    assert environ[TOPOLOGY_ENV] == "single"
    assert environ["CELERY_CONFIG_MODULE"] == "routing_demo.bench.workerconf"


def test_when_variant_is_built_then_worker_options_are_explicit():
    assert Variant(pool="solo", prefetch_multiplier=16).worker_options() == [
        "--pool=solo",
        "--prefetch-multiplier=16",
    ]
    assert "--concurrency=3" in Variant(pool="threads", concurrency=3).worker_options()
    with pytest.raises(ValueError):
        Variant(pool="gevent")
    with pytest.raises(ValueError):
        Variant(prefetch_multiplier=0)


def test_when_counts_are_compared_then_quick_is_smaller_than_full():
    for name in ("tasks", "rounds", "raw_messages", "latency_samples"):
        assert getattr(QUICK, name) < getattr(FULL, name)


def test_when_one_round_passes_are_merged_then_figures_keep_pass_order():
    passes = [
        {"send": [1.0], "latency": [0.1, 0.2], "amqp_speedups": False},
        {"send": [2.0], "latency": [0.3], "amqp_speedups": False},
        {"send": [3.0], "latency": [0.4], "amqp_speedups": True},
    ]
    merged = merge_rounds(passes)
    assert merged == {
        "send": [1.0, 2.0, 3.0],
        "latency": [0.1, 0.2, 0.3, 0.4],
        "amqp_speedups": True,
    }
    assert passes[0]["send"] == [1.0]  # the inputs are left alone


def test_when_plan_is_made_then_classic_and_quorum_differ_only_in_queue_type():
    shipped = shipped_variant()
    specs = {spec.id: spec for spec in plan(shipped, ["pyamqp"])}
    pair = [specs["celery/classic"], specs["celery/quorum"]]
    for spec, queue_type in zip(pair, ("classic", "quorum"), strict=True):
        assert spec.kind == "celery"
        assert spec.group == "queue-type", "not in the sweep the default is judged against"
        assert spec.changed == {"queue_type": queue_type}
        assert spec.variant == shipped.with_(queue_type=queue_type)
        assert spec.variant.queues == ["add", "sub"]


def test_when_shipped_config_is_read_then_its_queue_type_is_the_environments(monkeypatch):
    monkeypatch.delenv(QUEUE_TYPE_ENV, raising=False)
    assert shipped_variant().queue_type == "classic"
    with pytest.raises(ValueError):
        Variant(queue_type="stream")


def test_when_variant_is_quorum_then_worker_and_sender_declare_quorum_queues():
    variant = shipped_variant().with_(queue_type="quorum")
    environ = worker_environ(variant)
    assert environ[QUEUE_TYPE_ENV] == "quorum"  # what the worker's topology reads
    for settings in (settings_from_environ(environ), client_settings(variant)):
        assert settings["task_default_queue_type"] == "quorum"
        assert settings["task_queues"] == build_queues("quorum").task_queues
        by_name = {queue.name: queue for queue in settings["task_queues"]}
        assert by_name["add"].queue_arguments["x-queue-type"] == "quorum"
        assert settings["task_routes"]["routing_demo.tasks.add"] == {"queue": "add"}


def test_when_variant_is_classic_then_a_quorum_value_in_the_shell_does_not_leak(monkeypatch):
    monkeypatch.setenv(QUEUE_TYPE_ENV, "quorum")
    environ = worker_environ(Variant())
    assert environ[QUEUE_TYPE_ENV] == "classic"  # overrides the shell's for the worker
    settings = settings_from_environ(environ)
    assert settings["task_default_queue_type"] == "classic"
    assert all(
        "x-queue-type" not in (queue.queue_arguments or {}) for queue in settings["task_queues"]
    )


#: What the management API's /api/queues/{vhost} says, cut down, on a 3-node cluster.
CLUSTER_NODES = ["rd-1@localhost", "rd-2@localhost", "rd-3@localhost"]
CLASSIC_QUEUES = [
    {"name": name, "type": "classic", "node": "rd-1@localhost"} for name in ("add", "sub")
] + [{"name": "dead_letter", "type": "classic", "node": "rd-2@localhost"}]
QUORUM_QUEUES = [
    {
        "name": name,
        "type": "quorum",
        "node": "rd-1@localhost",
        "leader": "rd-1@localhost",
        "members": list(reversed(CLUSTER_NODES)),
    }
    for name in ("add", "sub")
]


def test_when_queues_are_listed_then_placement_names_node_and_copies():
    classic = queue_placement(CLASSIC_QUEUES, ["add", "sub"])
    assert classic["add"] == {
        "type": "classic",
        "node": "rd-1@localhost",
        "members": ["rd-1@localhost"],
    }
    quorum = queue_placement(QUORUM_QUEUES, ["add", "sub", "gone"])
    assert quorum["sub"] == {"type": "quorum", "node": "rd-1@localhost", "members": CLUSTER_NODES}
    assert quorum["gone"] == {"type": None, "node": None, "members": []}


def queue_type_pair(classic_queues: list[dict], quorum_queues: list[dict]) -> list[dict]:
    classic = measurement(
        "celery/classic", "queue-type", send=rate(600), drain=rate(1000), score=rate(375)
    )
    quorum = measurement(
        "celery/quorum", "queue-type", send=rate(300), drain=rate(800), score=rate(218)
    )
    classic["queue_placement"] = queue_placement(classic_queues, ["add", "sub"])
    quorum["queue_placement"] = queue_placement(quorum_queues, ["add", "sub"])
    return [classic, quorum]


def test_when_both_queue_types_ran_then_quorum_over_classic_is_stated(measurements):
    comparison = stats.compare_queue_types(
        [*measurements, *queue_type_pair(CLASSIC_QUEUES, QUORUM_QUEUES)]
    )
    assert comparison["ratios"] == {
        "send": pytest.approx(0.5),
        "drain": pytest.approx(0.8),
        "score": pytest.approx(218 / 375),
    }
    assert comparison["classic"]["copies"] == 1
    assert comparison["quorum"]["copies"] == 3
    lines = stats.format_queue_types(comparison).splitlines()
    assert lines[0] == (
        "quorum/classic (celery/quorum over celery/classic): send 0.50x, drain 0.80x, score 0.58x"
    )
    assert lines[1] == "  classic queues add, sub: one copy each, on rd-1@localhost"
    assert lines[2] == (
        "  quorum queues add, sub: leader on rd-1@localhost, replicated on 3 nodes "
        "(rd-1@localhost, rd-2@localhost, rd-3@localhost)"
    )
    assert (
        json.loads(stats.to_json({"queue_types": comparison}))["queue_types"]["quorum"]["copies"]
        == 3
    )


def test_when_quorum_ran_on_one_node_then_the_output_says_it_has_no_replicas():
    single = [{**queue, "members": ["rabbit@vm"], "leader": "rabbit@vm"} for queue in QUORUM_QUEUES]
    comparison = stats.compare_queue_types(
        queue_type_pair([{**q, "node": "rabbit@vm"} for q in CLASSIC_QUEUES], single)
    )
    assert stats.format_queue_types(comparison).splitlines()[2] == (
        "  quorum queues add, sub: leader on rabbit@vm, "
        "on one node only (no replicas: a single node)"
    )


def test_when_one_of_the_pair_is_missing_then_there_is_no_comparison(measurements):
    assert stats.compare_queue_types(measurements) is None
    assert stats.format_queue_types(None) == ""


def test_when_only_is_given_then_ids_containing_it_are_selected():
    specs = plan(shipped_variant(), ["pyamqp", "pyamqp-speedups"])
    chosen = select(specs, ["celery/classic", "celery/quorum"])
    assert [spec.id for spec in chosen] == ["celery/classic", "celery/quorum"]
    assert all(spec.variant.transport == "pyamqp" for spec in chosen)  # no speedups build
    assert {spec.id for spec in select(specs, ["speedups"])} == {
        "raw/pyamqp-speedups",
        "celery/transport-pyamqp-speedups",
    }
    assert select(specs, None) == specs
