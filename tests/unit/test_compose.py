"""compose.yaml, read as data and checked against the topology (no container
engine runs here): one worker per queue in each stack (the single broker's,
and the cluster profile's), health conditions, no guest, a three-node cluster
that names itself, and the whole file against the Compose Specification."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kombu import Connection
from kombu.transport.native_delayed_delivery import (
    CELERY_DELAYED_DELIVERY_EXCHANGE,
    MAX_LEVEL,
    level_name,
)

from routing_demo import celery_app
from routing_demo.cli.definitions import (
    DEFAULT_DEFINITIONS_PATH,
    DEFINITIONS_PATHS,
    PERMISSIONS_PATHS,
    Permissions,
    render_definitions,
)
from routing_demo.cli.explain import explain_route, select_queues
from routing_demo.cli.model import read_topology
from routing_demo.topology import QUEUE_TYPE_ENV, TASK_QUEUES, build_queues, worker_selections

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
CONF = ROOT / "conf" / "rabbitmq"
#: The Compose Specification's JSON schema (``compose_spec.json``), as the npm
#: package ``dclint`` 3.1.0 ships it (``schemas/compose.schema.json``).
COMPOSE_SCHEMA = Path(__file__).with_name("compose-spec.schema.json")
#: Each stack of compose.yaml: the profile that starts it (``None``: services
#: without a profile, started by a plain ``docker compose up``).
STACKS: dict[str | None, dict[str, str]] = {
    None: {"broker": "rabbitmq", "queue_type": "classic"},
    "cluster": {"broker": "rabbitmq-1", "queue_type": "quorum"},
}
CLUSTER_NODES = ["rabbitmq-1", "rabbitmq-2", "rabbitmq-3"]
#: What a cluster-profile service is called: its default-stack counterpart's
#: name behind this prefix.
CLUSTER_PREFIX = "cluster-"
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


def stack(compose: dict[str, Any], profile: str | None = None) -> dict[str, dict[str, Any]]:
    """The services of one stack: those of ``profile``, or (``None``) those
    without a profile."""
    return {
        name: service
        for name, service in compose["services"].items()
        if (profile in service["profiles"] if "profiles" in service else profile is None)
    }


def workers(compose: dict[str, Any], profile: str | None = None) -> dict[str, list[str]]:
    """Service name -> command, for one stack's services running ``celery … worker``."""
    return {
        name: service["command"]
        for name, service in stack(compose, profile).items()
        if "worker" in service.get("command", [])
    }


def beats(compose: dict[str, Any], profile: str | None = None) -> list[str]:
    return [n for n, s in stack(compose, profile).items() if "beat" in s.get("command", [])]


def base_name(service: str) -> str:
    return service.removeprefix(CLUSTER_PREFIX)


def option(command: list[str], *flags: str) -> str | None:
    for index, arg in enumerate(command):
        if arg in flags:
            return command[index + 1]
    return None


@pytest.mark.parametrize("profile", list(STACKS))
def test_when_compose_runs_workers_then_each_declared_queue_has_exactly_one(
    compose: dict[str, Any], profile: str | None
) -> None:
    consumers: dict[str, list[str]] = {}
    for service, command in workers(compose, profile).items():
        selection = select_queues(
            celery_app, option(command, "-Q", "--queues"), option(command, "-X", "--exclude-queues")
        )
        assert selection.error is None, (service, selection.error)
        assert selection.warnings == [], (service, selection.warnings)
        for queue in selection.queues:
            consumers.setdefault(queue, []).append(base_name(service))
    assert consumers == {queue.name: [queue.name] for queue in TASK_QUEUES}
    assert len(beats(compose, profile)) == 1


@pytest.mark.parametrize("profile", list(STACKS))
def test_when_compose_names_workers_then_they_follow_the_topologys_selections(
    compose: dict[str, Any], profile: str | None
) -> None:
    prefix = "" if profile is None else f"{profile}-"
    services = workers(compose, profile)
    assert set(services) == {prefix + base for base in worker_selections()}
    for base, (flag, names) in worker_selections().items():
        command = services[prefix + base]
        assert option(command, flag) == names
        assert option(command, "-n", "--hostname") == f"{base}@%h"
        assert command[:4] == ["celery", "-A", "routing_demo", "worker"]


def test_when_the_cluster_profile_runs_workers_then_they_are_the_same_workers(
    compose: dict[str, Any],
) -> None:
    """A cluster worker differs from its counterpart only in its settings and
    in the brokers it waits for: same command, healthcheck, image."""
    services = compose["services"]
    for name in [*workers(compose, "cluster"), *beats(compose, "cluster")]:
        single, clustered = services[base_name(name)], services[name]
        assert clustered["command"] == single["command"], name
        assert clustered["healthcheck"] == single["healthcheck"], name
        assert clustered["image"] == single["image"], name
        assert set(clustered["depends_on"]) == {*CLUSTER_NODES, "redis"}, name


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
    for node in CLUSTER_NODES:
        kind, test = services[node]["healthcheck"]["test"]
        assert kind == "CMD-SHELL"
        # Running, and in a cluster with a majority of its nodes up.
        assert test.startswith("rabbitmq-diagnostics -q check_running && "), node
        assert "await_online_nodes 2 " in test, node
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for profile in STACKS:
        for name in workers(compose, profile):
            test = services[name]["healthcheck"]["test"]
            assert test[0] == "CMD-SHELL"
            assert f"inspect ping -d {base_name(name)}@$${{HOSTNAME}}" in test[1], name


def test_when_services_depend_on_others_then_they_wait_for_health(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            # A service waits for its own stack's services or shared ones (redis).
            assert compose["services"][dependency].get("profiles", []) in (
                [],
                service.get("profiles", []),
            ), (name, dependency)
    for profile, info in STACKS.items():
        brokers = {"rabbitmq"} if info["broker"] == "rabbitmq" else set(CLUSTER_NODES)
        for name in [*workers(compose, profile), *beats(compose, profile)]:
            assert set(compose["services"][name]["depends_on"]) == {*brokers, "redis"}


def test_when_reading_compose_then_it_uses_no_guest_and_no_obsolete_keys(
    compose: dict[str, Any],
) -> None:
    assert "version" not in compose
    for path in [COMPOSE, *sorted(CONF.iterdir())]:
        # Comments may say that guest is absent; nothing else may name it.
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "guest" in line], path
    assert "${RABBITMQ_PASSWORD:?" in COMPOSE.read_text()
    # One pinned RabbitMQ 4.x image for the single broker and every node.
    images = {compose["services"][name]["image"] for name in ["rabbitmq", *CLUSTER_NODES]}
    assert len(images) == 1, images
    assert re.fullmatch(r"rabbitmq:4\.\d+\.\d+-management", images.pop())
    assert compose["services"]["flower"]["profiles"] == ["monitoring"]
    # Celery reads CELERY_*; the topology reads ROUTING_DEMO_*; nothing else
    # reaches the workers (an obsolete or misspelt name would be ignored).
    for profile in STACKS:
        for name in [*workers(compose, profile), *beats(compose, profile)]:
            for variable in compose["services"][name]["environment"]:
                assert variable.startswith(("CELERY_", "ROUTING_DEMO_")) or variable == (
                    "RABBITMQ_MANAGEMENT_URL"
                ), (name, variable)


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
    for name in [*workers(compose), *beats(compose)]:
        assert compose["services"][name]["environment"] == environment
    assert QUEUE_TYPE_ENV not in environment  # classic, the default


def test_when_cluster_workers_get_settings_then_they_name_every_node_and_quorum_queues(
    compose: dict[str, Any],
) -> None:
    environment = compose["services"]["cluster-add"]["environment"]
    broker = interpolate(environment["CELERY_BROKER_URL"], {"RABBITMQ_PASSWORD": "pw"})
    assert broker.split(";") == [
        f"pyamqp://routing_demo:pw@{node}:5672/routing_demo" for node in CLUSTER_NODES
    ]
    assert environment[QUEUE_TYPE_ENV] == "quorum"
    for name in [*workers(compose, "cluster"), *beats(compose, "cluster")]:
        assert compose["services"][name]["environment"] == environment
    # What kombu makes of it: one connection that fails over node to node.
    connection = Connection(broker)
    assert [urlsplit(url).hostname for url in connection.alt] == CLUSTER_NODES
    assert {urlsplit(url).path for url in connection.alt} == {"/routing_demo"}


def test_when_beat_runs_then_there_is_one_per_stack_and_its_task_follows_the_add_route(
    compose: dict[str, Any],
) -> None:
    assert beats(compose) == ["beat"]
    assert beats(compose, "cluster") == ["cluster-beat"]
    schedule = celery_app.conf.beat_schedule
    assert schedule, "routing_demo.conf.celeryconfig declares no beat_schedule"
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
    config = (CONF / "rabbitmq.conf").read_text()
    assert "load_definitions = /etc/rabbitmq/definitions.d" in config


def mounts_of(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path, for the service's read-only bind mounts."""
    mounts = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        if source.startswith("./"):
            assert mode == ["ro"], volume
            mounts[target] = source.removeprefix("./")
    return mounts


@pytest.mark.parametrize("profile", list(STACKS))
def test_when_a_stack_boots_then_every_broker_loads_its_queue_types_files(
    compose: dict[str, Any], profile: str | None
) -> None:
    """Each broker of a stack mounts the same start script and files, and the
    definitions and permissions of the queue type its workers declare (a
    worker declaring ``add`` with other arguments would be refused)."""
    queue_type = STACKS[profile]["queue_type"]
    brokers = ["rabbitmq"] if profile is None else CLUSTER_NODES
    for broker in brokers:
        mounts = mounts_of(compose["services"][broker])
        assert mounts["/etc/rabbitmq/start-rabbitmq.sh"] == "conf/rabbitmq/start-rabbitmq.sh"
        assert mounts["/etc/rabbitmq/conf.d/20-routing-demo.conf"] == "conf/rabbitmq/rabbitmq.conf"
        assert mounts["/etc/rabbitmq/routing-demo-topology.json"] == str(
            DEFINITIONS_PATHS[queue_type]
        )
        assert mounts["/etc/rabbitmq/routing-demo-permissions.json"] == str(
            PERMISSIONS_PATHS[queue_type]
        )
        assert compose["services"][broker]["entrypoint"] == [
            "/bin/sh",
            "/etc/rabbitmq/start-rabbitmq.sh",
        ]
    loaded = json.loads((ROOT / DEFINITIONS_PATHS[queue_type]).read_text())
    declared = build_queues(queue_type)
    for queue in (*declared.task_queues, *declared.holding_queues):
        (definition,) = [q for q in loaded["queues"] if q["name"] == queue.name]
        assert definition["arguments"] == (queue.queue_arguments or {}), queue.name
        assert definition["durable"] is True


def test_when_the_cluster_profile_starts_then_three_nodes_name_each_other(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    nodes = [n for n, s in stack(compose, "cluster").items() if s["image"].startswith("rabbitmq:")]
    assert nodes == CLUSTER_NODES
    cluster_conf = (CONF / "cluster.conf").read_text()
    settings = dict(
        line.split(" = ", 1)
        for line in cluster_conf.splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert settings["cluster_formation.peer_discovery_backend"] == "classic_config"
    peers = {
        v for k, v in settings.items() if k.startswith("cluster_formation.classic_config.nodes.")
    }
    # A node is rabbit@<hostname>; compose resolves a peer by its service name.
    assert peers == {f"rabbit@{node}" for node in CLUSTER_NODES}
    data_volumes = set()
    for node in CLUSTER_NODES:
        service = services[node]
        assert service["hostname"] == node
        mounts = mounts_of(service)
        assert mounts["/etc/rabbitmq/conf.d/30-cluster.conf"] == "conf/rabbitmq/cluster.conf"
        assert (
            mounts["/etc/rabbitmq/conf.d/40-quorum-membership.conf"]
            == "conf/rabbitmq/quorum-membership.conf"
        )
        (data,) = [v for v in service["volumes"] if v.endswith(":/var/lib/rabbitmq")]
        data_volumes.add(data.split(":")[0])
    assert len(data_volumes) == len(CLUSTER_NODES)
    assert data_volumes <= set(compose["volumes"])
    # The 4.x-only file holds only what a 3.x node would refuse at boot.
    membership = [
        line.split(" = ")[0]
        for line in (CONF / "quorum-membership.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert membership and all(
        key.startswith("quorum_queue.continuous_membership_reconciliation.") for key in membership
    )


def test_when_cluster_nodes_start_then_they_share_one_cookie_secret(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    secrets = {tuple(services[node]["secrets"]) for node in CLUSTER_NODES}
    assert secrets == {("rabbitmq_erlang_cookie",)}
    assert set(compose["secrets"]) == {"rabbitmq_erlang_cookie"}
    assert "file" in compose["secrets"]["rabbitmq_erlang_cookie"]
    for node in CLUSTER_NODES:
        environment = services[node]["environment"]
        assert environment["RABBITMQ_ERLANG_COOKIE_FILE"] == "/run/secrets/rabbitmq_erlang_cookie"
    for name, service in stack(compose).items():
        assert "secrets" not in service, name


def run_start_script(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """start-rabbitmq.sh outside the image: files in ``tmp_path``, ``chown``
    stubbed out, ``true`` in place of the image's entrypoint."""
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "routing-demo-topology.json").write_text((CONF / "definitions-quorum.json").read_text())
    (conf / "routing-demo-permissions.json").write_text(
        (CONF / "permissions-quorum.json").read_text()
    )
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "chown").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "chown").chmod(0o755)
    env = {
        "PATH": f"{stubs}:/usr/bin:/bin",
        "ROUTING_DEMO_RABBITMQ_CONF": str(conf),
        "ROUTING_DEMO_RABBITMQ_HOME": str(tmp_path / "home"),
        "ROUTING_DEMO_RABBITMQ_EXEC": "true",
        "RABBITMQ_USER": "app",
        "RABBITMQ_PASSWORD": "pw",
        **environment,
    }
    return subprocess.run(
        ["sh", str(CONF / "start-rabbitmq.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_when_a_node_gets_a_cookie_file_then_it_installs_it_owner_only(tmp_path: Path) -> None:
    secret = tmp_path / "erlang.cookie"
    secret.write_text("0123456789abcdef\n")
    done = run_start_script(tmp_path, RABBITMQ_ERLANG_COOKIE_FILE=str(secret))
    assert done.returncode == 0, done.stderr
    cookie = tmp_path / "home" / ".erlang.cookie"
    assert cookie.read_text() == "0123456789abcdef"
    assert cookie.stat().st_mode & 0o777 == 0o400
    # Started again (a container restart): the read-only cookie is replaced.
    secret.write_text("fedcba9876543210")
    done = run_start_script(tmp_path, RABBITMQ_ERLANG_COOKIE_FILE=str(secret))
    assert done.returncode == 0, done.stderr
    assert cookie.read_text() == "fedcba9876543210"


@pytest.mark.parametrize("content", ["", "has space", "quote'"])
def test_when_the_cookie_file_is_unusable_then_the_node_refuses_to_start(
    tmp_path: Path, content: str
) -> None:
    secret = tmp_path / "erlang.cookie"
    secret.write_text(content)
    done = run_start_script(tmp_path, RABBITMQ_ERLANG_COOKIE_FILE=str(secret))
    assert done.returncode != 0
    assert "RABBITMQ_ERLANG_COOKIE_FILE" in done.stderr
    assert not (tmp_path / "home" / ".erlang.cookie").exists()


def test_when_no_cookie_file_is_given_then_the_node_keeps_its_own(tmp_path: Path) -> None:
    done = run_start_script(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "home" / ".erlang.cookie").exists()


def test_when_validated_against_the_compose_specification_then_the_file_conforms(
    compose: dict[str, Any],
) -> None:
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    errors = [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator(schema).iter_errors(compose)
    ]
    assert errors == []
    # The schema does catch what a typo would make.
    broken = json.loads(json.dumps(compose))
    broken["services"]["cluster-add"]["depends_on"]["redis"]["condition"] = "service_health"
    assert list(validator(schema).iter_errors(broken))


@pytest.mark.skipif(
    shutil.which("docker-compose") is None and not os.environ.get("CI"),
    reason="no docker-compose 1.x here: apt-get install docker-compose",
)
@pytest.mark.parametrize("profile", list(STACKS))
def test_when_docker_compose_1_reads_the_file_then_it_accepts_it(
    tmp_path: Path, profile: str | None
) -> None:
    """Debian's docker-compose 1.29 validates against its own schema without
    a daemon; it predates the top-level ``name:``, so a copy goes without it."""
    copy = tmp_path / "compose.yaml"
    copy.write_text(re.sub(r"(?m)^name: .*\n", "", COMPOSE.read_text()))
    profiles = [] if profile is None else ["--profile", profile]
    done = subprocess.run(
        [
            "docker-compose",
            "-f",
            str(copy),
            "--project-directory",
            str(ROOT),
            *profiles,
            "config",
            "-q",
        ],
        env={"PATH": "/usr/bin:/bin", "RABBITMQ_PASSWORD": "pw"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ignored" not in done.stderr, done.stderr


def test_when_the_worker_image_is_built_then_it_runs_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "C_FORCE_ROOT" not in dockerfile


def test_when_workers_restart_then_they_keep_revoked_ids_on_a_volume_of_their_stack(
    compose: dict[str, Any],
) -> None:
    """Every worker keeps its revoked ids in a file per node (``--statedb
    …/%n.state``) on a named volume: one per stack, since the stacks'
    workers share node names, in a directory the image's non-root user made
    (a new named volume copies its owner). Task events stay off, as in
    Celery: Flower turns them on while it runs."""
    volumes: dict[str | None, set[str]] = {}
    directories = set()
    for profile in STACKS:
        for name, command in workers(compose, profile).items():
            assert "-E" not in command and "--events" not in command, name  # as in Celery
            statedb = option(command, "--statedb")
            assert statedb is not None, name
            directory, _, filename = statedb.rpartition("/")
            assert filename == "%n.state", name
            (volume,) = [
                v for v in compose["services"][name]["volumes"] if v.endswith(f":{directory}")
            ]
            source = volume.split(":")[0]
            assert source in compose["volumes"], (name, source)  # named, not a bind mount
            volumes.setdefault(profile, set()).add(source)
            directories.add(directory)
    assert all(len(sources) == 1 for sources in volumes.values()), volumes
    assert len(set().union(*volumes.values())) == len(STACKS), volumes
    dockerfile = (ROOT / "Dockerfile").read_text()
    as_user = dockerfile.split("\nUSER ")[-1]
    (directory,) = directories
    assert re.search(rf"^RUN mkdir -p .*{re.escape(directory)}\b", as_user, flags=re.MULTILINE)


def test_when_cluster_workers_delay_tasks_then_their_permissions_cover_delayed_delivery() -> None:
    """Quorum queues send countdown/ETA tasks through Celery's native delayed
    delivery: the cluster's user may declare, bind and publish to its levels
    (names from kombu); the single broker's user, with classic queues, may not."""
    names = [
        *(level_name(level) for level in range(MAX_LEVEL + 1)),
        CELERY_DELAYED_DELIVERY_EXCHANGE,
    ]
    quorum = Permissions(**json.loads((ROOT / PERMISSIONS_PATHS["quorum"]).read_text()))
    classic = Permissions(**json.loads((ROOT / PERMISSIONS_PATHS["classic"]).read_text()))
    for permission in ("configure", "write", "read"):
        for name in names:
            assert quorum.allows(permission, name), (permission, name)
            assert not classic.allows(permission, name), (permission, name)
        for neighbour in (level_name(MAX_LEVEL + 1), f"x{level_name(0)}", "celery_delayed_"):
            assert not quorum.allows(permission, neighbour), (permission, neighbour)
