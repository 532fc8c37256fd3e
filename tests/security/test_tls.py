"""The amqps:// profile (``CELERY_CONFIG_MODULE=routing_demo.conf.tls``): settings from the
environment, then a worker and clients over a private node's TLS listener
that verifies client certificates, and the clear errors of a wrong CA, a
hostname the certificate does not carry, and a missing client certificate."""

from __future__ import annotations

import importlib
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kombu import Connection
from kombu.exceptions import OperationalError

from routing_demo.security import (
    TLS_CA_CERTS,
    TLS_CERTFILE,
    TLS_KEYFILE,
    TLS_SERVER_HOSTNAME,
    broker_tls_options,
)
from routing_demo.testing.ports import free_ports
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.testing.worker import LocalWorkerContainer

from .conftest import ROOT, Cli, private_node, rabbitmqctl

#: TLS listeners of private nodes: a range no other test service takes.
TLS_PORTS = range(5600, 5700)


# --- the profile's settings, no broker -------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``scripts/make-certs`` twice: the broker's CA, and another CA it never saw."""
    made = {}
    for name in ("ca", "other-ca"):
        directory = tmp_path_factory.mktemp(name)
        subprocess.run(
            [str(ROOT / "scripts" / "make-certs"), str(directory)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        made[name] = directory
    return made


def client_env(certs: dict[str, Path], **overrides: str) -> dict[str, str]:
    directory = certs["ca"]
    return {
        TLS_CA_CERTS: str(directory / "ca.pem"),
        TLS_CERTFILE: str(directory / "client.pem"),
        TLS_KEYFILE: str(directory / "client.key"),
        **overrides,
    }


def test_when_the_profile_loads_then_certificates_and_hostname_are_verified(
    certs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in client_env(certs).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(TLS_SERVER_HOSTNAME, raising=False)
    profile = importlib.reload(importlib.import_module("routing_demo.conf.tls"))
    assert profile.broker_url.startswith("amqps://")
    assert profile.broker_use_ssl["cert_reqs"] == ssl.CERT_REQUIRED
    assert profile.broker_use_ssl["ca_certs"] == str(certs["ca"] / "ca.pem")
    # None: kombu checks the certificate against the broker URL's host.
    assert "server_hostname" in profile.broker_use_ssl
    assert profile.broker_use_ssl["server_hostname"] is None
    assert profile.broker_use_ssl["certfile"] == str(certs["ca"] / "client.pem")
    # Everything else is routing_demo.conf.celeryconfig's.
    assert profile.accept_content == ["json"]
    assert profile.task_queues


@pytest.mark.parametrize(
    ("environ", "error"),
    [
        ({TLS_CERTFILE: "client.pem"}, "set both"),
        ({TLS_KEYFILE: "client.key"}, "set both"),
        ({TLS_CA_CERTS: "/nonexistent/ca.pem"}, "no such file"),
    ],
)
def test_when_tls_settings_are_incomplete_then_the_profile_refuses_to_load(
    certs: dict[str, Path], environ: dict[str, str], error: str
) -> None:
    environ = {k: v if v.startswith("/") else str(certs["ca"] / v) for k, v in environ.items()}
    with pytest.raises(ValueError, match=error):
        broker_tls_options(environ)


def test_when_no_ca_is_given_then_the_system_cas_are_still_required() -> None:
    options = broker_tls_options({TLS_SERVER_HOSTNAME: "rabbitmq.example.org"})
    assert options["ca_certs"] is None
    assert options["cert_reqs"] == ssl.CERT_REQUIRED
    assert options["server_hostname"] == "rabbitmq.example.org"


# --- over a TLS listener ---------------------------------------------------------------
@dataclass
class TlsBroker:
    node: PrivateRabbitMQNode
    port: int

    @property
    def url(self) -> str:
        return f"amqps://guest:guest@127.0.0.1:{self.port}//"


@pytest.fixture(scope="module")
def tls_broker(
    certs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsBroker]:
    """A private node with a TLS listener that requires a client certificate
    signed by the CA (mutual TLS); plain AMQP stays on its own port."""
    (port,) = free_ports(TLS_PORTS)
    ca = certs["ca"]
    config = [
        f"listeners.ssl.default = 127.0.0.1:{port}",
        f"ssl_options.cacertfile = {ca / 'ca.pem'}",
        f"ssl_options.certfile = {ca / 'server.pem'}",
        f"ssl_options.keyfile = {ca / 'server.key'}",
        "ssl_options.verify = verify_peer",
        "ssl_options.fail_if_no_peer_cert = true",
    ]
    with private_node(tmp_path_factory.mktemp("rabbitmq-tls"), extra_config=config) as node:
        yield TlsBroker(node, port)


@pytest.fixture(scope="module")
def tls_cli(tls_broker: TlsBroker, certs: dict[str, Path]) -> Cli:
    return Cli(
        {
            "CELERY_CONFIG_MODULE": "routing_demo.conf.tls",
            "CELERY_BROKER_URL": tls_broker.url,
            "CELERY_RESULT_BACKEND": "rpc://",
            **client_env(certs),
        }
    )


@pytest.fixture(scope="module")
def tls_worker(
    tls_broker: TlsBroker, tls_cli: Cli, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalWorkerContainer]:
    """One worker consuming every task queue, over TLS."""
    worker = LocalWorkerContainer(
        worker_name="tls",
        queue_option="-Q",
        queue_names="add,sub,default",
        broker_url=tls_broker.url,
        result_backend="rpc://",
        log_dir=tmp_path_factory.mktemp("tls-worker"),
        extra_args=["--pool=solo"],
        env={k: v for k, v in tls_cli.env.items() if k != "CELERY_BROKER_URL"},
    )
    worker.start()
    try:
        worker.ready()
        yield worker
    finally:
        worker.teardown()


@pytest.mark.integration
@pytest.mark.parametrize(("task", "args", "result"), [("add", 2, 5), ("sub", 9, 6), ("mul", 6, 18)])
def test_when_worker_and_client_use_amqps_then_tasks_run_over_tls(
    tls_worker: LocalWorkerContainer, tls_cli: Cli, task: str, args: int, result: int
) -> None:
    code, outcome = tls_cli.json("routes", "send", task, str(args), "3", "--timeout", "60")
    assert code == 0, outcome
    assert outcome["result"] == result
    assert outcome["worker"] == tls_worker.hostname


@pytest.mark.integration
def test_when_clients_connect_over_tls_then_the_broker_sees_tls_and_their_certificate(
    tls_worker: LocalWorkerContainer, tls_broker: TlsBroker, tls_cli: Cli
) -> None:
    done = tls_cli("inspect", "ping", "-d", tls_worker.hostname, "-t", "10")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "pong" in done.stdout
    connections = rabbitmqctl(tls_broker.node, "list_connections", "ssl", "peer_cert_subject")
    assert connections, "the worker holds no connection"
    for connection in connections:
        assert connection["ssl"] is True, connection
        assert "CN=routing_demo" in connection["peer_cert_subject"], connection


def connect(url: str, options: dict[str, object]) -> None:
    with Connection(url, ssl=options, connect_timeout=10) as connection:
        connection.ensure_connection(max_retries=1, interval_start=0)


@pytest.mark.integration
def test_when_the_ca_is_not_the_brokers_then_the_client_fails_clearly(
    tls_broker: TlsBroker, tls_cli: Cli, certs: dict[str, Path]
) -> None:
    other = {TLS_CA_CERTS: str(certs["other-ca"] / "ca.pem")}
    wrong = Cli({**tls_cli.env, **other})
    started = time.monotonic()
    done = wrong("routes", "send", "add", "2", "3", "--timeout", "10")
    assert done.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert "self-signed certificate in certificate chain" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30


@pytest.mark.integration
def test_when_the_certificate_does_not_name_the_host_then_the_client_fails_clearly(
    tls_broker: TlsBroker, certs: dict[str, Path]
) -> None:
    options = broker_tls_options(client_env(certs, **{TLS_SERVER_HOSTNAME: "broker.example"}))
    with pytest.raises(OperationalError, match=r"Hostname mismatch.*'broker\.example'"):
        connect(tls_broker.url, options)
    # The certificate names localhost and 127.0.0.1: both pass.
    connect(tls_broker.url.replace("127.0.0.1", "localhost"), broker_tls_options(client_env(certs)))


@pytest.mark.integration
def test_when_the_client_has_no_certificate_then_the_broker_refuses_it(
    tls_broker: TlsBroker, certs: dict[str, Path]
) -> None:
    options = broker_tls_options(client_env(certs, **{TLS_CERTFILE: "", TLS_KEYFILE: ""}))
    # TLS 1.3 sends the refusal after the handshake: the client reads the
    # broker's "certificate required" alert, or the connection closing.
    with pytest.raises(OperationalError, match=r"(?i)certificate required|EOF occurred"):
        connect(tls_broker.url, options)
