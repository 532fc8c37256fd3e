"""The ``experiment`` command group: list, run one, run all and write a report.

Each run gets a throw-away vhost on the broker (created and deleted through
the management API; ``--keep`` leaves it for a look in the management UI),
its workers' pidfiles and logs under ``<run-dir>/experiments/<name>``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from ..options import management_option, run_dir_option
from ..rabbitmq import ManagementAPI, management_url, vhost_url
from .catalogue import EXPERIMENTS, run_experiment
from .lab import Outcome
from .report import render_text, to_json, write_report

__all__ = ["experiment", "main"]

#: The broker unless ``--broker`` or ``CELERY_BROKER_URL`` names another; its
#: vhost is replaced by each experiment's own.
DEFAULT_BROKER = "pyamqp://guest:guest@localhost:5672"


@dataclass
class Settings:
    broker: str
    result_backend: str
    management_url: str | None
    run_dir: Path
    seed: int
    timeout: float
    keep: bool

    def management(self) -> ManagementAPI:
        """The management API given, else the broker's host and credentials on
        the management port."""
        return ManagementAPI(self.management_url or management_url(self.broker))


def settings_options(function: Callable) -> Callable:
    options = [
        click.option(
            "--broker",
            envvar="CELERY_BROKER_URL",
            default=DEFAULT_BROKER,
            show_default=True,
            help="RabbitMQ to run on; each experiment replaces the vhost with its own.",
        ),
        click.option(
            "--result-backend",
            envvar="CELERY_RESULT_BACKEND",
            default="rpc://",
            show_default=True,
            help="Result backend, e.g. redis://localhost:6379/0.",
        ),
        management_option,
        run_dir_option("Worker pidfiles and logs go to <run-dir>/experiments/<name>."),
        click.option("--seed", default=7, show_default=True, help="Seed for the task mixes."),
        click.option(
            "--timeout",
            default=60.0,
            show_default=True,
            help="Seconds to wait for workers, tasks and counters.",
        ),
        click.option(
            "--keep", is_flag=True, help="Keep each experiment's vhost (and its queues) afterwards."
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _settings(**options: object) -> Settings:
    return Settings(
        broker=str(options["broker"]),
        result_backend=str(options["result_backend"]),
        management_url=options["management_url"],  # type: ignore[arg-type]
        run_dir=Path(options["run_dir"]),  # type: ignore[arg-type]
        seed=int(options["seed"]),  # type: ignore[arg-type]
        timeout=float(options["timeout"]),  # type: ignore[arg-type]
        keep=bool(options["keep"]),
    )


def run_in_own_vhost(name: str, settings: Settings) -> Outcome:
    """Create a vhost, run experiment ``name`` in it, delete it unless ``keep``."""
    management = settings.management()
    vhost = f"routing_demo-exp-{name}-{uuid.uuid4().hex[:8]}"
    management.create_vhost(vhost)
    try:
        return run_experiment(
            name,
            broker_url=vhost_url(settings.broker, vhost),
            backend_url=settings.result_backend,
            management=management,
            run_dir=settings.run_dir / "experiments" / name,
            seed=settings.seed,
            timeout=settings.timeout,
        )
    finally:
        if settings.keep:
            click.echo(f"kept vhost {vhost} (delete: rabbitmqctl delete_vhost {vhost})", err=True)
        else:
            management.delete_vhost(vhost)


@click.group()
def experiment() -> None:
    """Routing experiments: one topology variant each, real workers, a tally.

    Each experiment starts the workers it needs (celery multi) in a vhost of
    its own, sends a fixed, seeded mix of tasks, and prints which worker ran
    what (the workers' own inspect stats) and the broker's per-queue counters,
    then the checks it makes. Exit status 1 when a check fails.

    \b
    Examples:
      # What there is to run
      python -m routing_demo.experiments list
      # One experiment; keep its vhost to look at it in the management UI
      python -m routing_demo.experiments run topic --keep
      # All of them, with Markdown, JSON and PNG written to reports/
      python -m routing_demo.experiments all --report-dir reports
      # Results through Redis, machine-readable output
      python -m routing_demo.experiments run priority \\
          --result-backend redis://localhost:6379/0 --json
    """


@experiment.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def list_(as_json: bool) -> None:
    """Name, settings module and subject of every experiment.

    \b
    Examples:
      python -m routing_demo.experiments list
      python -m routing_demo.experiments list --json
    """
    if as_json:
        click.echo(
            json.dumps(
                [
                    {"name": e.name, "title": e.title, "config_module": e.config_module}
                    for e in EXPERIMENTS.values()
                ],
                indent=2,
            )
        )
        return
    width = max(len(name) for name in EXPERIMENTS)
    module_width = max(len(e.config_module) for e in EXPERIMENTS.values())
    for e in EXPERIMENTS.values():
        click.echo(f"{e.name:<{width}}  {e.config_module:<{module_width}}  {e.title}")


@experiment.command()
@click.argument("name", type=click.Choice(list(EXPERIMENTS)))
@settings_options
def run(name: str, as_json: bool, **options: object) -> None:
    """Run one experiment and print its tally.

    \b
    Examples:
      python -m routing_demo.experiments run direct
      python -m routing_demo.experiments run quorum --keep --timeout 120
      CELERY_BROKER_URL=pyamqp://user:pass@rabbit:5672 \\
          python -m routing_demo.experiments run fanout --json
    """
    outcome = run_in_own_vhost(name, _settings(**options))
    if as_json:
        click.echo(json.dumps(to_json([outcome])[0], indent=2, default=str))
    else:
        click.echo(render_text(outcome))
    if not outcome.passed:
        raise SystemExit(1)


@experiment.command(name="all")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where report.md, report.json and report.png go.",
)
@settings_options
def all_(report_dir: Path, as_json: bool, **options: object) -> None:
    """Run every experiment, one after the other, and write the report.

    \b
    Examples:
      python -m routing_demo.experiments all --report-dir reports
      python -m routing_demo.experiments all --report-dir reports --json
    """
    settings = _settings(**options)
    outcomes = []
    for name in EXPERIMENTS:
        click.echo(f"running {name} …", err=True)
        outcome = run_in_own_vhost(name, settings)
        outcomes.append(outcome)
        if not as_json:
            click.echo(render_text(outcome) + "\n")
    written = write_report(outcomes, report_dir)
    if as_json:
        click.echo(json.dumps(to_json(outcomes), indent=2, default=str))
    for kind, path in written.items():
        click.echo(f"wrote {kind}: {path}", err=True)
    if "png" not in written:
        click.echo("no chart: matplotlib is not installed", err=True)
    failed = [o.name for o in outcomes if not o.passed]
    if failed:
        click.echo(f"checks failed in: {', '.join(failed)}", err=True)
        raise SystemExit(1)


def main() -> None:
    experiment(prog_name="python -m routing_demo.experiments")
