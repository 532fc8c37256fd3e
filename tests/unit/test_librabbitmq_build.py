"""The pure parts of ``scripts/build-librabbitmq.py``: the setup.py patch, the
``deb-src`` entries it derives from apt's own, and the ``config.h`` it writes.
The build itself (PyPI, Debian, gcc) is exercised by running the script."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-librabbitmq.py"


@pytest.fixture(scope="module")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_librabbitmq", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The shape of librabbitmq 2.0.0's setup.py around the lines the script
#: patches (the lines themselves verbatim, the rest abridged).
SETUP_PY = """\
import os
from setuptools import setup, find_packages

BASE_PATH = os.path.dirname(__file__)
LRMQDIST = lambda *x: os.path.join(BASE_PATH, 'rabbitmq-c', *x)


def create_builder():
    libs = []
    defs = []

    class build(object):
        def run(self):
            try:
                try:
                    if not os.path.isdir(os.path.join(LRMQDIST(), '.git')):
                        print('- pull submodule rabbitmq-c...')
                        os.system('git clone https://example.invalid/rabbitmq-c.git')
                    if not os.path.isfile('config.h'):
                        if os.system('/bin/sh configure --disable-tools \\
                                --disable-docs'):
                            return
                finally:
                    pass
            finally:
                pass
    return defs, build


def find_make():
    return None


long_description = open(os.path.join(BASE_PATH, 'README.rst'), 'U').read()
if False:
    pass
elif find_make():
    packages = find_packages(exclude=['ez_setup', 'tests', 'tests.*'])
"""


def test_when_setup_py_patched_then_nothing_is_cloned_or_configured(build: ModuleType) -> None:
    patched = build.patch_setup_py(SETUP_PY)
    compile(patched, "setup.py", "exec")
    assert "'U'" not in patched
    assert "git clone" not in patched
    assert "/bin/sh configure" not in patched
    assert "raise RuntimeError('rabbitmq-c/config.h is missing')" in patched
    assert "defs = [('_PYRMQ_INLINE', '')]" in patched
    assert "elif find_make():" not in patched
    assert "packages = ['librabbitmq']" in patched


def test_when_setup_py_differs_then_patching_fails_loudly(build: ModuleType) -> None:
    with pytest.raises(build.BuildError, match=r"README\.rst"):
        build.patch_setup_py("from setuptools import setup\nsetup(name='x')\n")


SOURCES = """\
Types: deb
# a comment between fields
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://third-party.example/node
Suites: nodistro
Components: main
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/etc/apt/keyrings/d.gpg] http://mirror.example/d bookworm main non-free
deb http://old.example/debian bullseye main
"""


def test_when_apt_has_deb_entries_then_deb_src_mirrors_those_of_the_release(
    build: ModuleType,
) -> None:
    entries = build.deb_src_entries(
        {Path("debian.sources"): SOURCES, Path("sources.list"): ONE_LINE}, "bookworm"
    )
    assert entries == (
        "Types: deb-src\n"
        "URIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        "\n"
        "Types: deb-src\n"
        "URIs: http://mirror.example/d\n"
        "Suites: bookworm\n"
        "Components: main non-free\n"
        "Signed-By: /etc/apt/keyrings/d.gpg\n"
    )


def test_config_h_says_what_rabbitmq_c_cmake_finds_on_linux(build: ModuleType) -> None:
    header = build.config_h()
    assert "#define HAVE_POLL 1" in header
    assert "HAVE_SELECT" not in header  # CMake defines it only without poll(2)
    assert '#define AMQ_PLATFORM "' in header
