"""Command-line options that the ``routes`` commands, the demo and the
experiments share, so that each means the same everywhere."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

__all__ = ["management_option", "run_dir_option"]

F = TypeVar("F", bound=Callable[..., Any])

management_option = click.option(
    "--management-url",
    envvar="RABBITMQ_MANAGEMENT_URL",
    help="RabbitMQ management API, e.g. http://user:pass@host:15672 "
    "[default: the broker URL's host and credentials on port 15672].",
)


def run_dir_option(help_text: str) -> Callable[[F], F]:
    """``--run-dir``: where pidfiles and logs go (``ROUTING_DEMO_RUN_DIR``,
    default ``run``), the same for every command that starts workers."""
    return click.option(
        "--run-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("run"),
        show_default=True,
        envvar="ROUTING_DEMO_RUN_DIR",
        help=help_text,
    )
