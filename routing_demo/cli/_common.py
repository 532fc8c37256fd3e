"""What every ``routes`` command needs: the app, the task names, the broker's
coordinates, and one way to print for people or for scripts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from celery import Celery
from celery.bin.base import CLIContext
from kombu import Connection
from kombu.exceptions import OperationalError

from ..options import F, management_option, run_dir_option
from ..rabbitmq import ManagementAPI, management_url, queue_counts

__all__ = [
    "EXIT_FAILED",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_UNKNOWN",
    "app_option",
    "broker_errors",
    "broker_vhost",
    "emit_json",
    "generated_file_options",
    "get_app",
    "json_option",
    "live_queue_counts",
    "management_api",
    "management_option",
    "resolve_task",
    "run_dir_option",
    "task_call_options",
]

#: Exit codes shared by the commands (2 stays click's "usage error").
EXIT_OK = 0
#: A task failed, a worker did not start or stop, or the broker said no.
EXIT_FAILED = 1
#: ``verify`` found a difference between the topology and the broker.
EXIT_MISMATCH = 3
#: A task id nobody knows, a timeout, or a question the backend cannot answer.
EXIT_UNKNOWN = 4

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of text."
)


def task_call_options(function: F) -> F:
    """``TASK [ARGS]…`` plus ``--kwargs`` and the ``apply_async`` routing
    overrides, alike for the command that sends a task and the one that
    explains where it would go."""
    for decorator in reversed(
        [
            click.argument("task"),
            click.argument("args", nargs=-1, type=click.UNPROCESSED),
            click.option(
                "--kwargs", "kwargs_json", default="{}", help="Keyword arguments as a JSON object."
            ),
            click.option("--queue", help="apply_async(queue=…) override."),
            click.option("--routing-key", help="apply_async(routing_key=…) override."),
            click.option("--exchange", help="apply_async(exchange=…) override."),
        ]
    ):
        function = decorator(function)
    return function


def generated_file_options(example: str) -> Callable[[F], F]:
    """``-o/--output`` and ``--check`` for a command that generates a
    committed file (``example`` is its path in the repository)."""

    def decorate(function: F) -> F:
        function = click.option(
            "--check",
            is_flag=True,
            help="Exit 3 if --output's current content differs from what would be written.",
        )(function)
        return click.option(
            "-o",
            "--output",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"Write here (e.g. {example}) instead of standard output.",
        )(function)

    return decorate


def get_app(ctx: click.Context) -> Celery:
    """The app ``celery -A …`` loaded; routing_demo's own when run without it."""
    obj = ctx.find_object(CLIContext)
    if obj is not None and obj.app is not None:
        return obj.app
    from .. import celery_app

    return celery_app


def app_option(ctx: click.Context) -> str:
    """What ``celery -A …`` was given, so that a printed or spawned command
    loads the same app; the app's main name when run without it."""
    given = ctx.find_root().params.get("app")
    if given:
        return str(given)
    return get_app(ctx).main or "routing_demo"


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def resolve_task(app: Celery, name: str) -> str:
    """A registered task name from a full name or its last part (``add``)."""
    app.loader.import_default_modules()
    if name in app.tasks:
        return name
    matches = sorted(
        registered
        for registered in app.tasks
        if registered.rsplit(".", 1)[-1] == name and not registered.startswith("celery.")
    )
    # Prefer the app's own task modules (``include``) over shared tasks
    # that other installed packages register in every app.
    own = [m for m in matches if m.rsplit(".", 1)[0] in tuple(app.conf.include or ())]
    if len(own) == 1:
        return own[0]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(
        sorted(registered for registered in app.tasks if not registered.startswith("celery."))
    )
    if matches:
        raise click.BadParameter(f"{name!r} is ambiguous: {', '.join(matches)}", param_hint="TASK")
    raise click.BadParameter(f"no task {name!r} is registered (known: {known})", param_hint="TASK")


def parse_value(text: str) -> Any:
    """A command-line argument as JSON when it parses (``2``, ``[1, 2]``,
    ``null``), else the plain string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def broker_connection(app: Celery) -> Connection:
    """The broker connection the app would publish through (not connected)."""
    return app.connection_for_write()


def broker_errors(app: Celery) -> tuple[type[BaseException], ...]:
    """What publishing raises when the broker cannot be reached or refuses: a
    connection refused, a TLS certificate it or we reject, a login or a queue
    the user may not touch (``ACCESS_REFUSED``). Their messages name no
    credentials, so a command may print them."""
    connection = broker_connection(app)
    return (OperationalError, *connection.connection_errors, *connection.channel_errors)


def broker_vhost(app: Celery) -> str:
    with broker_connection(app) as connection:
        return connection.virtual_host or "/"


def management_api(app: Celery, url: str | None) -> ManagementAPI:
    """The management API of the app's broker: ``url`` when given, otherwise
    the broker's host and credentials on the management port. A ``url``
    without credentials (``RABBITMQ_MANAGEMENT_URL=http://host:15672``) takes
    the broker's: the user the app connects as is the one asking."""
    with broker_connection(app) as connection:
        broker_url = connection.as_uri(include_password=True)
    derived = management_url(broker_url)
    if not url:
        return ManagementAPI(derived)
    parts = urlsplit(url)
    if parts.username is None:
        credentials = urlsplit(derived).netloc.rpartition("@")[0]
        url = urlunsplit(parts._replace(netloc=f"{credentials}@{parts.netloc}"))
    return ManagementAPI(url)


def live_queue_counts(app: Celery, names: list[str]) -> dict[str, tuple[int, int]]:
    """Queue name -> (ready messages, consumers), asked over AMQP with a passive
    declare: the broker's answer of this instant, where the management API's
    statistics lag by up to its collection interval (5 s by default). Queues
    that do not exist are left out."""
    counts: dict[str, tuple[int, int]] = {}
    with broker_connection(app) as connection:
        for name in names:
            try:
                counts[name] = queue_counts(connection, name)
            except connection.channel_errors:
                continue
    return counts
