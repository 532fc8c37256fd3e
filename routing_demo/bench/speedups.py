"""py-amqp with its optional Cython speedups, built beside the virtualenv.

py-amqp compiles five of its modules with Cython when its ``setup.py`` runs
with ``CELERY_ENABLE_SPEEDUPS`` set; the wheels on PyPI are pure Python. The
bench builds that variant from the PyPI sdist of the installed version
(``pip wheel --no-binary amqp``) and installs it into a directory of its own
(``pip install --target``), which only the speedups measurements put first
on ``PYTHONPATH``: the project's virtualenv keeps the pure-Python py-amqp.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

__all__ = ["build_speedups", "speedups_dir", "speedups_status"]

#: The py-amqp modules its setup.py compiles.
COMPILED_MODULES = ("serialization", "basic_message", "method_framing", "abstract_channel", "utils")


def speedups_dir(run_dir: Path) -> Path:
    """Where the build for this py-amqp version and interpreter lives."""
    tag = sysconfig.get_config_var("SOABI") or f"py{sys.version_info[0]}{sys.version_info[1]}"
    return Path(run_dir) / f"amqp-{version('amqp')}-speedups-{tag}"


def _check_code(target: Path) -> str:
    return (
        f"import sys; sys.path.insert(0, {str(target)!r}); import amqp, importlib; "
        "mods = [importlib.import_module('amqp.' + m) for m in "
        f"{COMPILED_MODULES!r}]; "
        "bad = [m.__name__ for m in mods if not m.__file__.endswith('.so')]; "
        "print(amqp.__version__); sys.exit(1 if bad else 0)"
    )


def speedups_status(run_dir: Path) -> tuple[bool, str]:
    """(usable, why): whether a compiled py-amqp of the installed version is there."""
    target = speedups_dir(run_dir) / "site"
    if not target.is_dir():
        return False, f"not built yet ({target} missing)"
    probe = subprocess.run(
        [sys.executable, "-c", _check_code(target)], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return False, f"build at {target} is not compiled: {probe.stderr.strip()[-300:]}"
    return True, f"py-amqp {probe.stdout.strip()} with {len(COMPILED_MODULES)} Cython modules"


def build_speedups(run_dir: Path, *, log: Path | None = None) -> tuple[bool, str]:
    """Build and install the compiled py-amqp (about a minute on 2 cores).

    Returns (usable, why); on failure ``why`` carries the end of pip's output.
    """
    base = speedups_dir(run_dir)
    wheels, target = base / "wheels", base / "site"
    base.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CELERY_ENABLE_SPEEDUPS": "1"}
    steps = [
        [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-binary", "amqp",
            "--no-cache-dir", "-w", str(wheels), f"amqp=={version('amqp')}",
        ],
        [
            sys.executable, "-m", "pip", "install", "--no-deps", "--upgrade",
            "--target", str(target), "--find-links", str(wheels), "--no-index",
            f"amqp=={version('amqp')}",
        ],
    ]  # fmt: skip
    output = []
    for argv in steps:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            if log is not None:
                log.write_text("\n".join(output))
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            return False, f"`{' '.join(argv[2:4])}` failed: " + " | ".join(tail)
    if log is not None:
        log.write_text("\n".join(output))
    return speedups_status(run_dir)
