"""How a test session chooses its broker and Redis, asked without any service:
the checks are stand-ins, or ask loopback ports where nothing listens."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from routing_demo.local_rabbitmq import RABBITMQ_SERVER
from routing_demo.local_services import Choice, choose, management_url_for
from routing_demo.testing import services
from routing_demo.testing.ports import free_ports
from routing_demo.testing.session_services import (
    BROKER_ENV,
    MANAGEMENT_ENV,
    REDIS_ENV,
    SessionServices,
)

SHARED_BROKER = "pyamqp://guest:secret@127.0.0.1:5672"
SHARED_REDIS = "redis://127.0.0.1:6379/0"
SHARED_MANAGEMENT = "http://guest:secret@127.0.0.1:15672"

#: Stands in for an installed server: constructing a private service only
#: writes its files, nothing is run.
INSTALLED = sys.executable
MISSING = "/nonexistent/redis-server"


def answers() -> None:
    pass


def refuses() -> None:
    raise ConnectionRefusedError("[Errno 111] Connection refused")


def never_asked() -> None:
    raise AssertionError("asked after an earlier check failed")


def shared(service: str, url: str) -> Choice:
    return Choice(service, url, True, "stand-in")


def private(service: str, url: str) -> Choice:
    return Choice(service, url, False, f"stand-in: {url} refuses")


def session(tmp_path: Path, broker: Choice, redis: Choice, **servers: str) -> SessionServices:
    return SessionServices(
        broker,
        redis,
        management_url=SHARED_MANAGEMENT,
        base_dir=tmp_path,
        **{"rabbitmq_server": INSTALLED, "redis_server": INSTALLED, **servers},
    )


def test_when_every_check_answers_then_the_shared_service_is_chosen() -> None:
    choice = choose(
        "RabbitMQ",
        SHARED_BROKER,
        [("AMQP", SHARED_BROKER, answers), ("management API", SHARED_MANAGEMENT, answers)],
    )
    assert choice.shared
    assert choice.reason == "AMQP and management API answer"


def test_when_a_check_fails_then_a_private_service_is_chosen_with_that_reason() -> None:
    choice = choose(
        "RabbitMQ",
        SHARED_BROKER,
        [("AMQP", SHARED_BROKER, answers), ("management API", SHARED_MANAGEMENT, refuses)],
    )
    assert not choice.shared
    assert choice.reason.startswith("management API at http://guest:**@127.0.0.1:15672")
    assert "Connection refused" in choice.reason
    assert "secret" not in choice.reason


def test_when_the_first_check_fails_then_the_later_ones_are_not_asked() -> None:
    choice = choose(
        "RabbitMQ", SHARED_BROKER, [("AMQP", SHARED_BROKER, refuses), ("x", "", never_asked)]
    )
    assert not choice.shared and choice.reason.startswith("AMQP at ")


def test_when_shared_services_answer_then_the_session_uses_them_and_starts_nothing(
    tmp_path: Path,
) -> None:
    chosen = session(tmp_path, shared("RabbitMQ", SHARED_BROKER), shared("Redis", SHARED_REDIS))
    assert chosen.private_broker is None and chosen.private_redis is None
    assert chosen.broker_url == SHARED_BROKER
    assert chosen.management_url == SHARED_MANAGEMENT
    assert chosen.redis_url == SHARED_REDIS
    # The management API is left where commands under test look for it.
    assert chosen.environment() == {BROKER_ENV: SHARED_BROKER, REDIS_ENV: SHARED_REDIS}
    assert "RabbitMQ pyamqp://guest:**@127.0.0.1:5672/ (shared" in chosen.summary()


def test_when_the_broker_lacks_something_then_a_private_node_with_management_is_prepared(
    tmp_path: Path,
) -> None:
    chosen = session(tmp_path, private("RabbitMQ", SHARED_BROKER), shared("Redis", SHARED_REDIS))
    node = chosen.private_broker
    assert node is not None and node.status == "created"
    assert node.management_port is not None
    assert chosen.broker_url == node.url.rstrip("/")
    # The management API follows the chosen broker, in the fixtures and in
    # every command a test runs.
    assert chosen.management_url == node.management_url
    assert chosen.environment() == {
        BROKER_ENV: chosen.broker_url,
        REDIS_ENV: SHARED_REDIS,
        MANAGEMENT_ENV: f"http://127.0.0.1:{node.management_port}",
    }
    plugins = Path(node.env["RABBITMQ_ENABLED_PLUGINS_FILE"]).read_text()
    assert "rabbitmq_management" in plugins
    assert node.env["RABBITMQ_NODENAME"] != "rabbit@localhost"
    assert str(tmp_path) in node.env["RABBITMQ_MNESIA_BASE"]
    assert "private node, started on first use" in chosen.summary()


def test_when_redis_does_not_answer_then_a_private_server_without_persistence_is_prepared(
    tmp_path: Path,
) -> None:
    chosen = session(tmp_path, shared("RabbitMQ", SHARED_BROKER), private("Redis", SHARED_REDIS))
    server = chosen.private_redis
    assert server is not None and server.status == "created"
    assert chosen.redis_url == server.url != SHARED_REDIS
    assert chosen.environment()[REDIS_ENV] == server.url
    argv = " ".join(server.argv)
    assert f"--port {server.port}" in argv and "--save  --appendonly no" in argv


@pytest.mark.parametrize(
    ("in_ci", "outcome"), [(False, pytest.skip.Exception), (True, pytest.fail.Exception)]
)
def test_when_the_server_binary_is_missing_then_it_skips_locally_and_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_ci: bool, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(services, "IN_CI", in_ci)
    chosen = session(
        tmp_path,
        shared("RabbitMQ", SHARED_BROKER),
        private("Redis", SHARED_REDIS),
        redis_server=MISSING,
    )
    assert chosen.private_redis is None
    with pytest.raises(outcome, match="apt-get install redis-server"):
        chosen.start_redis()
    assert "apt-get install redis-server" in chosen.summary()
    chosen.start_broker()  # the shared broker is there: nothing to skip


def test_when_nothing_listens_then_the_session_chooses_private_services(tmp_path: Path) -> None:
    dead_amqp, dead_redis = free_ports(range(5900, 5950), range(5950, 6000))
    chosen = SessionServices.from_environment(
        {
            BROKER_ENV: f"pyamqp://guest:guest@127.0.0.1:{dead_amqp}",
            REDIS_ENV: f"redis://127.0.0.1:{dead_redis}/0",
        },
        base_dir=tmp_path,
        rabbitmq_server=INSTALLED,
        redis_server=INSTALLED,
    )
    assert not chosen.broker.shared and not chosen.redis.shared
    assert chosen.broker.reason.startswith(f"AMQP at pyamqp://guest:**@127.0.0.1:{dead_amqp}")
    assert chosen.redis.reason.startswith(f"PING at redis://127.0.0.1:{dead_redis}/0")
    assert str(dead_amqp) not in chosen.broker_url
    assert str(dead_redis) not in chosen.redis_url


def test_the_shared_management_api_is_the_broker_hosts_unless_the_environment_names_one() -> None:
    assert management_url_for("pyamqp://u:p%40ss@rabbit:5672/vh") == "http://u:p%40ss@rabbit:15672"
    assert management_url_for("pyamqp://a:5672//;pyamqp://b:5672//") == "http://guest:guest@a:15672"
    named = "http://admin:pw@elsewhere:15999"
    dead_amqp = free_ports(range(5900, 5950))[0]
    chosen = SessionServices.from_environment(
        {BROKER_ENV: f"pyamqp://guest:guest@127.0.0.1:{dead_amqp}", MANAGEMENT_ENV: named},
        rabbitmq_server=MISSING,
        redis_server=MISSING,
    )
    assert chosen.management_url == named


def test_when_a_server_binary_is_missing_then_the_message_names_its_debian_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(services, "IN_CI", False)
    monkeypatch.setattr(services.shutil, "which", lambda _: None)
    with pytest.raises(pytest.skip.Exception, match="apt-get install rabbitmq-server"):
        services.require_executable(RABBITMQ_SERVER, "RabbitMQ server")
