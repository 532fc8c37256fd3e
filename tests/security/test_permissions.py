"""The application user's permissions and the broker's start script, without a
broker: every name the workers and clients use is covered, its neighbours are
not, and compose's broker grants exactly the generated patterns."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from celery import uuid
from celery.bin.base import CLIContext
from click.testing import CliRunner

from routing_demo import celery_app
from routing_demo.cli import routes
from routing_demo.cli.definitions import (
    DEFAULT_PERMISSIONS_PATH,
    Permissions,
    app_permissions,
    render_permissions,
)

ROOT = Path(__file__).resolve().parents[2]
START_SCRIPT = ROOT / "conf" / "rabbitmq" / "start-rabbitmq.sh"

#: Names as Celery and kombu make them: an rpc:// reply queue is named by the
#: client's oid, event and control reply queues by a fresh uuid.
OID = celery_app.thread_oid
EVENT_NODE = uuid()

#: (permission, resource name) pairs the application needs.
NEEDED = [
    *(
        (permission, name)
        for name in ("routing_demo", "routing_demo.dlx", "routing_demo.unroutable")
        for permission in ("configure", "write", "read")
    ),
    *((p, q) for q in ("add", "sub", "default") for p in ("configure", "write", "read")),
    *((p, q) for q in ("dead_letter", "unroutable") for p in ("configure", "write")),
    *(
        (p, name)
        for name in (
            "celery.pidbox",
            "reply.celery.pidbox",
            "add@worker-1.celery.pidbox",
            "sub@host.example.org.celery.pidbox",
            "default-ci@host.celery.pidbox",
            f"{OID}.reply.celery.pidbox",
            "celeryev",
            f"celeryev.{EVENT_NODE}",
        )
        for p in ("configure", "write", "read")
    ),
    ("configure", OID),
    ("read", OID),
    ("write", "amq.default"),
]

#: (permission, resource name) pairs nothing in the application needs.
REFUSED = [
    *(
        (p, name)
        for name in (
            "evil",
            "celery",
            "adder",
            "xadd",
            "add.evil",
            "routing_demo.other",
            "amq.topic",
            "amq.direct",
            "celery@host.celery.pidbox",
            "flower@host.celery.pidbox",
            "celeryev.evil",
            "evil.reply.celery.pidbox",
            f"{OID}.evil",
            f"x{OID}",
        )
        for p in ("configure", "write", "read")
    ),
    ("read", "dead_letter"),
    ("read", "unroutable"),
    ("write", OID),
    ("configure", "amq.default"),
    ("read", "amq.default"),
]


@pytest.fixture(scope="module")
def granted() -> Permissions:
    return app_permissions(celery_app)


@pytest.mark.parametrize(("permission", "name"), NEEDED)
def test_when_the_app_uses_a_resource_then_its_permission_covers_it(
    granted: Permissions, permission: str, name: str
) -> None:
    assert granted.allows(permission, name), (permission, name, getattr(granted, permission))


@pytest.mark.parametrize(("permission", "name"), REFUSED)
def test_when_a_resource_is_not_the_apps_then_no_permission_covers_it(
    granted: Permissions, permission: str, name: str
) -> None:
    assert not granted.allows(permission, name), (permission, name)


def test_when_permissions_are_regenerated_then_the_committed_file_is_current() -> None:
    committed = (ROOT / DEFAULT_PERMISSIONS_PATH).read_text()
    assert committed == render_permissions(celery_app)
    context = CLIContext(app=celery_app, no_color=True, workdir=None)
    result = CliRunner().invoke(
        routes,
        ["permissions", "-o", str(ROOT / DEFAULT_PERMISSIONS_PATH), "--check"],
        obj=context,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output


def test_when_permissions_are_listed_then_each_resource_says_why() -> None:
    context = CLIContext(app=celery_app, no_color=True, workdir=None)
    result = CliRunner().invoke(
        routes, ["permissions", "--json"], obj=context, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["permissions"] == app_permissions(celery_app).as_dict()
    names = {resource["name"] for resource in document["resources"]}
    assert names >= {"add", "sub", "default", "<node>.celery.pidbox", "celeryev.<uuid>", "<uuid>"}
    assert all(resource["why"] for resource in document["resources"])


# --- compose's broker start script ---------------------------------------------------
def render_user(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    """Run start-rabbitmq.sh outside the image: its files in ``tmp_path``, no
    chown, and ``true`` instead of the image's entrypoint."""
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    for source, target in (
        ("definitions.json", "routing-demo-topology.json"),
        ("permissions.json", "routing-demo-permissions.json"),
    ):
        (conf / target).write_text((ROOT / "conf" / "rabbitmq" / source).read_text())
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    (stubs / "chown").write_text("#!/bin/sh\nexit 0\n")
    (stubs / "chown").chmod(0o755)
    env = {
        "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}",
        "ROUTING_DEMO_RABBITMQ_CONF": str(conf),
        "ROUTING_DEMO_RABBITMQ_EXEC": "true",
        **environment,
    }
    return subprocess.run(
        ["sh", str(START_SCRIPT)], env=env, capture_output=True, text=True, check=False
    )


def user_file(tmp_path: Path) -> dict[str, Any]:
    return json.loads((tmp_path / "etc" / "definitions.d" / "10-user.json").read_text())


def test_when_the_broker_starts_then_its_one_user_gets_exactly_the_generated_permissions(
    tmp_path: Path,
) -> None:
    done = render_user(tmp_path, RABBITMQ_USER="app", RABBITMQ_PASSWORD="pw-$HOME-`id`")
    assert done.returncode == 0, done.stderr
    document = user_file(tmp_path)
    assert document["users"] == [{"name": "app", "password": "pw-$HOME-`id`", "tags": "management"}]
    assert document["vhosts"] == [{"name": "routing_demo"}]
    assert document["permissions"] == [
        {"user": "app", "vhost": "routing_demo", **app_permissions(celery_app).as_dict()}
    ]
    mode = (tmp_path / "etc" / "definitions.d" / "10-user.json").stat().st_mode & 0o777
    assert mode == 0o600
    topology = json.loads((tmp_path / "etc" / "definitions.d" / "20-topology.json").read_text())
    assert "users" not in topology and "permissions" not in topology


def test_when_the_password_is_a_secret_file_then_the_broker_reads_it(tmp_path: Path) -> None:
    secret = tmp_path / "rabbitmq_password"
    secret.write_text("from-a-secret\n")
    done = render_user(tmp_path, RABBITMQ_USER="app", RABBITMQ_PASSWORD_FILE=str(secret))
    assert done.returncode == 0, done.stderr
    assert user_file(tmp_path)["users"][0]["password"] == "from-a-secret"


@pytest.mark.parametrize(
    ("environment", "error"),
    [
        ({"RABBITMQ_USER": "app"}, "set RABBITMQ_PASSWORD or RABBITMQ_PASSWORD_FILE"),
        ({"RABBITMQ_PASSWORD": "pw"}, "set RABBITMQ_USER"),
        ({"RABBITMQ_USER": "app", "RABBITMQ_PASSWORD": 'p"w'}, "must not contain"),
        (
            {"RABBITMQ_USER": "app", "RABBITMQ_PASSWORD": "a", "RABBITMQ_PASSWORD_FILE": "/x"},
            "not both",
        ),
    ],
)
def test_when_credentials_are_missing_or_unsafe_then_the_broker_refuses_to_start(
    tmp_path: Path, environment: dict[str, str], error: str
) -> None:
    done = render_user(tmp_path, **environment)
    assert done.returncode != 0
    assert error in done.stderr
    assert not (tmp_path / "etc" / "definitions.d" / "10-user.json").exists()
