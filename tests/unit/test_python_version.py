"""The lowest Python that pyproject.toml claims is the one CI runs.

``requires-python`` is a promise that only a run on that version keeps: with
``CI`` set the interpreter must be exactly the lower bound (CI installs
Python 3.11), so a feature of a later version (``typing.Self`` is 3.11's)
cannot slip in unnoticed. Locally any interpreter that satisfies the bound
will do.
"""

from __future__ import annotations

import os
import platform
import sys
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def requires_python() -> SpecifierSet:
    return SpecifierSet(tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"])


def lowest_python() -> tuple[int, int]:
    """The ``>=`` bound of ``requires-python``, as (major, minor)."""
    bounds = [spec for spec in requires_python() if spec.operator == ">="]
    assert len(bounds) == 1, f"requires-python needs one >= bound, not {bounds}"
    release = Version(bounds[0].version).release
    assert len(release) == 2, f"requires-python's bound is a minor version (3.x), not {release}"
    return release[0], release[1]


def test_when_requires_python_is_read_then_this_interpreter_meets_its_bound() -> None:
    lowest = lowest_python()
    assert lowest >= (3, 11), "routing_demo.testing.process uses typing.Self"
    assert requires_python().contains(platform.python_version(), prereleases=True)
    if os.environ.get("CI"):
        # CI proves the lowest version claimed, not merely one that satisfies it.
        assert sys.version_info[:2] == lowest


def test_when_ruff_targets_a_version_then_it_is_the_lowest_python_claimed() -> None:
    major, minor = lowest_python()
    target = tomllib.loads(PYPROJECT.read_text())["tool"]["ruff"]["target-version"]
    assert target == f"py{major}{minor}"
