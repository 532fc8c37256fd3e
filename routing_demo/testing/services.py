"""What a test does when a service it needs is missing: skip locally, fail in CI.

A CI run must not turn green by testing nothing, so with ``CI`` set a
missing broker, backend or server binary fails the test instead.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

from ..local_services import install_hint

__all__ = ["IN_CI", "require_executable", "unavailable"]

#: True when the environment says this is a CI run.
IN_CI = bool(os.environ.get("CI"))


def unavailable(message: str) -> NoReturn:
    """Skip the test locally; fail it in CI."""
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_executable(path: str, what: str) -> str:
    """The full path of ``path`` (a name on ``PATH`` or a file), or skip/fail
    with the Debian package to install."""
    found = shutil.which(path)
    if not found:
        unavailable(install_hint(path, what))
    return found
