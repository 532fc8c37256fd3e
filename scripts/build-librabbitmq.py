#!/usr/bin/env python3
"""Build a librabbitmq wheel for the Python that runs this script.

librabbitmq 2.0.0 (the last release, on PyPI as an sdist only) does not
install on Python 3.11 as it is: its ``setup.py`` opens a file with mode
``'U'`` (gone since 3.11), and its build ``git clone``s rabbitmq-c and runs
autotools. Its C module also reaches into rabbitmq-c's private structures,
so the public headers of a distribution's ``librabbitmq-dev`` are not enough:
the rabbitmq-c *sources* have to be compiled into the extension.

This script takes both halves from the package registries only:

1. the librabbitmq sdist from PyPI, through ``pip download``;
2. rabbitmq-c 0.11 from Debian's source package ``librabbitmq``, through
   ``apt-get source`` (which also applies Debian's security patches). A
   ``deb-src`` entry mirroring the system's own ``deb`` entries is added
   when apt has none;

then patches ``setup.py`` (no ``'U'`` mode, no clone, no configure: a
small ``config.h`` stands in for the configure step), builds the wheel with
``pip wheel`` in a temporary directory, and leaves it in ``dist/``.

Run it with the interpreter the wheel is for, as root when a ``deb-src``
entry must be added::

    # Build dist/librabbitmq-2.0.0-cp311-…whl and install it into the venv.
    .venv/bin/python scripts/build-librabbitmq.py --install

    # Build only; a wheel already in dist/ for this Python is reused.
    .venv/bin/python scripts/build-librabbitmq.py

    # Throw the existing wheel away and build again.
    .venv/bin/python scripts/build-librabbitmq.py --force --install

Then choose the transport explicitly (``routing_demo.transports``): with a
plain ``amqp://`` URL kombu would switch to its own librabbitmq transport,
which cannot consume with kombu 5.7.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

#: The librabbitmq release this script knows how to patch.
LIBRABBITMQ_VERSION = "2.0.0"
#: Debian's source package for rabbitmq-c, and the upstream series the C
#: module was written against (0.11 still has the private fields it uses).
DEBIAN_SOURCE_PACKAGE = "librabbitmq"
RABBITMQ_C_SERIES = "0.11."
#: The rabbitmq-c sources that librabbitmq's setup.py compiles into the
#: extension (it lists them itself; they must all exist in the source tree).
RABBITMQ_C_FILES = (
    "amqp_api.c",
    "amqp_connection.c",
    "amqp_consumer.c",
    "amqp_framing.c",
    "amqp_hostcheck.c",
    "amqp_mem.c",
    "amqp_socket.c",
    "amqp_table.c",
    "amqp_tcp_socket.c",
    "amqp_time.c",
    "amqp_url.c",
)
#: Where the script adds its ``deb-src`` entries when apt has none.
DEB_SRC_FILE = Path("/etc/apt/sources.list.d/routing-demo-deb-src.sources")
#: The project root: ``dist/`` goes here unless ``--dist`` says otherwise.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class BuildError(RuntimeError):
    """A step failed; the message says which and what to do about it."""


def log(message: str) -> None:
    print(f"build-librabbitmq: {message}", flush=True)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output; on failure raise a
    :class:`BuildError` that names the step and shows the output's tail."""
    completed = subprocess.run(
        [str(arg) for arg in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-25:])
        raise BuildError(
            f"{what} failed (exit {completed.returncode}): {' '.join(map(str, argv))}\n{tail}"
        )
    return completed


# --- librabbitmq, from PyPI -------------------------------------------------------


def fetch_sdist(python: str, workdir: Path) -> Path:
    """Download and unpack the librabbitmq sdist; return its source tree.

    ``pip download`` prepares an sdist's metadata after downloading it, and
    that runs the very ``setup.py`` that fails on Python 3.11. With
    ``--no-clean`` pip keeps the unpacked tree it downloaded; the tree is
    taken from there, and the version checked in its ``PKG-INFO``.
    """
    download_dir = workdir / "sdist"
    pip_tmp = workdir / "pip-tmp"
    download_dir.mkdir()
    pip_tmp.mkdir()
    log(f"downloading librabbitmq=={LIBRABBITMQ_VERSION} (sdist) with pip")
    completed = run(
        [
            python,
            "-m",
            "pip",
            "download",
            "--no-clean",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            f"librabbitmq=={LIBRABBITMQ_VERSION}",
            "--dest",
            download_dir,
        ],
        what="pip download",
        env={**os.environ, "TMPDIR": str(pip_tmp)},
        check=False,
    )
    tarballs = sorted(download_dir.glob(f"librabbitmq-{LIBRABBITMQ_VERSION}.tar.gz"))
    if tarballs:  # a pip (or a librabbitmq) that no longer runs setup.py to download
        with tarfile.open(tarballs[0]) as archive:
            archive.extractall(workdir / "sdist-tree", filter="data")
        candidates = list((workdir / "sdist-tree").glob("*/Modules/_librabbitmq/connection.c"))
    else:
        candidates = list(pip_tmp.glob("**/Modules/_librabbitmq/connection.c"))
    trees = [path.parents[2] for path in candidates]
    trees = [tree for tree in trees if _sdist_version(tree) == LIBRABBITMQ_VERSION]
    if len(trees) != 1:
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-15:])
        raise BuildError(
            f"pip download did not leave one librabbitmq {LIBRABBITMQ_VERSION} source tree "
            f"(found {len(trees)}); is PyPI reachable?\n{tail}"
        )
    source = workdir / f"librabbitmq-{LIBRABBITMQ_VERSION}"
    shutil.copytree(trees[0], source)
    return source


def _sdist_version(tree: Path) -> str | None:
    try:
        text = (tree / "PKG-INFO").read_text()
    except FileNotFoundError:
        return None
    match = re.search(r"^Version: (\S+)$", text, re.MULTILINE)
    return match.group(1) if match else None


def patch_setup_py(text: str) -> str:
    """librabbitmq 2.0.0's ``setup.py``, made to build from the tree as given.

    - ``open(…, 'U')``: the mode was removed in Python 3.11; plain text mode
      already translates newlines.
    - ``build.run`` clones rabbitmq-c with git, runs autoreconf and
      configure: replaced by a check that ``rabbitmq-c/config.h`` (written by
      this script) is there.
    - The extension is only built when a ``make`` program is on ``PATH``
      (otherwise an empty package is installed, silently): always build it.
    - ``_PYRMQ_INLINE`` is ``__inline`` under gcc's default C99 inline
      semantics, which emits no symbol for those functions (the module then
      fails to import: "undefined symbol: basic_properties_to_PyDict"):
      define it empty, as ``connection.h`` itself does for clang.
    - ``find_packages`` also picks up the sdist's ``funtests`` directory and
      would install it as a top-level package: ship ``librabbitmq`` only.

    Each replacement must match exactly once, so a different ``setup.py``
    fails here instead of producing a broken wheel.
    """
    text = _replace_once(
        text,
        "open(os.path.join(BASE_PATH, 'README.rst'), 'U')",
        "open(os.path.join(BASE_PATH, 'README.rst'))",
    )
    fetch_and_configure = re.compile(
        r"^(?P<indent> +)if not os\.path\.isdir\(os\.path\.join\(LRMQDIST\(\), '\.git'\)\):\n"
        r".*?configure --disable-tools.*?return\n",
        re.DOTALL | re.MULTILINE,
    )
    text, count = fetch_and_configure.subn(
        lambda match: (
            f"{match['indent']}# rabbitmq-c arrives unpacked with its config.h:\n"
            f"{match['indent']}# nothing to clone, autoreconf or configure.\n"
            f"{match['indent']}if not os.path.isfile(LRMQDIST('config.h')):\n"
            f"{match['indent']}    raise RuntimeError('rabbitmq-c/config.h is missing')\n"
        ),
        text,
    )
    if count != 1:
        raise BuildError("setup.py: the rabbitmq-c clone/configure block was not found once")
    text = _replace_once(text, "elif find_make():", "else:")
    text = _replace_once(text, "    defs = []\n", "    defs = [('_PYRMQ_INLINE', '')]\n")
    return _replace_once(
        text,
        "find_packages(exclude=['ez_setup', 'tests', 'tests.*'])",
        "['librabbitmq']",
    )


def _replace_once(text: str, old: str, new: str) -> str:
    if text.count(old) != 1:
        raise BuildError(f"setup.py: expected {old!r} exactly once, found {text.count(old)}")
    return text.replace(old, new)


# --- rabbitmq-c, from Debian ----------------------------------------------------------


def _apt_knows_source() -> bool:
    completed = run(
        ["apt-cache", "showsrc", DEBIAN_SOURCE_PACKAGE], what="apt-cache showsrc", check=False
    )
    return completed.returncode == 0 and "Package:" in completed.stdout


def _os_codename() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except FileNotFoundError:
        text = ""
    match = re.search(r"^VERSION_CODENAME=\"?([\w-]+)\"?$", text, re.MULTILINE)
    if not match:
        raise BuildError("cannot tell the Debian release (VERSION_CODENAME in /etc/os-release)")
    return match.group(1)


#: A one-line apt entry: ``deb [option=value ...] uri suite [component ...]``.
_ONE_LINE_ENTRY = re.compile(
    r"^deb\s+(?:\[(?P<options>[^]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)(?P<components>.*)$"
)


def deb_src_entries(sources: dict[Path, str], codename: str) -> str:
    """deb822 ``deb-src`` stanzas mirroring the system's ``deb`` entries for
    ``codename`` (and its -updates/-security suites), so sources come from the
    same mirrors as the installed packages. Third-party repositories (other
    suite names) are left out: most serve no sources."""
    stanzas: list[str] = []
    for path, text in sources.items():
        if path.suffix == ".list":
            for line in text.splitlines():
                entry = _ONE_LINE_ENTRY.match(line.split("#", 1)[0].strip())
                if entry and entry["suite"].split("-")[0] == codename:
                    signed_by = re.search(r"signed-by=(\S+)", entry["options"] or "")
                    stanzas.append(
                        _stanza(
                            entry["uri"],
                            [entry["suite"]],
                            entry["components"].split(),
                            signed_by[1] if signed_by else None,
                        )
                    )
        elif path.suffix == ".sources":
            for block in re.split(r"\n\s*\n", text):
                fields = _deb822(block)
                if "deb" not in fields.get("Types", "").split():
                    continue
                if fields.get("Enabled", "yes").lower() == "no":
                    continue
                suites = [
                    s for s in fields.get("Suites", "").split() if s.split("-")[0] == codename
                ]
                if suites:
                    stanzas.append(
                        _stanza(
                            fields.get("URIs", ""),
                            suites,
                            fields.get("Components", "").split(),
                            fields.get("Signed-By"),
                        )
                    )
    return "\n".join(stanzas)


def _deb822(block: str) -> dict[str, str]:
    """The fields of one deb822 stanza; continuation lines (an embedded
    ``Signed-By`` key) stay attached to their field, indented as they were."""
    fields: dict[str, str] = {}
    key = None
    for line in block.splitlines():
        if line.startswith("#"):
            continue
        if line[:1].isspace() and key is not None:
            fields[key] += "\n" + line.rstrip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip()
            fields[key] = value.strip()
    return fields


def _stanza(uris: str, suites: list[str], components: list[str], signed_by: str | None) -> str:
    lines = [
        "Types: deb-src",
        f"URIs: {uris}",
        f"Suites: {' '.join(suites)}",
        f"Components: {' '.join(components)}",
    ]
    if signed_by:
        lines.append(f"Signed-By: {signed_by}")
    return "\n".join(lines) + "\n"


def ensure_deb_src() -> None:
    """Make ``apt-get source librabbitmq`` possible: add ``deb-src`` entries
    (root only) and refresh the source index, when apt knows no sources."""
    if _apt_knows_source():
        return
    apt_dir = Path("/etc/apt")
    system_sources = {
        path: path.read_text()
        for path in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]
        if path.is_file() and path.suffix in (".list", ".sources") and path != DEB_SRC_FILE
    }
    entries = deb_src_entries(system_sources, _os_codename())
    if not entries:
        raise BuildError(
            "no Debian 'deb' entry found to mirror as 'deb-src'; add a deb-src line for "
            "your release to /etc/apt/sources.list.d/ and run apt-get update"
        )
    if os.geteuid() != 0:
        raise BuildError(
            f"apt has no 'deb-src' entry for {DEBIAN_SOURCE_PACKAGE}; run this script as root "
            f"once (it writes {DEB_SRC_FILE}), or add these entries yourself:\n{entries}"
        )
    log(f"adding deb-src entries in {DEB_SRC_FILE}")
    DEB_SRC_FILE.write_text(
        "# deb-src entries mirroring this system's deb entries, written by routing_demo's\n"
        "# scripts/build-librabbitmq.py for `apt-get source librabbitmq`.\n\n" + entries
    )
    # Refresh only the new entries' indexes, leaving every other list alone.
    run(
        [
            "apt-get",
            "update",
            "-qq",
            "-o",
            f"Dir::Etc::sourcelist={DEB_SRC_FILE}",
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            "APT::Get::List-Cleanup=0",
        ],
        what="apt-get update (deb-src)",
    )
    if not _apt_knows_source():
        raise BuildError(f"apt still knows no source package {DEBIAN_SOURCE_PACKAGE!r}")


def source_versions() -> list[str]:
    """Versions of the source package apt knows in the 0.11 series, newest first."""
    completed = run(["apt-cache", "showsrc", DEBIAN_SOURCE_PACKAGE], what="apt-cache showsrc")
    versions = {
        match.group(1)
        for match in re.finditer(r"^Version: (\S+)$", completed.stdout, re.MULTILINE)
        if match.group(1).split(":")[-1].startswith(RABBITMQ_C_SERIES)
    }

    def compare(a: str, b: str) -> int:
        if a == b:
            return 0
        completed = run(["dpkg", "--compare-versions", a, "lt", b], what="dpkg", check=False)
        return -1 if completed.returncode == 0 else 1

    return sorted(versions, key=functools.cmp_to_key(compare), reverse=True)


def fetch_rabbitmq_c(workdir: Path) -> tuple[Path, str]:
    """Download and unpack (Debian patches applied) rabbitmq-c; return the tree
    and the Debian version used. A mirror may list a version whose files it
    no longer serves, so each known version is tried, newest first."""
    ensure_deb_src()
    versions = source_versions()
    if not versions:
        raise BuildError(f"apt knows no {DEBIAN_SOURCE_PACKAGE} {RABBITMQ_C_SERIES}x source")
    failures = []
    for version in versions:
        target = workdir / f"debian-{version}"
        target.mkdir()
        log(f"apt-get source {DEBIAN_SOURCE_PACKAGE}={version}")
        completed = run(
            ["apt-get", "source", "-qq", f"{DEBIAN_SOURCE_PACKAGE}={version}"],
            what="apt-get source",
            cwd=target,
            check=False,
        )
        trees = [path.parents[1] for path in target.glob("*/librabbitmq/amqp_private.h")]
        if completed.returncode == 0 and len(trees) == 1:
            return trees[0], version
        errors = [line for line in completed.stderr.splitlines() if line.startswith("E:")]
        failures.append(f"{version}: {errors[0] if errors else completed.stderr.strip()[-200:]}")
    raise BuildError(
        "no version of the Debian source package could be fetched:\n  " + "\n  ".join(failures)
    )


def config_h() -> str:
    """What rabbitmq-c's CMake build would write into config.h on Linux:
    poll(2) is there (so select is not used), and the platform's name."""
    return (
        "#ifndef CONFIG_H\n"
        "#define CONFIG_H\n"
        "#define HAVE_POLL 1\n"
        f'#define AMQ_PLATFORM "{platform.system()}"\n'
        "#endif /* CONFIG_H */\n"
    )


# --- the wheel -------------------------------------------------------------------------


def python_tag(python: str) -> str:
    completed = run(
        [python, "-c", "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')"],
        what="asking the target Python for its version",
    )
    return completed.stdout.strip()


def existing_wheel(dist: Path, tag: str) -> Path | None:
    wheels = sorted(dist.glob(f"librabbitmq-{LIBRABBITMQ_VERSION}-{tag}-{tag}-*.whl"))
    return wheels[-1] if wheels else None


def check_toolchain(python: str) -> None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        raise BuildError("no C compiler: apt-get install gcc")
    for tool in ("apt-get", "apt-cache", "dpkg-source"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found: this script needs Debian's apt and dpkg-dev")
    completed = run(
        [
            python,
            "-c",
            "import sysconfig, os; "
            "print(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))",
        ],
        what="locating Python.h",
    )
    if not Path(completed.stdout.strip()).is_file():
        raise BuildError(
            f"{completed.stdout.strip()} is missing: install the Python headers "
            "(e.g. apt-get install python3-dev)"
        )


def build_wheel(python: str, dist: Path, keep: bool) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="build-librabbitmq-"))
    try:
        source = fetch_sdist(python, workdir)
        rabbitmq_c, debian_version = fetch_rabbitmq_c(workdir)
        missing = [
            name for name in RABBITMQ_C_FILES if not (rabbitmq_c / "librabbitmq" / name).is_file()
        ]
        if missing:
            raise BuildError(f"rabbitmq-c {debian_version} lacks {', '.join(missing)}")
        log(f"using rabbitmq-c from Debian {DEBIAN_SOURCE_PACKAGE} {debian_version}")
        shutil.copytree(rabbitmq_c, source / "rabbitmq-c")
        (source / "rabbitmq-c" / "config.h").write_text(config_h())
        setup_py = source / "setup.py"
        setup_py.write_text(patch_setup_py(setup_py.read_text()))
        log("building the wheel (pip wheel)")
        started = time.perf_counter()
        out = workdir / "wheel"
        run(
            [
                python,
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--disable-pip-version-check",
                "--wheel-dir",
                out,
                source,
            ],
            what="pip wheel",
            env={**os.environ, "MAKEFLAGS": "-j2"},
        )
        wheels = list(out.glob("librabbitmq-*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"pip wheel left {len(wheels)} wheels in {out}")
        log(f"compiled in {time.perf_counter() - started:.0f} s")
        dist.mkdir(parents=True, exist_ok=True)
        target = dist / wheels[0].name
        shutil.copy2(wheels[0], target)
        return target
    finally:
        if keep:
            log(f"kept the build directory {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def install(python: str, wheel: Path, force: bool) -> None:
    log(f"installing {wheel.name}")
    run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            *(["--force-reinstall", "--no-deps"] if force else []),
            wheel,
        ],
        what="pip install",
    )
    completed = run(
        [python, "-c", "import librabbitmq; print(librabbitmq.__version__)"],
        what="importing the installed librabbitmq",
    )
    log(f"librabbitmq {completed.stdout.strip()} imports in {python}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build-librabbitmq",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "examples:\n"
            "  # Build (or reuse) dist/librabbitmq-*.whl and install it into the venv.\n"
            "  .venv/bin/python scripts/build-librabbitmq.py --install\n"
            "  # Rebuild even when a wheel for this Python is already in dist/.\n"
            "  .venv/bin/python scripts/build-librabbitmq.py --force --install\n"
        ),
    )
    parser.add_argument(
        "--install", action="store_true", help="pip install the wheel into this Python"
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild (and reinstall) even if a wheel exists"
    )
    parser.add_argument(
        "--dist",
        type=Path,
        default=PROJECT_ROOT / "dist",
        help="where the wheel goes (default: %(default)s)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary build directory for inspection"
    )
    return parser


def main(args: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(args)
    python = sys.executable
    started = time.perf_counter()
    try:
        tag = python_tag(python)
        wheel = None if options.force else existing_wheel(options.dist, tag)
        if wheel is not None:
            log(f"reusing {wheel} (--force rebuilds)")
        else:
            check_toolchain(python)
            wheel = build_wheel(python, options.dist, options.keep)
            log(f"wrote {wheel}")
        if options.install:
            install(python, wheel, options.force)
    except BuildError as exc:
        print(f"build-librabbitmq: error: {exc}", file=sys.stderr)
        return 1
    log(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
