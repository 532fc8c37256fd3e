"""Constants of the local test services: where the servers live, which ports
they may take, and how long each waits.

Private services take their ports from ranges of their own, away from the
shared RabbitMQ (5672, 15672, 25672) and Redis (6379) that other sessions use.
"""

from __future__ import annotations

__all__ = [
    "AMQP_PORTS",
    "DIST_PORTS",
    "MANAGEMENT_PORTS",
    "RABBITMQ_SERVER",
    "READY_TIMEOUT",
    "REDIS_PORTS",
    "REDIS_SERVER",
    "STOP_TIMEOUT",
    "WORKER_APP",
]

#: RabbitMQ's own start script. ``/usr/sbin/rabbitmq-server`` is a wrapper
#: that switches to the ``rabbitmq`` user, whose node then cannot write our
#: private directories: run the script behind it directly.
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

#: Installed Redis server, for a private result backend.
REDIS_SERVER = "redis-server"

#: AMQP listeners of private RabbitMQ nodes.
AMQP_PORTS = range(5700, 5800)
#: Erlang distribution ports of private RabbitMQ nodes (same offset as AMQP).
DIST_PORTS = range(25700, 25800)
#: Management HTTP ports of private RabbitMQ nodes (same offset as AMQP).
MANAGEMENT_PORTS = range(15700, 15800)
#: Private Redis servers share the AMQP range: every port is bind-checked.
REDIS_PORTS = AMQP_PORTS

#: Seconds a started process has to log that it is ready. A private RabbitMQ
#: node takes about 3-9 s on a busy 2-core machine, a worker about 2-4 s.
READY_TIMEOUT = 60.0

#: Seconds a process has to exit after SIGTERM before its group gets SIGKILL
#: (what ``docker stop``/``docker restart`` give a container by default).
STOP_TIMEOUT = 10.0

#: What ``celery -A`` loads in every local worker, unless the
#: ``local_worker_app`` fixture names another project's app.
WORKER_APP = "routing_demo"
