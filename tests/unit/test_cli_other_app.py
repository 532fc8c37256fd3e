"""The ``routes`` group is registered for every Celery app in the
environment; the commands that measure this project itself are not offered
to another app."""

from __future__ import annotations

import pytest
from celery import Celery
from celery.bin.base import CLIContext
from click.testing import CliRunner

from routing_demo.celery import app as routing_demo_app
from routing_demo.cli.group import OWN_COMMANDS, routes


def invoke(app: Celery, *args: str):
    return CliRunner().invoke(
        routes, list(args), obj=CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    )


@pytest.fixture
def other_app() -> Celery:
    return Celery("other", set_as_current=False)


def test_when_another_app_asks_for_help_then_experiment_and_bench_are_not_listed(
    other_app: Celery,
) -> None:
    listed = invoke(other_app, "--help").output
    assert "topology" in listed and "explain" in listed
    for name in OWN_COMMANDS:
        assert f"  {name} " not in listed


@pytest.mark.parametrize("name", sorted(OWN_COMMANDS))
def test_when_another_app_runs_bench_or_experiment_then_it_is_told_whose_they_are(
    other_app: Celery, name: str
) -> None:
    result = invoke(other_app, name, "--help")
    assert result.exit_code == 2
    assert f"No such command {name!r} for this app" in result.output


def test_when_routing_demo_asks_for_help_then_every_command_is_listed() -> None:
    listed = invoke(routing_demo_app, "--help").output
    for name in OWN_COMMANDS:
        assert f"  {name} " in listed
