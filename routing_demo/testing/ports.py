"""Free loopback ports for private test services.

A private RabbitMQ node needs three ports (AMQP, Erlang distribution,
management HTTP); they are taken at the same offset of their ranges so one
number names the node. Two test sessions may look at the same moment, so the
search starts at a random offset and every port is checked by binding it.
"""

from __future__ import annotations

import random
import socket

__all__ = ["free_port_block", "free_ports", "port_is_free"]


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (checked by binding it).

    ``SO_REUSEADDR``, as servers set it, so that connections of a former
    listener still in ``TIME_WAIT`` do not count as busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(*ranges: range) -> tuple[int, ...]:
    """One free port from each range, all at the same offset.

    Raises ``RuntimeError`` when no offset has every port free.
    """
    if not ranges:
        raise ValueError("free_ports() needs at least one range")
    size = min(len(r) for r in ranges)
    start = random.randrange(size)
    for step in range(size):
        offset = (start + step) % size
        ports = tuple(r[offset] for r in ranges)
        if all(port_is_free(port) for port in ports):
            return ports
    raise RuntimeError(f"no free ports left in {', '.join(map(str, ranges))}")


def free_port_block(count: int, *ranges: range) -> tuple[int, ...]:
    """The first port of ``count`` consecutive free ports in each range, all at
    the same offset (a cluster's nodes listen on ``base``, ``base + 1``, …)."""
    if count < 1 or not ranges:
        raise ValueError("free_port_block() needs a count and at least one range")
    size = min(len(r) for r in ranges) - count + 1
    start = random.randrange(size)
    for step in range(size):
        offset = (start + step) % size
        ports = [r[offset + i] for r in ranges for i in range(count)]
        if all(port_is_free(port) for port in ports):
            return tuple(r[offset] for r in ranges)
    raise RuntimeError(f"no {count} free ports in a row in {', '.join(map(str, ranges))}")
