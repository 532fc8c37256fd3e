"""The ceiling: raw kombu publish and consume+ack rates, no Celery.

Same broker, same transport, same message shape as a Celery ``add`` task
(protocol 2 headers, a JSON body, persistent delivery to a durable queue),
so the gap to the Celery figures is Celery's own work.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

from kombu import Connection, Consumer, Exchange, Producer, Queue

__all__ = ["RAW_PREFETCH", "celery_like_message", "consume_ack_rate", "publish_rate", "raw_rounds"]

#: Prefetch for the raw consumer: generous, so the figure is the transport's.
RAW_PREFETCH = 256

_exchange = Exchange("bench.raw", type="direct", durable=True)
_queue = Queue("bench.raw", _exchange, routing_key="bench.raw", durable=True)


def celery_like_message(rng: random.Random) -> tuple[Any, dict[str, Any]]:
    """A body and headers shaped like the ones Celery sends for ``add(x, y)``."""
    x, y = rng.randint(0, 1000), rng.randint(0, 1000)
    task_id = str(uuid.UUID(int=rng.getrandbits(128)))
    headers = {
        "lang": "py",
        "task": "routing_demo.tasks.add",
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": f"({x}, {y})",
        "kwargsrepr": "{}",
        "origin": "gen1@bench",
        "ignore_result": True,
    }
    body = [[x, y], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return body, headers


def publish_rate(connection: Connection, count: int, rng: random.Random) -> float:
    """Messages per second for ``count`` persistent publishes on one channel."""
    messages = [celery_like_message(rng) for _ in range(count)]
    with connection.channel() as channel:
        producer = Producer(channel, exchange=_exchange, routing_key="bench.raw")
        started = time.perf_counter()
        for body, headers in messages:
            producer.publish(body, headers=headers, serializer="json", delivery_mode=2, retry=False)
        elapsed = time.perf_counter() - started
    return count / elapsed


def consume_ack_rate(connection: Connection, count: int, timeout: float = 60.0) -> float:
    """Messages per second to receive, decode and ack ``count`` queued messages."""
    received = 0

    def on_message(body: Any, message: Any) -> None:
        nonlocal received
        message.ack()
        received += 1

    with connection.channel() as channel:
        channel.basic_qos(0, RAW_PREFETCH, False)
        consumer = Consumer(channel, queues=[_queue], callbacks=[on_message], accept=["json"])
        deadline = time.monotonic() + timeout
        started = time.perf_counter()
        with consumer:
            while received < count:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"consumed {received} of {count} in {timeout:.0f}s")
                connection.drain_events(timeout=timeout)
        elapsed = time.perf_counter() - started
    return count / elapsed


def raw_rounds(
    url: str, *, count: int, rounds: int, seed: int, transport: str | None = None
) -> dict[str, list[float]]:
    """``rounds`` rounds of publish then consume+ack on a fresh queue; one
    warm-up round first (connection set-up, broker queue process start)."""
    rng = random.Random(seed)
    publish: list[float] = []
    consume: list[float] = []
    with Connection(url, transport=transport) as connection:
        connection.connect()
        _queue(connection.default_channel).declare()
        for index in range(rounds + 1):
            pub = publish_rate(connection, count, rng)
            con = consume_ack_rate(connection, count)
            if index:
                publish.append(pub)
                consume.append(con)
    return {"publish": publish, "consume_ack": consume}
