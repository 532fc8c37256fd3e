"""The broker helpers every tool shares, without a broker."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from celery import Celery
from click.testing import CliRunner
from kombu import Connection

from routing_demo.bench.cli import bench
from routing_demo.cli._common import management_api
from routing_demo.experiments.cli import Settings
from routing_demo.rabbitmq import ManagementAPI, management_url, vhost_url


def test_when_broker_url_then_management_url_keeps_its_host_and_credentials() -> None:
    assert management_url("pyamqp://u:p%40ss@rabbit:5672/vh") == "http://u:p%40ss@rabbit:15672"


def test_when_broker_url_has_no_credentials_then_management_url_says_guest() -> None:
    assert management_url("pyamqp://rabbit//") == "http://guest:guest@rabbit:15672"
    assert management_url("pyamqp://") == "http://guest:guest@localhost:15672"


def test_when_failover_list_then_management_url_is_the_first_node() -> None:
    assert management_url("pyamqp://a:5672//;pyamqp://b:5672//") == "http://guest:guest@a:15672"


@pytest.mark.parametrize(
    ("broker_url", "expected"),
    [
        ("pyamqp://u:p@rabbit:5672//", "pyamqp://u:p@rabbit:5672/exp-1"),
        ("pyamqp://u:p@rabbit:5672/old", "pyamqp://u:p@rabbit:5672/exp-1"),
        ("pyamqp://u:p@rabbit", "pyamqp://u:p@rabbit/exp-1"),
        ("pyamqp://u:p@rabbit/", "pyamqp://u:p@rabbit/exp-1"),
        ("amqps://u:p@rabbit:5671/old?ssl=1", "amqps://u:p@rabbit:5671/exp-1?ssl=1"),
    ],
)
def test_when_vhost_replaced_then_scheme_credentials_host_and_query_stay(
    broker_url: str, expected: str
) -> None:
    assert vhost_url(broker_url, "exp-1") == expected


def test_when_vhost_has_slash_or_special_characters_then_it_is_quoted_whole() -> None:
    assert vhost_url("pyamqp://rabbit:5672", "/") == "pyamqp://rabbit:5672/%2F"
    url = vhost_url("pyamqp://rabbit:5672//", "team/a b%?#")
    assert url == "pyamqp://rabbit:5672/team%2Fa%20b%25%3F%23"
    assert Connection(url).virtual_host == "team/a b%?#"


def test_when_credentials_are_percent_encoded_then_they_stay_as_given() -> None:
    url = vhost_url("pyamqp://u%3Aser:p%40ss@rabbit:5672//", "v")
    assert url == "pyamqp://u%3Aser:p%40ss@rabbit:5672/v"
    connection = Connection(url)
    assert (connection.userid, connection.password) == ("u:ser", "p@ss")


def test_when_scheme_given_then_it_replaces_the_urls() -> None:
    assert vhost_url("pyamqp://u:p@rabbit:5672//", "v", scheme="amqp") == "amqp://u:p@rabbit:5672/v"
    assert (
        vhost_url("pyamqp://u:p@rabbit:5672//", "v", scheme="librabbitmq")
        == "librabbitmq://u:p@rabbit:5672/v"
    )
    assert vhost_url("amqps://u:p@rabbit:5671//", "v") == "amqps://u:p@rabbit:5671/v"


def test_when_broker_is_a_cluster_list_then_every_node_gets_the_vhost() -> None:
    url = vhost_url(
        "pyamqp://u:p@127.0.0.1:5681/a; pyamqp://u:p@127.0.0.1:5682;pyamqp://u:p@127.0.0.1:5683//",
        "bench-x-celery-quorum",
        scheme="amqp",
    )
    assert url.split(";") == [
        f"amqp://u:p@127.0.0.1:{port}/bench-x-celery-quorum" for port in (5681, 5682, 5683)
    ]


def test_when_no_broker_url_then_vhost_url_refuses() -> None:
    with pytest.raises(ValueError, match="no broker URL"):
        vhost_url(" ; ", "v")


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
