"""``quorum``: add and sub on quorum queues, publisher confirms, and countdowns.

Two workers (``-Q add``, ``-Q sub``) on quorum queues bound to a *topic*
exchange. A seeded mix of add and sub runs at once; one add with
``countdown`` and one sub with ``eta`` travel through Celery's native delayed
delivery: published to ``celery_delayed_27``, they fall through the
``celery_delayed_<n>`` quorum queues whose TTLs add up to the delay, then
``celery_delayed_delivery`` hands them to ``routing_demo.quorum`` with a
``#.add``/``#.sub`` binding. The worker never holds them while they wait
(its ``inspect scheduled`` stays empty) and runs them after their ETA.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

from kombu.transport.native_delayed_delivery import calculate_routing_key

from .lab import ADD, SUB, Experiment, Lab, NodeSpec, Outcome, short

EXCHANGE = "routing_demo.quorum"
TASKS = 8
#: Seconds each delayed task waits; its binary digits pick the delay queues
#: (3 = 2 s in ``celery_delayed_1`` + 1 s in ``celery_delayed_0``).
DELAY = 3


def _delay_queues(seconds: int) -> list[str]:
    """The ``celery_delayed_<n>`` queues a ``seconds`` delay passes through,
    read from kombu's own routing key (one bit per level, highest first)."""
    bits = calculate_routing_key(seconds, "x").split(".")[:-1]
    return [f"celery_delayed_{len(bits) - 1 - i}" for i, bit in enumerate(bits) if bit == "1"]


def _channels_in_confirm_mode(lab: Lab) -> int:
    return sum(bool(channel.get("confirm")) for channel in lab.management.channels(lab.vhost))


def drive(lab: Lab, outcome: Outcome, seed: int) -> None:
    lab.start([NodeSpec("add", ("add",)), NodeSpec("sub", ("sub",))])
    rng = random.Random(seed)
    now = [(rng.choice((ADD, SUB)), (rng.randint(0, 99), rng.randint(0, 99))) for _ in range(TASKS)]
    immediate = [(name, lab.client.send_task(name, args)) for name, args in now]
    sent_at = lab.client.now()
    delayed = {
        "add countdown": (ADD, lab.client.send_task(ADD, (40, 2), countdown=DELAY), DELAY),
        # ETA one second beyond: Celery turns it into a whole-second countdown.
        "sub eta": (
            SUB,
            lab.client.send_task(SUB, (50, 8), eta=sent_at + timedelta(seconds=DELAY + 1)),
            DELAY,
        ),
    }
    # Right after sending, the worker holds no ETA task: the broker does.
    scheduled = lab._inspect().scheduled() or {}
    held_by_workers = sum(len(tasks) for tasks in scheduled.values())
    ran_on = Counter()
    for name, result in immediate:
        result.get(timeout=lab.timeout)
        ran_on[short(name), lab.base_of(result.worker)] += 1
    ran_late = {}
    for label, (name, result, _) in delayed.items():
        result.get(timeout=lab.timeout)
        ran_on[short(name), lab.base_of(result.worker)] += 1
        ran_late[label] = result.date_done >= sent_at + timedelta(seconds=DELAY)
    outcome.sent = TASKS + len(delayed)
    lab.tally(outcome)

    per_queue = Counter(short(name) for name, _ in now)
    with_delayed = per_queue + Counter(short(name) for name, *_ in delayed.values())
    ladder = _delay_queues(DELAY)
    outcome.queues = lab.broker_counters(
        ["add", "sub", *ladder],
        # Dead-lettered arrivals (the last hops of the ladder) are not counted
        # as publishes: the first delay queue and the deliveries are.
        published={**per_queue, ladder[0]: len(delayed)},
        delivered=with_delayed,
    )
    management = {queue["name"]: queue for queue in lab.management.queues(lab.vhost)}
    delivery_bindings = sorted(
        f"{binding['source']} -> {binding['destination']} ({binding['routing_key']})"
        for binding in lab.management.bindings(lab.vhost)
        if binding["source"] == "celery_delayed_delivery"
    )
    confirm_channels = _channels_in_confirm_mode(lab)
    outcome.findings.update(
        {
            "queue types": {name: management[name].get("type") for name in ("add", "sub")},
            "delay queues for a 3 s delay": ladder,
            "celery_delayed_delivery bindings": delivery_bindings,
            "ETA tasks held by workers right after sending": held_by_workers,
            "channels in confirm mode": confirm_channels,
            "ran on (from results)": {f"{t} -> {n}": c for (t, n), c in sorted(ran_on.items())},
        }
    )

    ran = outcome.tallies
    outcome.check(
        "add and sub are quorum queues",
        outcome.findings["queue types"] == {"add": "quorum", "sub": "quorum"},
        outcome.findings["queue types"],
    )
    outcome.check(
        "every task ran on its queue's worker",
        ran == {"add": {"add": with_delayed["add"]}, "sub": {"sub": with_delayed["sub"]}},
        ran,
    )
    outcome.check(
        "the countdown and ETA tasks ran, and not before their time",
        all(ran_late.values()),
        ran_late,
    )
    outcome.check(
        "they waited in the broker's delay queues, not in a worker",
        held_by_workers == 0 and outcome.queues[ladder[0]].published >= len(delayed),
        {"scheduled in workers": held_by_workers, ladder[0]: outcome.queues[ladder[0]]},
    )
    outcome.check(
        "celery_delayed_delivery is bound to the topic exchange for add and sub",
        {f"celery_delayed_delivery -> {EXCHANGE} (#.{q})" for q in ("add", "sub")}
        <= set(delivery_bindings),
        delivery_bindings,
    )
    outcome.check(
        "publishes are confirmed (channels in confirm mode)", confirm_channels > 0, confirm_channels
    )


EXPERIMENT = Experiment(
    name="quorum",
    title="quorum queues with publisher confirms; countdown/ETA by native delayed delivery",
    config_module="routing_demo.conf.experiments.quorum",
    drive=drive,
)
