"""The broker helpers every tool shares, without a broker."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from celery import Celery
from click.testing import CliRunner

from routing_demo.bench.cli import bench
from routing_demo.cli._common import management_api
from routing_demo.experiments.cli import Settings
from routing_demo.rabbitmq import ManagementAPI, management_url


def test_when_broker_url_then_management_url_keeps_its_host_and_credentials() -> None:
    assert management_url("pyamqp://u:p%40ss@rabbit:5672/vh") == "http://u:p%40ss@rabbit:15672"


def test_when_broker_url_has_no_credentials_then_management_url_says_guest() -> None:
    assert management_url("pyamqp://rabbit//") == "http://guest:guest@rabbit:15672"
    assert management_url("pyamqp://") == "http://guest:guest@localhost:15672"


def test_when_failover_list_then_management_url_is_the_first_node() -> None:
    assert management_url("pyamqp://a:5672//;pyamqp://b:5672//") == "http://guest:guest@a:15672"


def test_when_app_broker_then_management_api_on_its_host_and_credentials() -> None:
    app = Celery(broker="pyamqp://u:p%40ss@rabbit:5672/vh", set_as_current=False)
    api = management_api(app, None)
    assert api.base_url == "http://rabbit:15672/api"
    assert api.session.auth == ("u", "p@ss")


def test_when_experiment_broker_then_management_api_on_its_host_and_credentials() -> None:
    settings = Settings(
        broker="pyamqp://u:p%40ss@rabbit:5672//",
        result_backend="rpc://",
        management_url=None,
        run_dir=None,  # type: ignore[arg-type]
        seed=0,
        timeout=1.0,
        keep=False,
    )
    api = settings.management()
    assert api.base_url == "http://rabbit:15672/api"
    assert api.session.auth == ("u", "p@ss")


def test_when_bench_broker_given_then_its_management_api_is_on_that_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, ManagementAPI] = {}

    def run_bench(**options: object) -> None:
        seen["management"] = options["management"]  # type: ignore[assignment]
        raise click.exceptions.Exit(0)

    # The bench drops these from its environment: give them back afterwards.
    for name in ("RABBITMQ_MANAGEMENT_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("routing_demo.bench.cli.run_bench", run_bench)
    monkeypatch.setattr("routing_demo.bench.cli.signal.signal", lambda *args: None)
    result = CliRunner().invoke(
        bench,
        [
            *("--broker", "pyamqp://u:p%40ss@rabbit:5672;pyamqp://u:p%40ss@other:5672"),
            *("--output-dir", str(tmp_path), "--no-install-peers"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert seen["management"].base_url == "http://rabbit:15672/api"
    assert seen["management"].session.auth == ("u", "p@ss")
