"""A ``SENT`` state recorded at publish time, so that an id the result backend
knows nothing about is told apart from a task that is queued but not started.

Celery reports ``PENDING`` for both: for a task still waiting in its queue
and for an id that never existed or whose result expired (``result_expires``).
Here the publishing process writes ``SENT`` (with the task name, exchange,
routing key and time) right after the message left, from Celery's
``after_task_publish`` signal. The worker then overwrites it with
``STARTED``/``SUCCESS`` as usual, so a backend that reads ``PENDING`` really
has no record of the id.

Only the Redis backend (and its Sentinel variant) takes part: it can write the
record *only if no record exists yet* (``SET NX``), which matters because a fast
worker may already have stored ``STARTED`` or ``SUCCESS`` before the publisher
gets here; a plain write would then turn a finished task back into ``SENT``.
The ``rpc://`` backend has no store another process could read, and other
backends are left alone. Nothing runs on the worker's side.

When the result itself expires (``result_expires``), the id reads
``PENDING`` again, like an id that was never sent. To tell the two apart the
publisher also leaves a smaller record that outlives the result: the id's
send time, under ``routing_demo-sent-<id>``, kept for
``routing_demo_sent_ids_expire`` seconds (a week by default; about 150 bytes
of Redis memory per task). ``sent_record`` reads it. An id older than that,
or sent by a process that does not record, still cannot be told from one
never sent.

The publisher does not wait for Redis either: the records go to a
``SentWriter``, a thread that writes whatever has queued up in one Redis
pipeline, so a send costs a queue append, not a Redis round trip. A record
lands within milliseconds of its send, and the writer flushes what is left
when the process exits. A task of a pipelined batch (``routing_demo.batch``)
is recorded only once RabbitMQ confirmed it.

Celery's ``after_task_publish`` signal is process-wide and names only the
task, so another app publishing in the same process (a test's app, an
application that imports this one) would fire it too. ``install`` therefore
gives the app ``SentStateAMQP``, whose publish marks which app is publishing,
and the receiver records only its own app's tasks, in its own app's backend.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from celery.backends.base import Backend
from celery.backends.redis import RedisBackend
from celery.signals import after_task_publish

__all__ = [
    "SENT",
    "SentStateAMQP",
    "SentWriter",
    "install",
    "publishing",
    "records_sent_state",
    "sent_ids_expire",
    "sent_record",
    "suppressed",
    "writer_for",
]

logger = logging.getLogger(__name__)

#: The state a published but not yet started task reads as.
SENT = "SENT"

#: Prefix of the long-lived record of an id's send (see the module's docstring).
SENT_ID_PREFIX = "routing_demo-sent-"

#: Seconds the record of an id's send is kept unless the app's
#: ``routing_demo_sent_ids_expire`` says otherwise: a week.
SENT_IDS_EXPIRE = 7 * 24 * 60 * 60

#: Set while a publish is only simulated (``routes explain``): nothing to record.
_suppressed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "routing_demo_sent_state_suppressed", default=False
)


#: The app whose task is being published in this context, if any.
_publishing_app: contextvars.ContextVar[Celery | None] = contextvars.ContextVar(
    "routing_demo_sent_state_publishing_app", default=None
)


@contextmanager
def publishing(app: Celery) -> Iterator[None]:
    """``app`` is the one publishing while the block runs (its
    ``after_task_publish`` receivers record SENT)."""
    token = _publishing_app.set(app)
    try:
        yield
    finally:
        _publishing_app.reset(token)


class SentStateAMQP(AMQP):
    """Celery's AMQP, with a publish that says which app is publishing while
    the ``after_task_publish`` receivers run."""

    def _create_task_sender(self) -> Any:
        send = super()._create_task_sender()
        app = self.app

        def send_task_message(*args: Any, **kwargs: Any) -> Any:
            with publishing(app):
                return send(*args, **kwargs)

        return send_task_message


class SentWriter:
    """Writes SENT records to Redis from a thread of its own, each batch of
    queued records in one pipeline (``SET … NX EX``).

    One per backend and process: after a fork the child starts its own
    thread on its first record. ``flush`` waits until everything queued so
    far is written; the process's exit flushes too.
    """

    #: Records written per pipeline at most.
    chunk = 1000

    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pid: int | None = None
        self._lock = threading.Lock()

    def add(self, key: bytes | str, value: Any, expires: float | None = None) -> None:
        """Queue one record, kept ``expires`` seconds (the backend's
        ``result_expires`` unless given); the thread writes it soon."""
        if self._pid != os.getpid():
            self._start()
        self._queue.put((key, value, self.backend.expires if expires is None else expires))

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record queued so far is written."""
        if self._pid != os.getpid():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, name="routing_demo-sent-writer", daemon=True).start()
            self._pid = os.getpid()
            atexit.register(self.flush)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while len(items) < self.chunk:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [item for item in items if isinstance(item, tuple)]
            if records:
                self._write(records)
            for item in items:
                if isinstance(item, threading.Event):
                    item.set()

    def _write(self, records: list[tuple[Any, Any, Any]]) -> None:
        try:
            pipe = self.backend.client.pipeline(transaction=False)
            for key, value, expires in records:
                pipe.set(key, value, nx=True, ex=int(expires) if expires else None)
            pipe.execute()
        except Exception:  # a lost SENT record leaves the task PENDING, nothing worse
            logger.warning("could not record SENT for %d tasks", len(records), exc_info=True)


#: One writer per backend object.
_writers: dict[int, SentWriter] = {}
_writers_lock = threading.Lock()


def writer_for(backend: RedisBackend) -> SentWriter:
    """The ``SentWriter`` of ``backend`` (made on first use)."""
    with _writers_lock:
        writer = _writers.get(id(backend))
        if writer is None or writer.backend is not backend:
            writer = _writers[id(backend)] = SentWriter(backend)
        return writer


def records_sent_state(backend: Backend) -> bool:
    """Whether ``backend`` can hold a ``SENT`` record without racing the worker."""
    return isinstance(backend, RedisBackend)


def sent_ids_expire(app: Celery) -> int:
    """Seconds ``app`` keeps the record of an id's send (0: not kept)."""
    return int(app.conf.get("routing_demo_sent_ids_expire", SENT_IDS_EXPIRE) or 0)


def sent_record(app: Celery, task_id: str) -> str | None:
    """When ``task_id`` was sent (ISO 8601, UTC), if this app's Redis backend
    still holds the record of it: it outlives the result and its SENT state."""
    backend = app.backend
    if not records_sent_state(backend):
        return None
    value = backend.client.get(SENT_ID_PREFIX + task_id)
    return value.decode() if isinstance(value, bytes) else value


@contextmanager
def suppressed() -> Iterator[None]:
    """Publish signals inside this block record nothing."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def _task_id(headers: dict[str, Any] | None, body: Any) -> str | None:
    # Task protocol 2 keeps the id in the headers, protocol 1 in the body.
    if headers and headers.get("id"):
        return headers["id"]
    if isinstance(body, dict):
        return body.get("id")
    return None


def install(app: Celery) -> None:
    """Record ``SENT`` for every task ``app`` publishes from this process.

    Call it before the app's first publish (it sets ``app.amqp_cls``).
    Idempotent: installing twice connects one receiver.
    """
    if not (isinstance(app.amqp_cls, type) and issubclass(app.amqp_cls, SentStateAMQP)):
        if "amqp" in app.__dict__:
            raise RuntimeError(f"install SENT recording before {app.main!r} publishes anything")
        app.amqp_cls = SentStateAMQP

    def record_sent(
        sender: str | None = None,
        headers: dict[str, Any] | None = None,
        body: Any = None,
        exchange: str | None = None,
        routing_key: str | None = None,
        **_: Any,
    ) -> None:
        if _suppressed.get() or _publishing_app.get() is not app:
            return
        backend = app.backend
        task_id = _task_id(headers, body)
        if task_id is None or not records_sent_state(backend):
            return
        meta = {
            "status": SENT,
            "result": None,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": task_id,
            "name": sender,
            "exchange": exchange,
            "routing_key": routing_key,
            "date_sent": datetime.now(UTC).isoformat(),
        }
        writer = writer_for(backend)
        key, value = backend.get_key_for_task(task_id), backend.encode(meta)
        keep_id = sent_ids_expire(app)

        def write() -> None:
            writer.add(key, value)
            if keep_id:
                writer.add(SENT_ID_PREFIX + task_id, meta["date_sent"], keep_id)

        from .batch import active_batch  # batch imports this module

        batch = active_batch(app)
        if batch is not None:
            batch.when_confirmed(task_id, write)
        else:
            write()

    after_task_publish.connect(
        record_sent, weak=False, dispatch_uid=f"routing_demo.sent_state:{id(app)}"
    )
