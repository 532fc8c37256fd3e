"""The ``bench`` command: every measurement in one run, a ratio table, JSON and a PNG."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import click

from ..rabbitmq import ManagementAPI
from ..rabbitmq import management_url as broker_management_url
from . import stats, targets
from .chart import write_chart
from .runner import run_bench

__all__ = ["EXIT_TARGET_FAILED", "bench", "main"]

#: Exit code with ``--fail-on-target`` when a target is missed.
EXIT_TARGET_FAILED = 3


@click.command()
@click.option("--quick", is_flag=True, help="Smoke run: every measurement, small batches.")
@click.option("--seed", default=0, show_default=True, help="Seed for task arguments and mixes.")
@click.option(
    "--broker",
    envvar="ROUTING_DEMO_BENCH_BROKER",
    default="pyamqp://guest:guest@127.0.0.1:5672",
    show_default=True,
    help="RabbitMQ to measure on; each measurement gets a throw-away vhost on it. "
    "A cluster: every node's URL, ';'-separated (clients connect to the first).",
)
@click.option(
    "--redis-url",
    envvar="ROUTING_DEMO_BENCH_REDIS",
    default="redis://127.0.0.1:6379/0",
    show_default=True,
    help="Redis result backend for the Redis latency and end-to-end figures.",
)
@click.option(
    "--management-url",
    envvar="RABBITMQ_MANAGEMENT_URL",
    default=None,
    help="RabbitMQ management API (one node's, for a cluster) "
    "[default: the --broker's first host and credentials on port 15672].",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path(os.environ.get("ROUTING_DEMO_RUN_DIR", "run")) / "bench",
    help="Where bench.json, bench.txt, bench.png and worker logs go [default: run/bench].",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: Path(os.environ.get("ROUTING_DEMO_RUN_DIR", "run")) / "bench-cache",
    help="Where the py-amqp build with Cython speedups is kept [default: run/bench-cache].",
)
@click.option(
    "--build-speedups/--no-build-speedups",
    default=None,
    help="Build py-amqp with Cython speedups when missing [default: in the full run only].",
)
@click.option(
    "--overlap/--no-overlap",
    default=None,
    help="Two measurements at a time, each one's rounds back to back (faster, noisier), "
    "instead of interleaving every measurement's rounds [default: only with --quick].",
)
@click.option("--tasks", type=click.IntRange(min=10), help="Tasks per round (overrides the mode).")
@click.option("--rounds", type=click.IntRange(min=1), help="Measured rounds (overrides the mode).")
@click.option(
    "--only",
    multiple=True,
    help="Run only measurements whose id contains this text (repeatable).",
)
@click.option(
    "--install-peers/--no-install-peers",
    default=True,
    show_default=True,
    help="Install the bench dependency group (Dramatiq) with pip when it is missing; "
    "without it the Dramatiq rows are skipped.",
)
@click.option(
    "--fail-on-target",
    is_flag=True,
    help=f"Exit {EXIT_TARGET_FAILED} when a target is missed.",
)
def bench(
    quick: bool,
    seed: int,
    broker: str,
    redis_url: str,
    management_url: str | None,
    output_dir: Path,
    cache_dir: Path,
    build_speedups: bool | None,
    overlap: bool | None,
    tasks: int | None,
    rounds: int | None,
    only: tuple[str, ...],
    install_peers: bool,
    fail_on_target: bool,
) -> None:
    """Measure what routing and each setting cost, side by side, in one run.

    The ceiling (raw kombu publish and consume+ack), Celery's send rate and
    worker throughput on the routed queues and on one queue, a sweep of
    prefetch, pool, acks_late and publisher confirms, classic against quorum
    queues, the transports, and end-to-end throughput and latency with rpc://
    and Redis results. Prints a ratio table, quorum/classic and the targets'
    verdicts; writes bench.json and bench.png.

    \b
    Examples:
      # A smoke run (about 40 s): every measurement, small batches
      python -m routing_demo.bench --quick
      # The full run (about 18 min on 2 cores), failing when a target is missed
      python -m routing_demo.bench --fail-on-target
      # On a busy machine: smaller batches, fewer rounds
      python -m routing_demo.bench --tasks 1000 --rounds 3
      # Only the prefetch sweep and the defaults it is compared with
      python -m routing_demo.bench --only prefetch --only default --only raw/pyamqp
      # Quorum against classic queues on the local 3-node cluster
      python -m routing_demo.bench --only celery/classic --only celery/quorum \\
        --broker 'pyamqp://guest:guest@127.0.0.1:5681;pyamqp://guest:guest@127.0.0.1:5682;...' \\
        --management-url http://guest:guest@127.0.0.1:15681
    """
    # A plain `kill` must still stop the workers and delete the vhosts.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # The bench names a vhost per measurement; values left in the shell
    # must not redirect its clients (Celery lets these override any app).
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        os.environ.pop(name, None)
    output_dir.mkdir(parents=True, exist_ok=True)
    document = run_bench(
        broker=broker,
        redis_url=redis_url,
        management=ManagementAPI(management_url or broker_management_url(broker)),
        run_dir=output_dir,
        cache_dir=cache_dir,
        quick=quick,
        seed=seed,
        build_speedups_now=(not quick) if build_speedups is None else build_speedups,
        overlap=quick if overlap is None else overlap,
        only=list(only) or None,
        tasks=tasks,
        rounds=rounds,
        install_peers=install_peers,
        log=_progress_logger(),
    )
    table = stats.format_table(document["rows"])
    queue_types = stats.format_queue_types(document["queue_types"])
    verdicts = targets.format_targets(document["targets"], judged=document["judged"])
    unavailable = "\n".join(
        [
            *(
                f"transport {name}: unavailable: {info['detail']}"
                for name, info in document["transports"].items()
                if not info["available"]
            ),
            *(f"skipped {what}: {why}" for what, why in document["skipped"].items()),
        ]
    )
    text = "\n\n".join(filter(None, [table, queue_types, verdicts, unavailable])) + "\n"
    (output_dir / "bench.txt").write_text(text)
    (output_dir / "bench.json").write_text(stats.to_json(document))
    skipped = write_chart(document, output_dir / "bench.png")
    click.echo(text, nl=False)
    click.echo(skipped or f"wrote {output_dir / 'bench.png'}", err=bool(skipped))
    click.echo(f"wrote {output_dir / 'bench.json'} and {output_dir / 'bench.txt'}")
    if fail_on_target and any(t["passed"] is False for t in document["targets"]):
        raise SystemExit(EXIT_TARGET_FAILED)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _progress_logger() -> Callable[[str], None]:
    """Progress lines on stderr, each with the seconds since the run began."""
    started = time.monotonic()

    def log(line: str) -> None:
        click.echo(f"[{time.monotonic() - started:6.1f}s] {line}", err=True)

    return log


def main(args: list[str] | None = None) -> int:
    """Run the command; return its exit code."""
    try:
        bench.main(args=args, prog_name="python -m routing_demo.bench", standalone_mode=False)
    except SystemExit as exc:
        return int(exc.code or 0)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return 0
