"""The benchmark: what routing, each setting and each transport cost, measured
side by side in one run on the local broker. See ``benchmarks/README.md``.

``python -m routing_demo.bench --help``. Importing this package measures,
connects and starts nothing; ``bench`` (the click command) and ``main`` are
loaded on first use, so the measuring child processes do not import click.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bench", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
