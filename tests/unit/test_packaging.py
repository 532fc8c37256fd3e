"""The project works as an installed package, wherever it is run from.

The repository's ``conf/`` holds the settings users edit; it installs as
``routing_demo.conf``, never as a top-level ``conf`` that would collide with
another project's. The wheel is built and installed here, as a user would get
it, because the editable install and the repository on ``sys.path`` would hide
a package missing from it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: What goes into the wheel: setuptools reads nothing else from the tree.
SOURCES = ("pyproject.toml", "README.md", "routing_demo", "conf")
#: Where each source directory's modules land in the wheel.
INSTALLED_AS = {"routing_demo": "routing_demo", "conf": "routing_demo/conf"}


def test_when_imported_from_another_directory_then_app_and_settings_load(tmp_path) -> None:
    """``routing_demo.conf`` is installed with the package: no reliance on the current directory."""
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


def run(*command: str | Path, cwd: Path, timeout: float = 60) -> str:
    completed = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert completed.returncode == 0, f"{command}:\n{completed.stdout}\n{completed.stderr}"
    return completed.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built by pip from a copy of the sources.

    A copy, because setuptools builds in the source tree and a stale ``build/``
    left there by an earlier layout would be packed into the wheel as well.
    """
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", work, source, cwd=work)
    (built,) = work.glob("routing_demo-*.whl")
    return built


def test_when_the_wheel_is_built_then_conf_is_inside_routing_demo(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/", 1)[0] for name in names}
    assert "conf" not in top_level
    assert {name for name in top_level if not name.endswith(".dist-info")} == {"routing_demo"}
    assert "routing_demo/conf/celeryconfig.py" in names
    assert "routing_demo/conf/experiments/topic.py" in names


def test_when_the_wheel_is_built_then_every_module_of_the_tree_is_in_it(wheel: Path) -> None:
    """The package list in pyproject.toml is explicit: a new subpackage must be added there."""
    expected = {
        f"{INSTALLED_AS[top]}/{path.relative_to(ROOT / top).as_posix()}"
        for top in INSTALLED_AS
        for path in (ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    packed = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    assert sorted(expected - packed) == []
    assert sorted(packed - expected) == []


def test_when_installed_from_the_wheel_then_the_app_loads_its_settings(
    wheel: Path, tmp_path: Path
) -> None:
    """A fresh virtual environment with only the wheel installed: the app finds
    ``routing_demo.conf.celeryconfig``, and no top-level ``conf`` exists.

    The dependencies come from this environment, through a path line, so that the
    test needs no package index; a path line runs none of this environment's
    ``.pth`` files, so its editable ``routing_demo`` stays out of sight.
    """
    env = tmp_path / "venv"
    venv.create(env, with_pip=False)
    python = env / "bin" / "python"
    pip_install = ("-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index")
    run(sys.executable, *pip_install, wheel, cwd=tmp_path)
    site_packages = Path(
        run(
            python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path
        ).strip()
    )
    dependencies = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    (site_packages / "routing_demo_test_dependencies.pth").write_text("\n".join(dependencies))
    probe = (
        "import importlib, importlib.util, routing_demo.conf\n"
        "from routing_demo.celery import app\n"
        "print(app.conf.task_default_queue)\n"
        "print(routing_demo.conf.__file__)\n"
        "print(importlib.util.find_spec('conf'))\n"
        "importlib.import_module('routing_demo.conf.tls')\n"
        "importlib.import_module('routing_demo.conf.experiments.topic')\n"
    )
    environ_without_config = {
        key: value for key, value in os.environ.items() if key != "CELERY_CONFIG_MODULE"
    }
    completed = subprocess.run(
        [python, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ_without_config,
    )
    assert completed.returncode == 0, completed.stderr
    queue, conf_file, top_level_conf = completed.stdout.splitlines()
    assert queue == "default"
    assert Path(conf_file).is_relative_to(site_packages)
    assert top_level_conf == "None"

    # CELERY_CONFIG_MODULE still selects another settings module by name.
    completed = subprocess.run(
        [python, "-c", "from routing_demo.celery import app; print(app.conf.task_queues)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **environ_without_config,
            "CELERY_CONFIG_MODULE": "routing_demo.conf.experiments.topic",
        },
    )
    assert completed.returncode == 0, completed.stderr
    assert "arith_all" in completed.stdout
