"""A pause gate and a done-count for workers that have no remote control
(Dramatiq), over one fanout exchange in the bench's vhost.

Each worker process runs a :class:`GateServer` thread: ``pause`` closes the
gate that every task passes before it runs, ``resume`` opens it, and every
call is answered with the process's pid and the tasks it has finished. The
measuring child broadcasts with a :class:`GateClient` and collects one reply
per process, as ``celery inspect`` does for a Celery worker. Only py-amqp is
used: the gate adds one ``Event.wait`` on an open event per task.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

import amqp

__all__ = ["EXCHANGE", "GateClient", "GateServer", "amqp_connection"]

#: Fanout exchange the gate commands travel on (one per vhost, transient).
EXCHANGE = "bench.gate"


def amqp_connection(url: str) -> amqp.Connection:
    """A py-amqp connection to the first URL of a ``;``-separated list."""
    first = urlsplit(url.split(";")[0].strip())
    vhost = unquote(first.path[1:]) if len(first.path) > 1 else "/"
    connection = amqp.Connection(
        host=f"{first.hostname}:{first.port or 5672}",
        userid=unquote(first.username or "guest"),
        password=unquote(first.password or "guest"),
        virtual_host=vhost,
        connect_timeout=5,
    )
    connection.connect()
    return connection


class GateServer:
    """The worker side: the gate, the done-count and the control thread."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.open = threading.Event()
        self.open.set()
        self.done = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def passed(self) -> None:
        """Count one finished task."""
        with self._lock:
            self.done += 1

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="bench-gate", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Open the gate (no task may stay blocked at shutdown), end the thread."""
        self._stopping.set()
        self.open.set()

    def _serve(self) -> None:
        connection = amqp_connection(self.url)
        channel = connection.channel()
        channel.exchange_declare(EXCHANGE, "fanout", durable=False, auto_delete=False)
        queue = channel.queue_declare("", exclusive=True).queue
        channel.queue_bind(queue, EXCHANGE)

        def on_command(message: amqp.Message) -> None:
            command = json.loads(message.body)
            if command["op"] == "pause":
                self.open.clear()
            elif command["op"] == "resume":
                self.open.set()
            reply = {"id": command["id"], "pid": os.getpid(), "done": self.done}
            channel.basic_publish(
                amqp.Message(json.dumps(reply)), exchange="", routing_key=command["reply_to"]
            )

        channel.basic_consume(queue, callback=on_command, no_ack=True)
        try:
            while not self._stopping.is_set():
                try:
                    connection.drain_events(timeout=0.5)
                except TimeoutError:
                    continue
        finally:
            connection.close()


class GateClient:
    """The measuring side: broadcast a command, collect one reply per process."""

    def __init__(self, url: str, processes: int) -> None:
        self.processes = processes
        self.connection = amqp_connection(url)
        self.channel = self.connection.channel()
        self.channel.exchange_declare(EXCHANGE, "fanout", durable=False, auto_delete=False)
        self.reply_queue = self.channel.queue_declare("", exclusive=True).queue
        self._replies: list[dict[str, Any]] = []
        self.channel.basic_consume(
            self.reply_queue,
            callback=lambda message: self._replies.append(json.loads(message.body)),
            no_ack=True,
        )

    def close(self) -> None:
        self.connection.close()

    def call(self, op: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every process's reply to ``op`` (``pause``, ``resume``, ``progress``)."""
        ticket = uuid.uuid4().hex
        self._replies.clear()
        self.channel.basic_publish(
            amqp.Message(json.dumps({"op": op, "id": ticket, "reply_to": self.reply_queue})),
            exchange=EXCHANGE,
            routing_key="",
        )
        deadline = time.monotonic() + timeout
        while len([r for r in self._replies if r["id"] == ticket]) < self.processes:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{op}: not every worker process answered in {timeout:.1f}s")
            try:
                self.connection.drain_events(timeout=left)
            except TimeoutError:
                continue
        return [r for r in self._replies if r["id"] == ticket]

    def done(self) -> int:
        """Tasks finished, summed over every worker process."""
        return sum(reply["done"] for reply in self.call("progress"))
