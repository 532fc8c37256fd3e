"""The application user compose's broker creates, on a private node loaded
exactly as compose loads it: with only the generated permissions, real
workers (``-Q add``, ``-Q sub``, ``-X add,sub``) and clients run every kind of
task with rpc:// and Redis results, ``celery inspect ping`` and the
``routes`` commands work; another vhost, an unrelated queue or exchange, and
the broker's administration stay closed. Every command's output and every
log file is searched for the password."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import amqp
import pytest
import requests
from celery import Celery
from kombu import Connection

from routing_demo.celery import client_app
from routing_demo.security import BROKER_PASSWORD_FILE, broker_password_from_file
from routing_demo.tasks import add, mul, sub
from routing_demo.testing.process import wait_until
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.workers import pid_alive, worker_nodes

from .conftest import Cli, private_node
from .test_permissions import render_user

pytestmark = pytest.mark.integration

USER = "routing_demo"
VHOST = "routing_demo"
#: Distinctive, so that finding it anywhere in output or logs is a leak.
PASSWORD = f"Zq7-{uuid.uuid4().hex}"
#: A wrong password is a secret too: error paths must not print it either.
WRONG_PASSWORD = f"Wx3-{uuid.uuid4().hex}"
#: Another environment's vhost on the same broker, with queues of the same names.
OTHER_VHOST = "other_env"
#: Node names end with it (add-sec@host): the permissions allow any suffix.
SUFFIX = "-sec"


@dataclass
class AppBroker:
    node: PrivateRabbitMQNode
    definitions: Path

    def url(self, password: str | None = PASSWORD, vhost: str = VHOST) -> str:
        """The broker URL; ``password=None``: one without a password."""
        login = USER if password is None else f"{USER}:{password}"
        return f"pyamqp://{login}@127.0.0.1:{self.node.amqp_port}/{vhost}"

    @property
    def management_url(self) -> str:
        return f"http://{USER}:{PASSWORD}@127.0.0.1:{self.node.management_port}"

    @property
    def management_api(self) -> str:
        return f"http://127.0.0.1:{self.node.management_port}/api"


@pytest.fixture(scope="module")
def app_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppBroker]:
    """compose's start script renders the user; the node loads its definitions
    directory at boot (so no guest exists), plus another environment's vhost."""
    conf = tmp_path_factory.mktemp("compose-broker")
    done = render_user(conf, RABBITMQ_USER=USER, RABBITMQ_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    definitions = conf / "etc" / "definitions.d"
    (definitions / "30-other-environment.json").write_text(
        json.dumps(
            {
                "vhosts": [{"name": OTHER_VHOST}],
                "queues": [
                    {
                        "name": name,
                        "vhost": OTHER_VHOST,
                        "durable": True,
                        "auto_delete": False,
                        "arguments": {},
                    }
                    for name in ("add", "sub", "default")
                ],
            }
        )
    )
    with private_node(
        tmp_path_factory.mktemp("rabbitmq-app-user"),
        management=True,
        extra_config=[f"load_definitions = {definitions}"],
    ) as node:
        yield AppBroker(node, definitions)


# --- what the user may not do ----------------------------------------------------------
def test_when_the_app_user_opens_another_vhost_then_access_is_refused(
    app_broker: AppBroker,
) -> None:
    connection = Connection(app_broker.url(vhost=OTHER_VHOST), connect_timeout=10)
    with connection, pytest.raises(amqp.NotAllowed) as refused:
        connection.connect()
    assert f"access to vhost '{OTHER_VHOST}' refused for user '{USER}'" in str(refused.value)


def _publish_to_amq_topic(channel: amqp.Channel) -> None:
    channel.basic_publish(amqp.Message("x"), exchange="amq.topic", routing_key="add")
    channel.queue_declare("add", passive=True)  # a round trip: the refusal arrives


@pytest.mark.parametrize(
    ("operation", "refused_on"),
    [
        (lambda channel: channel.queue_declare("unrelated"), "queue 'unrelated'"),
        (
            lambda channel: channel.exchange_declare("unrelated", "direct"),
            "exchange 'unrelated'",
        ),
        (lambda channel: channel.queue_bind("add", "amq.direct", "add"), "exchange 'amq.direct'"),
        (_publish_to_amq_topic, "exchange 'amq.topic'"),
        (lambda channel: channel.basic_get("dead_letter"), "queue 'dead_letter'"),
        (
            lambda channel: channel.basic_consume("unroutable", callback=print),
            "queue 'unroutable'",
        ),
        (
            lambda channel: channel.queue_declare("celery@host.celery.pidbox", auto_delete=True),
            "queue 'celery@host.celery.pidbox'",
        ),
    ],
    ids=[
        "declare-queue",
        "declare-exchange",
        "bind-from-amq.direct",
        "publish-amq.topic",
        "get-dead_letter",
        "consume-unroutable",
        "worker-named-celery",
    ],
)
def test_when_the_app_user_touches_what_is_not_the_apps_then_access_is_refused(
    app_broker: AppBroker, operation, refused_on: str
) -> None:
    with Connection(app_broker.url(), connect_timeout=10) as connection:
        channel = connection.channel()
        with pytest.raises(amqp.AccessRefused) as refused:
            operation(channel)
    expected = f"access to {refused_on} in vhost '{VHOST}' refused for user '{USER}'"
    assert f"ACCESS_REFUSED - {expected}" in str(refused.value)


def test_when_the_app_user_asks_to_administer_the_broker_then_it_is_refused(
    app_broker: AppBroker,
) -> None:
    auth = (USER, PASSWORD)
    api = app_broker.management_api
    # It may read its own vhost (routes verify) ...
    assert requests.get(f"{api}/queues/{VHOST}", auth=auth, timeout=10).status_code == 200
    # ... but neither list users nor grant itself more.
    assert requests.get(f"{api}/users", auth=auth, timeout=10).status_code == 401
    granted = requests.put(
        f"{api}/permissions/{VHOST}/{USER}",
        auth=auth,
        json={"configure": ".*", "write": ".*", "read": ".*"},
        timeout=10,
    )
    assert granted.status_code == 401
    assert "Not administrator" in granted.text


# --- what the application does with it -------------------------------------------------
@dataclass
class AppRun:
    cli: Cli
    app: Celery
    run_dir: Path
    backend: str


@pytest.fixture(
    scope="module",
    params=["rpc", "redis"],
    ids=["rpc-password-in-url", "redis-password-in-file"],
)
def app_run(
    request: pytest.FixtureRequest,
    app_broker: AppBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppRun]:
    """``routes workers start`` (celery multi: -Q add, -Q sub, -X add,sub) as
    the app user, with rpc:// or Redis results; stopped at the end. The rpc://
    run puts the password in ``CELERY_BROKER_URL``; the Redis run gives a URL
    without one and the password in a file, as a Docker secret would."""
    backend = "rpc://" if request.param == "rpc" else request.getfixturevalue("redis_url")
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}")
    env = {
        "CELERY_BROKER_URL": app_broker.url(),
        "CELERY_RESULT_BACKEND": backend,
        "RABBITMQ_MANAGEMENT_URL": app_broker.management_url,
        "ROUTING_DEMO_RUN_DIR": str(run_dir),
    }
    if request.param == "redis":
        secret = run_dir / "broker-password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        env.update(CELERY_BROKER_URL=app_broker.url(password=None))
        env[BROKER_PASSWORD_FILE] = str(secret)
    cli = Cli(env)
    app = client_app(
        env["CELERY_BROKER_URL"],
        backend,
        name="routing_demo",
        broker_password=broker_password_from_file(env["CELERY_BROKER_URL"], env),
    )
    started = cli(
        "routes", "workers", "start", "--suffix", SUFFIX, "-P", "solo", "-l", "DEBUG",
        "--timeout", "120",
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield AppRun(cli, app, run_dir, request.param)
    finally:
        app.close()
        pids = [int(p.read_text()) for p in run_dir.glob("*.pid")]
        stopped = cli("routes", "workers", "stop", "--suffix", SUFFIX)
        try:
            wait_until(
                lambda: not any(pid_alive(pid) for pid in pids),
                timeout=60,
                message=f"workers {pids} still run after `routes workers stop`: "
                f"{stopped.stdout}{stopped.stderr}",
            )
        finally:
            for pid in pids:
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)


def hostname(base: str) -> str:
    return next(n.hostname for n in worker_nodes(SUFFIX) if n.name == f"{base}{SUFFIX}")


def test_when_the_app_user_sends_through_the_cli_then_the_task_runs_on_its_worker(
    app_run: AppRun,
) -> None:
    code, outcome = app_run.cli.json("routes", "send", "add", "2", "3", "--timeout", "60")
    assert code == 0, outcome
    assert (outcome["result"], outcome["queue"], outcome["worker"]) == (5, "add", hostname("add"))
    if app_run.backend == "redis":
        code, status = app_run.cli.json("routes", "status", outcome["id"])
        assert (code, status["state"], status["worker"]) == (0, "SUCCESS", hostname("add"))


@pytest.mark.parametrize(
    ("task", "result", "worker"),
    [
        (add.name, 9, "add"),
        (sub.name, 3, "sub"),
        (mul.name, 18, "default"),  # no route: the default queue
    ],
)
def test_when_a_client_sends_tasks_as_the_app_user_then_each_runs_on_its_queues_worker(
    app_run: AppRun, task: str, result: int, worker: str
) -> None:
    sent = app_run.app.send_task(task, (6, 3))
    assert sent.get(timeout=60) == result
    assert sent.worker == hostname(worker)


def test_when_the_app_user_pings_and_verifies_then_every_worker_and_queue_answers(
    app_run: AppRun,
) -> None:
    expected = {hostname(base) for base in ("add", "sub", "default")}
    done = app_run.cli("inspect", "ping", "-d", ",".join(sorted(expected)), "-t", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {line.split()[1].rstrip(":") for line in done.stdout.splitlines() if "->" in line} == (
        expected
    )
    done = app_run.cli("routes", "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    code, status = app_run.cli.json("routes", "workers", "status", "--suffix", SUFFIX)
    assert code == 0 and status["healthy"], status


def test_when_workers_and_commands_run_then_no_output_or_log_holds_a_password(
    app_run: AppRun, app_broker: AppBroker
) -> None:
    cli = app_run.cli
    wrong = Cli({**cli.env, "CELERY_BROKER_URL": app_broker.url(password=WRONG_PASSWORD)})
    if app_run.backend == "rpc":  # error paths, the same with either backend
        assert wrong("routes", "send", "add", "1", "1", "--timeout", "5").returncode == 1
        unreachable = f"http://{USER}:{PASSWORD}@127.0.0.1:1"
        assert cli("routes", "verify", "--management-url", unreachable).returncode == 4
    ran = {tuple(argv[5:7]) for argv, _ in cli.transcript}
    for command in (
        ("routes", "send", "sub", "5", "2"),
        ("routes", "status", str(uuid.uuid4())),
        ("routes", "verify"),
        ("routes", "workers", "status", "--suffix", SUFFIX),
        ("inspect", "ping", "-d", hostname("add"), "-t", "10"),
    ):
        if command[:2] not in ran:
            cli(*command)
    outputs = [(" ".join(argv[3:]), text) for argv, text in cli.transcript + wrong.transcript]
    logs = [
        (str(path), path.read_text(errors="replace"))
        for path in [
            *app_run.run_dir.glob("*.log"),
            *(app_broker.node.base_dir / "log").glob("*.log"),
        ]
    ]
    assert len(outputs) >= 6 and len(logs) >= 4, (outputs, logs)
    assert any(hostname("add") in text for _, text in logs), "no worker log to search"
    leaks = [
        where
        for where, text in outputs + logs
        for secret in (PASSWORD, WRONG_PASSWORD)
        if secret in text
    ]
    assert leaks == []


def test_when_the_app_ran_then_every_queue_it_made_is_one_the_permissions_name(
    app_run: AppRun, app_broker: AppBroker
) -> None:
    from routing_demo import celery_app
    from routing_demo.cli.definitions import app_permissions

    granted = app_permissions(celery_app)
    queues = requests.get(
        f"{app_broker.management_api}/queues/{VHOST}", auth=(USER, PASSWORD), timeout=10
    ).json()
    names = {queue["name"] for queue in queues}
    assert {"add", "sub", "default", f"{hostname('add')}.celery.pidbox"} <= names
    assert [name for name in names if not granted.allows("configure", name)] == []
