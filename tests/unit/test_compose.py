"""compose.yaml, read as data and checked against the topology (no container
engine runs here): one worker per queue, health conditions, no guest."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from routing_demo import celery_app
from routing_demo.cli.definitions import DEFAULT_DEFINITIONS_PATH, render_definitions
from routing_demo.cli.explain import explain_route, select_queues
from routing_demo.cli.model import read_topology
from routing_demo.topology import TASK_QUEUES, worker_selections

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
#: ``${NAME}``, ``${NAME:-default}``, ``${NAME:?message}`` (``$$`` escapes a dollar).
VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?::?([-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution, enough for this file."""

    def substitute(match: re.Match[str]) -> str:
        name, kind, default = match.groups()
        if name in env:
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {default}")
        return default or ""

    return VARIABLE.sub(substitute, value).replace("$$", "$")


def workers(compose: dict[str, Any]) -> dict[str, list[str]]:
    """Service name -> command, for services running ``celery … worker``."""
    return {
        name: service["command"]
        for name, service in compose["services"].items()
        if "worker" in service.get("command", [])
    }


def option(command: list[str], *flags: str) -> str | None:
    for index, arg in enumerate(command):
        if arg in flags:
            return command[index + 1]
    return None


def test_when_compose_runs_workers_then_each_declared_queue_has_exactly_one(
    compose: dict[str, Any],
) -> None:
    consumers: dict[str, list[str]] = {}
    for service, command in workers(compose).items():
        selection = select_queues(
            celery_app, option(command, "-Q", "--queues"), option(command, "-X", "--exclude-queues")
        )
        assert selection.error is None, (service, selection.error)
        assert selection.warnings == [], (service, selection.warnings)
        for queue in selection.queues:
            consumers.setdefault(queue, []).append(service)
    assert consumers == {queue.name: [queue.name] for queue in TASK_QUEUES}


def test_when_compose_names_workers_then_they_follow_the_topologys_selections(
    compose: dict[str, Any],
) -> None:
    services = workers(compose)
    assert set(services) == set(worker_selections())
    for base, (flag, names) in worker_selections().items():
        command = services[base]
        assert option(command, flag) == names
        assert option(command, "-n", "--hostname") == f"{base}@%h"
        assert command[:4] == ["celery", "-A", "routing_demo", "worker"]


def test_when_a_service_runs_then_it_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), name
    services = compose["services"]
    assert services["rabbitmq"]["healthcheck"]["test"] == [
        "CMD",
        "rabbitmq-diagnostics",
        "-q",
        "check_running",
    ]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in workers(compose):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"
        assert f"inspect ping -d {name}@$${{HOSTNAME}}" in test[1], name


def test_when_services_depend_on_others_then_they_wait_for_health(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
    for name in [*workers(compose), "beat"]:
        assert set(compose["services"][name]["depends_on"]) == {"rabbitmq", "redis"}


def test_when_reading_compose_then_it_uses_no_guest_and_no_obsolete_keys(
    compose: dict[str, Any],
) -> None:
    assert "version" not in compose
    for path in [COMPOSE, *sorted((ROOT / "conf" / "rabbitmq").iterdir())]:
        # Comments may say that guest is absent; nothing else may name it.
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "guest" in line], path
    assert "${RABBITMQ_PASSWORD:?" in COMPOSE.read_text()
    image = compose["services"]["rabbitmq"]["image"]
    assert re.fullmatch(r"rabbitmq:\d+\.\d+\.\d+-management", image), image
    assert compose["services"]["flower"]["profiles"] == ["monitoring"]


def test_when_workers_get_settings_then_they_are_names_celery_reads(
    compose: dict[str, Any],
) -> None:
    environment = compose["services"]["add"]["environment"]
    assert set(environment) >= {"CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    broker = interpolate(environment["CELERY_BROKER_URL"], {"RABBITMQ_PASSWORD": "pw"})
    assert broker == "pyamqp://routing_demo:pw@rabbitmq:5672/routing_demo"
    with pytest.raises(KeyError, match="RABBITMQ_PASSWORD"):
        interpolate(environment["CELERY_BROKER_URL"], {})
    # Every worker and beat shares the one anchor's settings.
    for name in [*workers(compose), "beat"]:
        assert compose["services"][name]["environment"] == environment


def test_when_beat_runs_then_there_is_one_and_its_task_follows_the_add_route(
    compose: dict[str, Any],
) -> None:
    beats = [n for n, s in compose["services"].items() if "beat" in s.get("command", [])]
    assert beats == ["beat"]
    schedule = celery_app.conf.beat_schedule
    assert schedule, "conf.celeryconfig declares no beat_schedule"
    for entry in schedule.values():
        explained = explain_route(celery_app, entry["task"], list(entry.get("args", ())))
        assert explained.error is None
        assert explained.delivered_to == ["add"]
    assert celery_app.conf.beat_schedule_filename.endswith("celerybeat-schedule")


def test_when_the_broker_boots_then_it_loads_current_definitions(compose: dict[str, Any]) -> None:
    mounts = compose["services"]["rabbitmq"]["volumes"]
    assert f"./{DEFAULT_DEFINITIONS_PATH}:/etc/rabbitmq/routing-demo-topology.json:ro" in mounts
    committed = (ROOT / DEFAULT_DEFINITIONS_PATH).read_text()
    assert committed == render_definitions(read_topology(celery_app)), (
        "conf/rabbitmq/definitions.json is stale: "
        "celery -A routing_demo routes definitions -o conf/rabbitmq/definitions.json"
    )
    config = (ROOT / "conf" / "rabbitmq" / "rabbitmq.conf").read_text()
    assert "load_definitions = /etc/rabbitmq/definitions.d" in config


def test_when_the_worker_image_is_built_then_it_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "C_FORCE_ROOT" not in dockerfile
