"""The ceiling under Celery: raw kombu publish and consume+ack rates on one broker.

No Celery, no serialization: a fixed body is published to a throw-away queue
through the default exchange, then consumed and acknowledged one message at
a time. Whatever Celery adds (routing, task protocol, pool) costs relative to
these figures. The transport follows the URL's scheme as the project chooses
it (``routing_demo.transports``): ``pyamqp://`` for py-amqp,
``librabbitmq://`` for librabbitmq with the kombu 5.7 adapter.

Run from the project root, e.g. both transports side by side on the local
broker (each round publishes then consumes ``--count`` messages)::

    .venv/bin/python benchmarks/raw_kombu.py \\
        pyamqp://guest:guest@127.0.0.1:5672// \\
        librabbitmq://guest:guest@127.0.0.1:5672// --count 20000 --rounds 3

Caveats: producer and consumer share one process and the machine with the
broker; messages are transient (``delivery_mode=1``) in a non-durable queue,
so the disk is not measured; figures are medians over rounds, and only their
ratios carry over to another machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from kombu import Connection, Consumer, Producer, Queue

from routing_demo.transports import broker_transport_for

__all__ = ["RawRates", "main", "raw_rates"]

#: Messages consumed per ``basic.qos`` window: enough that the consumer never
#: waits on the broker between acknowledgements.
DEFAULT_PREFETCH = 200


@dataclass(frozen=True)
class RawRates:
    """Median rates over ``rounds`` rounds of ``count`` messages each.

    ``*_per_s`` are wall-clock rates; ``*_cpu_us`` the client's own CPU time
    per message, which depends less on what else the machine is running.
    """

    url: str
    transport: str
    count: int
    rounds: int
    body_size: int
    publish_per_s: float
    consume_ack_per_s: float
    publish_cpu_us: float
    consume_ack_cpu_us: float


def raw_rates(
    broker_url: str,
    count: int = 20_000,
    *,
    rounds: int = 3,
    body_size: int = 100,
    prefetch: int = DEFAULT_PREFETCH,
) -> RawRates:
    """Publish ``count`` messages, then consume and ack them; repeat ``rounds``
    times on a queue of its own (deleted afterwards) and return the medians."""
    if count < 1 or rounds < 1:
        raise ValueError("count and rounds must be at least 1")
    body = b"x" * body_size
    publish: list[tuple[float, float]] = []
    consume: list[tuple[float, float]] = []
    with Connection(broker_url, transport=broker_transport_for(broker_url)) as connection:
        connection.ensure_connection(max_retries=1)
        channel = connection.channel()
        queue = Queue(f"raw-kombu-{uuid.uuid4().hex[:8]}", durable=False, channel=channel)
        queue.declare()
        try:
            producer = Producer(channel)
            for _ in range(rounds):
                publish.append(_publish(producer, queue.name, body, count))
                consume.append(_consume_ack(connection, queue, count, prefetch))
        finally:
            queue.delete()
            channel.close()
        transport = connection.transport.driver_name
    return RawRates(
        url=connection.as_uri(),
        transport=transport,
        count=count,
        rounds=rounds,
        body_size=body_size,
        publish_per_s=statistics.median(count / wall for wall, _ in publish),
        consume_ack_per_s=statistics.median(count / wall for wall, _ in consume),
        publish_cpu_us=statistics.median(cpu * 1e6 / count for _, cpu in publish),
        consume_ack_cpu_us=statistics.median(cpu * 1e6 / count for _, cpu in consume),
    )


def _publish(producer: Producer, routing_key: str, body: bytes, count: int) -> tuple[float, float]:
    """Wall and CPU seconds to publish ``count`` messages."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for _ in range(count):
        producer.publish(
            body,
            routing_key=routing_key,
            content_type="application/octet-stream",
            content_encoding="binary",
            delivery_mode=1,
        )
    return time.perf_counter() - started, time.process_time() - cpu_started


def _consume_ack(
    connection: Connection, queue: Queue, count: int, prefetch: int
) -> tuple[float, float]:
    """Wall and CPU seconds to receive and acknowledge ``count`` messages."""
    received = 0

    def on_message(message: object) -> None:
        nonlocal received
        message.ack()  # type: ignore[attr-defined]
        received += 1

    channel = connection.channel()
    try:
        consumer = Consumer(channel, [queue], on_message=on_message, prefetch_count=prefetch)
        started, cpu_started = time.perf_counter(), time.process_time()
        with consumer:
            while received < count:
                connection.drain_events(timeout=10)
        return time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        channel.close()


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raw_kombu",
        description="Raw kombu publish and consume+ack rates, one line per broker URL.",
        epilog=(
            "example:\n"
            "  # py-amqp and librabbitmq on the same broker, same run.\n"
            "  .venv/bin/python benchmarks/raw_kombu.py pyamqp://guest:guest@127.0.0.1// \\\n"
            "      librabbitmq://guest:guest@127.0.0.1// --count 20000\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("urls", nargs="+", metavar="URL", help="broker URL (scheme = transport)")
    parser.add_argument("--count", type=int, default=20_000, help="messages per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--body-size", type=int, default=100, help="bytes per message body")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    options = parser.parse_args(args)

    results = [
        raw_rates(url, options.count, rounds=options.rounds, body_size=options.body_size)
        for url in options.urls
    ]
    if options.json:
        import json

        for result in results:
            print(json.dumps(asdict(result)))
        return 0
    base = results[0]
    print(
        f"{'transport':<12} {'publish/s':>10} {'consume+ack/s':>14} {'vs first':>12}"
        f" {'publish CPU':>12} {'consume CPU':>12}"
    )
    for result in results:
        ratio = (
            f"{result.publish_per_s / base.publish_per_s:.2f}/"
            f"{result.consume_ack_per_s / base.consume_ack_per_s:.2f}"
        )
        print(
            f"{result.transport:<12} {result.publish_per_s:>10,.0f} "
            f"{result.consume_ack_per_s:>14,.0f} {ratio:>12}"
            f" {result.publish_cpu_us:>9.1f} us {result.consume_ack_cpu_us:>9.1f} us"
        )
    print(f"({base.count} messages of {base.body_size} B per round, median of {base.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
