"""The transport choice and the librabbitmq adapter, without a broker.

The choice (``routing_demo.transports``) is tested whether or not librabbitmq
is installed: kombu's ``amqp://`` switch is simulated. The adapter's tests need
the librabbitmq module (``scripts/build-librabbitmq.py --install``) and skip
without it; they drive its Python layer with a stand-in for the C connection.
"""

from __future__ import annotations

import importlib
import pickle
import sys
from typing import Any

import kombu.transport
import pytest
from celery import Celery
from kombu import Connection
from kombu.transport import pyamqp

import routing_demo.transports
from routing_demo.transports import (
    LIBRABBITMQ_TRANSPORT,
    PYAMQP_TLS_TRANSPORT,
    PYAMQP_TRANSPORT,
    broker_transport_for,
)
from routing_demo.transports import pyamqp as blocked_aware

LIBRABBITMQ_URL = "librabbitmq://guest:guest@127.0.0.1:5672/some-vhost"


@pytest.fixture
def librabbitmq_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu behaves as if librabbitmq were installed, installed or not."""
    monkeypatch.setattr("kombu.connection.supports_librabbitmq", lambda: True)


# --- choosing the transport ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (LIBRABBITMQ_URL, LIBRABBITMQ_TRANSPORT),
        ("amqp://guest:guest@localhost:5672//", PYAMQP_TRANSPORT),
        ("AMQP://localhost//", PYAMQP_TRANSPORT),
        ("pyamqp://guest:guest@localhost:5672//", PYAMQP_TRANSPORT),
        ("amqp://a//;librabbitmq://b//", PYAMQP_TRANSPORT),
        ("amqps://localhost:5671//", PYAMQP_TLS_TRANSPORT),
        ("redis://localhost:6379/0", None),
        ("memory://", None),
        ("localhost", None),
        (None, None),
    ],
)
def test_when_url_given_then_transport_follows_its_scheme(
    url: str | None, expected: str | None
) -> None:
    assert broker_transport_for(url) == expected


def test_when_librabbitmq_importable_then_plain_amqp_switches_without_the_setting(
    librabbitmq_importable: None,
) -> None:
    """The kombu behaviour the setting exists to prevent."""
    assert Connection("amqp://guest:guest@localhost//").transport_cls == "librabbitmq"


@pytest.mark.parametrize("url", ["pyamqp://guest:guest@localhost//", "amqp://guest@localhost//"])
def test_when_librabbitmq_importable_then_pyamqp_and_amqp_stay_on_py_amqp(
    librabbitmq_importable: None, url: str
) -> None:
    connection = Connection(url, transport=broker_transport_for(url))
    transport = connection.get_transport_cls()
    assert transport is blocked_aware.Transport
    assert issubclass(transport, pyamqp.Transport)


def test_when_librabbitmq_importable_then_the_projects_app_stays_on_py_amqp(
    librabbitmq_importable: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    app = Celery("routing_demo-transport-check", set_as_current=False)
    app.config_from_object("routing_demo.conf.celeryconfig")
    connection = app.connection_for_write()
    assert connection.get_transport_cls() is blocked_aware.Transport


def test_when_config_module_loaded_with_librabbitmq_url_then_broker_transport_is_the_adapter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = importlib.import_module("routing_demo.transports.celeryconfig")
    monkeypatch.setenv("CELERY_BROKER_URL", LIBRABBITMQ_URL)
    try:
        config = importlib.reload(config)
        app = Celery("routing_demo-transport-check", set_as_current=False)
        app.config_from_object(config)
        assert app.conf.broker_transport == LIBRABBITMQ_TRANSPORT
        # Everything else is the project's configuration, unchanged.
        shipped = importlib.import_module("routing_demo.conf.celeryconfig")
        assert app.conf.task_routes == shipped.task_routes
    finally:
        monkeypatch.delenv("CELERY_BROKER_URL")
        importlib.reload(config)
    assert config.broker_transport == PYAMQP_TRANSPORT  # from broker_url = "pyamqp://…"


def test_when_librabbitmq_missing_then_choosing_it_says_how_to_build_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in (
        "librabbitmq",
        "kombu.transport.librabbitmq",
        "routing_demo.transports.librabbitmq",
    ):
        monkeypatch.delitem(sys.modules, module, raising=False)
    # ``from kombu.transport import librabbitmq`` finds a submodule imported
    # earlier in the session as a package attribute, whatever sys.modules says.
    monkeypatch.delattr(kombu.transport, "librabbitmq", raising=False)
    monkeypatch.delattr(routing_demo.transports, "librabbitmq", raising=False)
    monkeypatch.setitem(sys.modules, "librabbitmq", None)  # import fails: not installed
    monkeypatch.delitem(kombu.transport._transport_cache, LIBRABBITMQ_TRANSPORT, raising=False)
    with pytest.raises(ImportError, match=r"scripts/build-librabbitmq\.py --install"):
        Connection(LIBRABBITMQ_URL, transport=LIBRABBITMQ_TRANSPORT)
    monkeypatch.delitem(kombu.transport._transport_cache, LIBRABBITMQ_TRANSPORT, raising=False)


# --- the adapter ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter() -> Any:
    pytest.importorskip(
        "librabbitmq",
        reason="librabbitmq is not installed: .venv/bin/python scripts/build-librabbitmq.py "
        "--install",
    )
    return importlib.import_module("routing_demo.transports.librabbitmq")


class FakeCConnection:
    """What librabbitmq's Python ``Channel`` calls on its C connection."""

    def __init__(self) -> None:
        self.callbacks: dict[int, dict[str, Any]] = {1: {}}
        self.consumed: list[tuple[Any, ...]] = []

    def _basic_consume(self, *args: Any) -> str:
        self.consumed.append(args)
        return args[2]


def test_when_kombu_passes_on_cancel_then_the_stock_channel_fails(adapter: Any) -> None:
    """Why the adapter exists: kombu 5.7 calls ``basic_consume(…, on_cancel=…)``."""
    from kombu.transport import librabbitmq as stock

    channel = stock.Channel(FakeCConnection(), 1)
    with pytest.raises(TypeError, match="on_cancel"):
        channel.basic_consume(queue="add", callback=print, on_cancel=print)


def test_when_kombu_passes_on_cancel_then_the_adapter_consumes(adapter: Any) -> None:
    connection = FakeCConnection()
    channel = adapter.Channel(connection, 1)

    def on_message(message: object) -> None: ...

    tag = channel.basic_consume(
        queue="add",
        consumer_tag="tag-1",
        no_ack=False,
        callback=on_message,
        nowait=False,
        arguments={"x-priority": 1},
        on_cancel=print,
    )
    assert tag == "tag-1"
    assert connection.consumed == [(1, "add", "tag-1", False, False, False, {"x-priority": 1})]
    assert connection.callbacks[1] == {"tag-1": on_message}


def test_when_message_delivered_as_memoryview_then_body_is_bytes(adapter: Any) -> None:
    buffer = bytearray(b'{"args": [1, 2]}')
    message = adapter.Message(None, {"content_type": "application/json"}, {}, memoryview(buffer))
    buffer[:] = bytes(len(buffer))  # rabbitmq-c reuses its frame buffer
    assert message.body == b'{"args": [1, 2]}'
    assert pickle.loads(pickle.dumps(message.body)) == b'{"args": [1, 2]}'


def test_connection_builds_delivered_messages_with_the_adapter(adapter: Any) -> None:
    """The C module calls ``connection.Message(…)`` for each delivery."""
    assert adapter.Connection.Message is adapter.Message
    assert adapter.Connection.Channel is adapter.Channel
    assert adapter.Transport.Connection is adapter.Connection


def test_when_confirm_publish_requested_then_connecting_is_refused(adapter: Any) -> None:
    client = Connection(
        LIBRABBITMQ_URL,
        transport=LIBRABBITMQ_TRANSPORT,
        transport_options={"confirm_publish": True},
    )
    with pytest.raises(adapter.UnsupportedFeature, match="publisher confirms"):
        client.transport.establish_connection()


class FakeLoop:
    def __init__(self) -> None:
        self.readers: dict[int, Any] = {}
        self.on_tick: set[Any] = set()
        self.soon: list[Any] = []

    def add_reader(self, fd: int, callback: Any, *args: Any) -> None:
        self.readers[fd] = (callback, args)

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.soon.append((callback, args))


class FakeLibrabbitmqConnection:
    """Has one delivery buffered in rabbitmq-c, then nothing."""

    connected = True

    def __init__(self) -> None:
        self.buffered = 1
        self.drained = 0
        self.closed = False

    def fileno(self) -> int:
        return 42

    def drain_events(self, timeout: float | None = None) -> None:
        if not self.buffered:
            raise TimeoutError  # what librabbitmq raises: socket.timeout
        self.buffered -= 1
        self.drained += 1

    def close(self) -> None:
        self.closed = True


def test_when_registered_with_a_loop_then_each_tick_drains_buffered_frames(adapter: Any) -> None:
    transport = Connection(LIBRABBITMQ_URL, transport=LIBRABBITMQ_TRANSPORT).transport
    loop, connection = FakeLoop(), FakeLibrabbitmqConnection()
    transport.register_with_event_loop(connection, loop)
    assert 42 in loop.readers
    (tick,) = loop.on_tick
    tick()  # the socket was never readable, yet the buffered delivery is read
    assert connection.drained == 1
    tick()  # nothing buffered: a non-blocking read that stops at once
    assert connection.drained == 1

    transport.close_connection(connection)
    assert loop.on_tick == set()
    assert connection.closed
