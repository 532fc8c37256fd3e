"""When the named broker and Redis do not answer, the session's private ones
really start, serve what the tests need, and stop by their PIDs."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from kombu import Connection, Queue

from routing_demo.local_services import redis_check
from routing_demo.polling import pid_alive
from routing_demo.rabbitmq import ManagementAPI, vhost_url
from routing_demo.testing.ports import free_ports
from routing_demo.testing.session_services import (
    BROKER_ENV,
    MANAGEMENT_ENV,
    REDIS_ENV,
    SessionServices,
)

pytestmark = pytest.mark.integration


def test_when_nothing_answers_then_private_services_start_serve_and_stop(tmp_path: Path) -> None:
    dead_amqp, dead_redis = free_ports(range(5900, 5950), range(5950, 6000))
    services = SessionServices.from_environment(
        {
            BROKER_ENV: f"pyamqp://guest:guest@127.0.0.1:{dead_amqp}",
            REDIS_ENV: f"redis://127.0.0.1:{dead_redis}/0",
        },
        base_dir=tmp_path,
    )
    node, redis = services.private_broker, services.private_redis
    assert node is not None and redis is not None
    try:
        services.start_broker()
        services.start_redis()
        # A throw-away vhost through the node's own management API, and a
        # queue in it over AMQP: what vhost_factory and the workers do.
        management = ManagementAPI(services.environment()[MANAGEMENT_ENV])
        vhost = f"fallback-{uuid.uuid4().hex[:8]}"
        management.create_vhost(vhost)
        with Connection(vhost_url(services.broker_url, vhost)) as connection:
            Queue("fallback", channel=connection.default_channel).declare()
        assert [queue["name"] for queue in management.queues(vhost)] == ["fallback"]
        redis_check(services.redis_url)
        pids = [node.pid, redis.pid]
    finally:
        services.stop()
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert node.status == redis.status == "exited"
