"""Revokes written to the worker's state file the moment they arrive.

Celery keeps revoked ids in memory. With ``--statedb`` a worker loads them at
start, but writes them only at a clean exit (an ``atexit`` hook of its
``StateDB`` step): a worker killed with SIGKILL (the OOM killer, ``docker
kill``, a lost host) forgets every revoke it received, and the messages it held
unacknowledged (``task_acks_late``) come back to it on restart and run. Here
the remote control commands that add ids to the revoked set are Celery's own,
followed by a write of the state file. Workers load this module through the
``imports`` setting (Celery's way to add control commands); a worker started
without ``--statedb`` is unaffected.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from celery.worker import control

__all__ = ["PERSISTING_COMMANDS", "persist_revoked"]

logger = logging.getLogger(__name__)

#: The control commands that grow the revoked set: ``revoke``, ``terminate``
#: (a revoke that also stops the running task) and ``hello`` (a starting
#: worker's mingle request, which hands over that worker's revoked ids).
PERSISTING_COMMANDS = ("revoke", "terminate", "hello")


def persist_revoked(state: Any) -> None:
    """Write the worker's revoked ids to its ``--statedb`` file now, if it has one.

    ``state`` is the control command's: its consumer's ``controller`` is the
    worker, whose ``_persistence`` Celery's ``StateDB`` step set (``None``
    without ``--statedb``). A failed write is logged: the revoke itself holds
    in memory either way.
    """
    worker = getattr(state.consumer, "controller", None)
    persistence = getattr(worker, "_persistence", None)
    if persistence is None:
        return
    try:
        persistence.sync()
    except Exception:
        logger.exception("could not write revoked ids to %s", persistence.filename)


def _persisting(name: str) -> None:
    """Re-register Celery's control command ``name`` so that every call is
    followed by ``persist_revoked``; same name, signature and help."""
    celery_command: Callable[..., Any] = control.Panel.data[name]
    if getattr(celery_command, "persists_revoked", False):
        return  # already wrapped
    meta = control.Panel.meta[name]

    @functools.wraps(celery_command)
    def command(state: Any, *args: Any, **kwargs: Any) -> Any:
        reply = celery_command(state, *args, **kwargs)
        persist_revoked(state)
        return reply

    command.persists_revoked = True  # type: ignore[attr-defined]
    control.Panel.register(
        command,
        name=name,
        alias=meta.alias,
        type=meta.type,
        visible=meta.visible,
        default_timeout=meta.default_timeout,
        help=meta.help,
        signature=meta.signature,
        args=meta.args,
        variadic=meta.variadic,
    )


for _name in PERSISTING_COMMANDS:
    _persisting(_name)
