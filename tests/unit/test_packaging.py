"""The project works as an installed package, wherever it is run from."""

from __future__ import annotations

import subprocess
import sys


def test_when_imported_from_another_directory_then_app_and_settings_load(tmp_path) -> None:
    """``conf`` is installed with the package: no reliance on the current directory."""
    probe = (
        "from routing_demo import celery_app; import routing_demo.tasks; "
        "print(celery_app.conf.task_default_queue, sorted(celery_app.conf.task_routes))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert completed.stdout.split(" ", 1) == [
        "default",
        "['routing_demo.tasks.add', 'routing_demo.tasks.sub']\n",
    ]
