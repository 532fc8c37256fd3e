"""The README's demo command, run as a user runs it, in a vhost of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from routing_demo.tasks import add

pytestmark = pytest.mark.integration

#: A configuration that sends ``add`` to the ``sub`` queue: the demo must notice.
MISROUTED_CONFIG = """\
from routing_demo.conf.celeryconfig import *  # noqa: F403
task_routes = {**task_routes, "routing_demo.tasks.add": {"queue": "sub"}}  # noqa: F405
"""


def run_demo(broker_url: str, run_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routing_demo.demo", "--tasks", "9", "--run-dir", str(run_dir)],
        env={
            **os.environ,
            "CELERY_BROKER_URL": broker_url,
            "CELERY_RESULT_BACKEND": "rpc://",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_when_demo_runs_then_every_task_ran_on_its_queues_worker(
    vhost_factory: Callable[[str], str], tmp_path: Path
) -> None:
    completed = run_demo(vhost_factory("demo"), tmp_path)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "9/9 tasks ran on their queue's worker" in completed.stdout
    rows = [
        line.split() for line in completed.stdout.splitlines() if line.startswith("routing_demo.")
    ]
    assert len(rows) == 9
    assert {(row[0].rsplit(".", 1)[1], row[-2].split("@")[0]) for row in rows} <= {
        ("add", "add"),
        ("sub", "sub"),
        ("mul", "default"),
    }
    assert not list(tmp_path.glob("*.pid")), "workers left running"


def test_when_a_route_is_wrong_then_demo_reports_it_and_fails(
    vhost_factory: Callable[[str], str], tmp_path: Path
) -> None:
    (tmp_path / "misrouted.py").write_text(MISROUTED_CONFIG)
    completed = run_demo(
        vhost_factory("demo-misrouted"),
        tmp_path / "run",
        CELERY_CONFIG_MODULE="misrouted",
        PYTHONPATH=str(tmp_path),
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    wrong = [line for line in completed.stdout.splitlines() if "WRONG" in line]
    assert wrong and all(line.startswith(add.name) for line in wrong)
    assert not list((tmp_path / "run").glob("*.pid")), "workers left running"
