"""What the security tests share: a private RabbitMQ node (users, permissions
and TLS are never changed on the shared broker), ``rabbitmqctl`` on it, and
``celery -A routing_demo …`` run as a user runs it, every output kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from routing_demo.testing.defaults import RABBITMQ_SERVER
from routing_demo.testing.rabbitmq import PrivateRabbitMQNode
from routing_demo.testing.services import require_executable

ROOT = Path(__file__).resolve().parents[2]

#: Variables of the caller's environment that would change what the commands
#: under test connect to or load.
_SCRUBBED = (
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "CELERY_CONFIG_MODULE",
    "RABBITMQ_MANAGEMENT_URL",
    "ROUTING_DEMO_RUN_DIR",
)


@contextmanager
def private_node(
    base_dir: Path, *, management: bool = False, extra_config: Sequence[str] = ()
) -> Iterator[PrivateRabbitMQNode]:
    """A RabbitMQ node of the test module's own, killed (with its whole
    process group) when the block ends."""
    server = require_executable(RABBITMQ_SERVER, "RabbitMQ server")
    node = PrivateRabbitMQNode(
        base_dir, management=management, extra_config=extra_config, server=server
    )
    with node:
        yield node


def rabbitmqctl(node: PrivateRabbitMQNode, *args: str) -> Any:
    """``rabbitmqctl`` against ``node`` (its own Erlang cookie), JSON output."""
    return json.loads(node.ctl(*args, "--formatter", "json"))


@dataclass
class Cli:
    """Runs ``celery -A routing_demo …`` with ``env`` added to a scrubbed
    environment; every command and its output stay in ``transcript``."""

    env: dict[str, str]
    transcript: list[tuple[list[str], str]] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        return {**inherited, "PYTHONUNBUFFERED": "1", **self.env}

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "celery", "-A", "routing_demo", *args]
        done = subprocess.run(
            argv,
            env=self.environment(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        self.transcript.append((argv, done.stdout + done.stderr))
        return done

    def json(self, *args: str) -> tuple[int, Any]:
        done = self(*args, "--json")
        assert done.stdout, done.stderr
        return done.returncode, json.loads(done.stdout)
