"""The bench in quick mode against the real broker, workers and Redis.

A smoke test: it checks that every measurement ran and produced a figure,
and the JSON document's shape. It never asserts on speed: the quick mode's
batches are tiny and its workers overlap, so its figures mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from routing_demo.bench.runner import plan, plan_peers
from routing_demo.bench.settings import shipped_variant
from routing_demo.rabbitmq import ManagementAPI

pytestmark = pytest.mark.integration

BROKER_URL = os.environ.get("ROUTING_DEMO_TEST_BROKER", "pyamqp://guest:guest@127.0.0.1:5672")

#: Metrics each kind of measurement must report.
RAW_METRICS = {"publish", "consume_ack"}
CELERY_METRICS = {"send", "drain", "score"}
#: The shipped app on rpc:// also sends each batch as a group and through
#: routing_demo.batch (send_all, pipelined).
BATCH_METRICS = {"send_group", "send_all", "send_pipelined"}
RAW_AMQP_METRICS = {"publish"}
E2E_METRICS = {
    "e2e/rpc": {"e2e_no_results", "e2e_join_native", "e2e_naive_get", "latency_rpc"},
    "e2e/redis": {"e2e_join_native", "e2e_naive_get", "latency_redis"},
}
#: What the quick run must have measured: the plan made from the shipped
#: configuration (which settings are swept depends on what ships).
SWEEP_IDS = {spec.id for spec in plan(shipped_variant(), ["pyamqp"]) if spec.kind == "celery"}
#: The shipped app's own rows, the safe-publish ceilings and the peers.
PEER_IDS = {spec.id for spec in plan_peers(shipped_variant())}


def vhost_names(management: ManagementAPI) -> set[str]:
    response = management.session.get(f"{management.base_url}/vhosts", timeout=5)
    response.raise_for_status()
    return {vhost["name"] for vhost in response.json()}


def run_bench(args: list[str], redis_url: str, output: Path) -> tuple[dict, str]:
    """``python -m routing_demo.bench ARGS`` on the test broker and Redis, as a
    user runs it (no ``CELERY_*`` variables); its JSON document and stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_")}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "routing_demo.bench",
            *args,
            "--broker",
            BROKER_URL,
            "--redis-url",
            redis_url,
            "--output-dir",
            str(output),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((output / "bench.json").read_text()), completed.stderr


@pytest.fixture(scope="module")
def quick_run(
    management: ManagementAPI, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, Path, set[str]]:
    output = tmp_path_factory.mktemp("bench")
    vhosts_before = vhost_names(management)
    document, _ = run_bench(["--quick"], redis_url, output)
    new_vhosts = vhost_names(management) - vhosts_before
    return document, output, new_vhosts


def test_when_quick_bench_runs_then_every_measurement_has_positive_figures(quick_run):
    document, _, _ = quick_run
    assert document["schema"] == 2
    assert document["mode"] == "quick"
    assert document["seed"] == 0
    by_id = {m["id"]: m for m in document["measurements"]}
    # Dramatiq rows are skipped, with the reason, when it cannot be installed.
    measured_or_skipped = set(by_id) | set(document["skipped"])
    assert SWEEP_IDS | set(E2E_METRICS) | PEER_IDS | {"raw/pyamqp"} <= measured_or_skipped
    assert all(len(m["guarantees"]) == 4 for m in by_id.values())

    transports = document["transports"]
    assert transports["pyamqp"]["available"] is True
    for name, info in transports.items():
        assert info["detail"], name
        if info["available"]:
            assert f"raw/{name}" in by_id
            if name != "pyamqp":
                assert f"celery/transport-{name}" in by_id
                assert by_id[f"celery/transport-{name}"]["transport"] == name
        else:
            assert f"raw/{name}" not in by_id

    for mid, measurement in by_id.items():
        metrics = measurement["metrics"]
        if mid.startswith("raw/amqp-"):
            assert set(metrics) == RAW_AMQP_METRICS, mid
        elif mid.startswith("raw/"):
            assert set(metrics) == RAW_METRICS, mid
        elif mid == "shipped/rpc":
            assert set(metrics) == CELERY_METRICS | BATCH_METRICS, mid
        elif mid.startswith(("celery/", "shipped/", "peer/")):
            assert set(metrics) == CELERY_METRICS, mid
        else:
            assert set(metrics) == E2E_METRICS[mid], mid
        for name, metric in metrics.items():
            if metric["unit"] == "ms":
                assert metric["samples"] > 0, (mid, name)
                assert 0 < metric["p50"] <= metric["p95"] <= metric["p99"], (mid, name)
            else:
                assert metric["median"] > 0, (mid, name)
                assert metric["rounds"] and all(r > 0 for r in metric["rounds"]), (mid, name)


def test_when_quick_bench_runs_then_speedups_variant_really_runs_compiled_amqp(quick_run):
    document, _, _ = quick_run
    for measurement in document["measurements"]:
        assert measurement["amqp_speedups"] is (measurement["transport"] == "pyamqp-speedups")


def test_when_quick_bench_runs_then_rows_targets_and_files_are_written(quick_run):
    document, output, _ = quick_run
    measured = {(m["id"], name) for m in document["measurements"] for name in m["metrics"]}
    rows = {(r["measurement"], r["metric"].split(".")[0]) for r in document["rows"]}
    assert rows == measured
    # A smoke run checks that every measurement works; it judges no target.
    assert document["judged"] is False
    assert document["targets"] == []
    assert {"producer", "broker", "worker", "cpu_count"} <= set(document["placement"])
    table = (output / "bench.txt").read_text()
    assert "/ceiling" in table and "celery/default" in table and "C P L R" in table
    assert "targets are judged only by a full run" in table
    assert "PASS" not in table and "FAIL" not in table
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (output / "bench.png").read_bytes().startswith(b"\x89PNG")


def test_when_quick_bench_runs_then_quorum_is_compared_with_classic(quick_run):
    """The queue-type pair ran on queues of its own type, as the broker
    reports them, and the output states quorum over classic."""
    document, output, _ = quick_run
    by_id = {m["id"]: m for m in document["measurements"]}
    for queue_type in ("classic", "quorum"):
        measurement = by_id[f"celery/{queue_type}"]
        assert measurement["variant"]["queue_type"] == queue_type
        placement = measurement["queue_placement"]
        assert set(placement) == {"add", "sub"}
        assert {queue["type"] for queue in placement.values()} == {queue_type}
        assert all(queue["node"] in queue["members"] for queue in placement.values())
    comparison = document["queue_types"]
    assert set(comparison["ratios"]) == {"send", "drain", "score"}
    assert all(value > 0 for value in comparison["ratios"].values())
    assert comparison["classic"]["copies"] == 1
    assert comparison["quorum"]["copies"] == len(document["placement"]["broker_nodes"])
    assert (
        "quorum/classic (celery/quorum over celery/classic): send "
        in (output / "bench.txt").read_text()
    )


def test_when_quick_bench_ends_then_its_vhosts_are_gone(quick_run):
    document, _, new_vhosts = quick_run
    prefix = document["vhost_prefix"]
    assert all(m["vhost"].startswith(prefix) for m in document["measurements"])
    assert not {name for name in new_vhosts if name.startswith(prefix)}


def test_when_rounds_are_interleaved_then_each_measurement_has_one_figure_per_round(
    management: ManagementAPI, redis_url: str, tmp_path: Path
) -> None:
    """The real run's mode, cut down: two measurements, three rounds each,
    every round a pass over both (the order reversed on the middle one)."""
    document, stderr = run_bench(
        [
            "--no-overlap",
            "--no-build-speedups",
            "--tasks",
            "30",
            "--rounds",
            "3",
            "--only",
            "celery/default",
            "--only",
            "celery/single-queue",
        ],
        redis_url,
        tmp_path,
    )
    assert [m["id"] for m in document["measurements"]] == ["celery/default", "celery/single-queue"]
    for measurement in document["measurements"]:
        for name, metric in measurement["metrics"].items():
            assert len(metric["rounds"]) == 3, (measurement["id"], name)
            assert all(r > 0 for r in metric["rounds"]), (measurement["id"], name)
    passes = [
        line.split("] ", 1)[1].split(": ") for line in stderr.splitlines() if "] round " in line
    ]
    assert passes == [
        ["round 1/3", "celery/default"],
        ["round 1/3", "celery/single-queue"],
        ["round 2/3", "celery/single-queue"],
        ["round 2/3", "celery/default"],
        ["round 3/3", "celery/default"],
        ["round 3/3", "celery/single-queue"],
    ]
    assert "interleaved" in document["placement"]["rounds"]
