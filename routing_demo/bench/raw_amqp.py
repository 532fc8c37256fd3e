"""Safe publishing with py-amqp alone: the ceilings for a confirmed send.

Persistent messages shaped like Celery's ``add`` (``raw.celery_like_message``)
to a durable queue of the measured queue type, two ways:

- ``confirm-each``: ``basic_publish_confirm``, one message at a time, each
  waiting for its ``basic.ack``: what a confirmed ``apply_async`` can reach;
- ``pipelined``: ``confirm.select``, every message published without
  waiting, ``basic.ack``/``basic.nack`` (``multiple`` too) collected through
  ``channel.events`` as they come, then a wait for the last: the fastest
  publish that still knows every message reached the queue.
"""

from __future__ import annotations

import json
import random
import select
import time
from typing import Any

import amqp

from .peers.gate import amqp_connection
from .raw import celery_like_message

__all__ = ["MODES", "PipelinedConfirms", "publish_confirm_each", "publish_pipelined", "rounds"]

#: The publish modes, by measurement suffix.
MODES = ("confirm-each", "pipelined")

_QUEUE = "bench.raw-amqp"


def _messages(count: int, rng: random.Random) -> list[amqp.Message]:
    out = []
    for _ in range(count):
        body, headers = celery_like_message(rng)
        out.append(
            amqp.Message(
                json.dumps(body),
                content_type="application/json",
                content_encoding="utf-8",
                application_headers=headers,
                delivery_mode=2,
            )
        )
    return out


def publish_confirm_each(channel: Any, messages: list[amqp.Message]) -> float:
    """Seconds to publish every message, each confirmed before the next."""
    started = time.perf_counter()
    for message in messages:
        channel.basic_publish_confirm(message, exchange="", routing_key=_QUEUE, confirm_timeout=30)
    return time.perf_counter() - started


class PipelinedConfirms:
    """Which delivery tags the broker has confirmed (``multiple`` included)."""

    def __init__(self) -> None:
        self.pending: dict[int, None] = {}
        self.nacked = 0

    def sent(self, tag: int) -> None:
        self.pending[tag] = None

    def settle(self, tag: int, multiple: bool, *, nack: bool = False) -> None:
        if multiple:
            while self.pending:
                first = next(iter(self.pending))
                if first > tag:
                    break
                del self.pending[first]
                self.nacked += nack
        elif tag in self.pending:
            del self.pending[tag]
            self.nacked += nack


def publish_pipelined(
    connection: amqp.Connection, channel: Any, messages: list[amqp.Message]
) -> float:
    """Seconds to publish every message and have every confirm in hand."""
    confirms = PipelinedConfirms()
    channel.events["basic_ack"].add(confirms.settle)
    channel.events["basic_nack"].add(
        lambda tag, multiple: confirms.settle(tag, multiple, nack=True)
    )
    started = time.perf_counter()
    for tag, message in enumerate(messages, start=1):
        channel.basic_publish(message, exchange="", routing_key=_QUEUE)
        confirms.sent(tag)
        # Read the confirms that have arrived, never waiting for one.
        if tag % 64 == 0 and select.select([connection.sock], [], [], 0)[0]:
            connection.drain_events(timeout=0.01)
    deadline = time.monotonic() + 60
    while confirms.pending:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(confirms.pending)} publishes never confirmed")
        connection.drain_events(timeout=5)
    elapsed = time.perf_counter() - started
    if confirms.nacked:
        raise RuntimeError(f"the broker refused {confirms.nacked} publishes (basic.nack)")
    return elapsed


def rounds(
    url: str, *, mode: str, count: int, rounds: int, seed: int, queue_type: str = "classic"
) -> dict[str, list[float]]:
    """``rounds`` timed rounds (after a smaller warm-up) of ``count`` publishes
    in ``mode``; the queue is purged between rounds, outside the timing."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    rng = random.Random(seed)
    connection = amqp_connection(url)
    try:
        setup = connection.channel()
        arguments = {"x-queue-type": queue_type} if queue_type != "classic" else None
        setup.queue_declare(_QUEUE, durable=True, auto_delete=False, arguments=arguments)
        publish: list[float] = []
        for index in range(rounds + 1):
            size = count if index else max(count // 5, 50)
            messages = _messages(size, rng)
            channel = connection.channel()
            if mode == "confirm-each":
                elapsed = publish_confirm_each(channel, messages)
            else:
                channel.confirm_select()
                elapsed = publish_pipelined(connection, channel, messages)
            channel.close()
            setup.queue_purge(_QUEUE)
            if index:
                publish.append(size / elapsed)
        setup.queue_delete(_QUEUE)
        return {"publish": publish}
    finally:
        connection.close()
