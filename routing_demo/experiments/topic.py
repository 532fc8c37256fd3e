"""``topic``: routing keys matched against ``arith.#`` and ``*.add`` bindings.

Two workers: ``all`` consumes ``arith_all`` (bound with ``arith.#``),
``addonly`` consumes ``arith_add`` (bound with ``*.add``). add is published
as ``arith.add``, which both bindings match, so every add runs twice: once
on each worker. sub is published as ``arith.sub``: only ``arith_all``. A few
extra tasks carry explicit keys: ``calc.add`` (only ``*.add`` matches) and
``calc.sub`` (nothing matches: the alternate exchange puts it in
``unroutable``).

How a key matches is asked of RabbitMQ itself: the driver binds scratch
queues with the same patterns to a scratch topic exchange, publishes one
message per key and reads which queues got which.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter

from kombu import Connection, Exchange, Producer, Queue

from .lab import ADD, SUB, Experiment, Lab, NodeSpec, Outcome

#: Binding patterns of the two task queues, plus one more for contrast.
PATTERNS = ("arith.#", "*.add", "arith.*")
#: Routing keys whose matches the report shows.
KEYS = ("arith.add", "arith.sub", "calc.add", "calc.sub", "arith", "arith.add.fast")
#: Tasks sent with their route's key (``arith.add`` / ``arith.sub``).
TASKS = 12
#: Tasks sent with an explicit key: (task, routing key, how many).
EXPLICIT = ((ADD, "calc.add", 2), (SUB, "calc.sub", 1))


def topic_matches(broker_url: str, patterns: tuple[str, ...], keys: tuple[str, ...]) -> dict:
    """Routing key -> the patterns RabbitMQ matched it with, on a scratch
    topic exchange (nothing of the experiment's topology is touched)."""
    tag = uuid.uuid4().hex[:8]
    matches: dict[str, list[str]] = {key: [] for key in keys}
    # Publisher confirms: each publish returns once the broker routed it.
    with Connection(broker_url, transport_options={"confirm_publish": True}) as connection:
        channel = connection.channel()
        exchange = Exchange(f"routing_demo.probe-{tag}", type="topic", durable=False)(channel)
        exchange.declare()
        queues = {
            pattern: Queue(f"probe-{tag}-{index}", exchange, routing_key=pattern, exclusive=True)(
                channel
            )
            for index, pattern in enumerate(patterns)
        }
        for queue in queues.values():
            queue.declare()
        producer = Producer(channel)
        for key in keys:
            producer.publish(key, exchange=exchange, routing_key=key, serializer="json")
        for pattern, queue in queues.items():
            while (message := queue.get(no_ack=True, accept=["json"])) is not None:
                matches[message.payload].append(pattern)
        exchange.delete()
    return matches


def drive(lab: Lab, outcome: Outcome, seed: int) -> None:
    outcome.findings["bindings"] = {"arith_all": "arith.#", "arith_add": "*.add"}
    outcome.findings["matches (asked of RabbitMQ)"] = matches = topic_matches(
        lab.broker_url, PATTERNS, KEYS
    )
    lab.start([NodeSpec("all", ("arith_all",)), NodeSpec("addonly", ("arith_add",))])
    rng = random.Random(seed)
    routed = Counter(rng.choice((ADD, SUB)) for _ in range(TASKS))
    for name, count in sorted(routed.items()):
        for _ in range(count):
            lab.client.send_task(name, (rng.randint(0, 99), rng.randint(0, 99)))
    for name, key, count in EXPLICIT:
        for _ in range(count):
            lab.client.send_task(name, (1, 1), routing_key=key)
    outcome.sent = TASKS + sum(count for *_, count in EXPLICIT)

    calc_add = sum(count for name, key, count in EXPLICIT if key == "calc.add")
    unmatched = sum(count for _, key, count in EXPLICIT if not matches.get(key, ["?"]))
    expected = {
        "all": {ADD: routed[ADD], SUB: routed[SUB]},
        "addonly": {ADD: routed[ADD] + calc_add, SUB: 0},
    }
    lab.wait_for_totals(
        lambda totals: all(
            totals.get(base, {}).get(task, 0) >= count
            for base, ran in expected.items()
            for task, count in ran.items()
        )
    )
    lab.wait_for_depth("unroutable", unmatched)
    lab.tally(outcome)
    into = {
        "arith_all": routed[ADD] + routed[SUB],
        "arith_add": routed[ADD] + calc_add,
        "unroutable": unmatched,
    }
    outcome.queues = lab.broker_counters(
        ("arith_all", "arith_add", "unroutable"),
        published=into,
        delivered={"arith_all": into["arith_all"], "arith_add": into["arith_add"]},
    )
    outcome.findings["published per route"] = {
        "arith.add": routed[ADD],
        "arith.sub": routed[SUB],
        **{key: count for _, key, count in EXPLICIT},
    }

    ran = outcome.tallies
    outcome.check(
        "RabbitMQ matched each key as the patterns say",
        matches
        == {
            "arith.add": ["arith.#", "*.add", "arith.*"],
            "arith.sub": ["arith.#", "arith.*"],
            "calc.add": ["*.add"],
            "calc.sub": [],
            "arith": ["arith.#"],
            "arith.add.fast": ["arith.#"],
        },
        matches,
    )
    outcome.check("the add-only queue's worker ran no sub", ran["addonly"].get("sub", 0) == 0, ran)
    outcome.check(
        "every arith.add ran on both workers (one copy per matching queue)",
        ran["all"].get("add") == routed[ADD]
        and ran["addonly"].get("add") == routed[ADD] + calc_add,
        ran,
    )
    outcome.check("every arith.sub ran once, on 'all'", ran["all"].get("sub") == routed[SUB], ran)
    outcome.check(
        "calc.sub matched nothing and sits in unroutable",
        outcome.queues["unroutable"].ready == unmatched == 1,
        outcome.queues["unroutable"],
    )
    outcome.check_published("the broker's counters agree", into)


EXPERIMENT = Experiment(
    name="topic",
    title="topic exchange: arith.# takes add and sub, *.add takes only add",
    config_module="routing_demo.conf.experiments.topic",
    drive=drive,
)
