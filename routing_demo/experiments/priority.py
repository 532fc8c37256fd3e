"""``priority``: high-priority tasks overtake a backlog, unless it was prefetched.

The queue ``priority`` has ``x-max-priority``, so RabbitMQ delivers the
highest-priority message it *holds* first. A worker holds up to its prefetch
count (``--prefetch-multiplier`` times concurrency) of unacknowledged messages,
and runs those in arrival order whatever their priority.

One phase per prefetch count, each on its own single-process worker:

1. a ``hold`` task occupies the worker until the driver opens its gate;
2. ``LOW`` low-priority tasks (priority 1) are sent; the driver waits until
   the broker shows the worker took all it may (``prefetch - 1`` of them);
3. ``HIGH`` high-priority tasks (priority 9) are sent and confirmed;
4. the gate opens, and every task returns its position in the worker's run.

Expected: the low tasks that run before the first high one are exactly
those the worker had prefetched, ``min(prefetch - 1, LOW)``.
"""

from __future__ import annotations

from .lab import HOLD, RECORD, Experiment, Lab, NodeSpec, Outcome, wait_until

#: Prefetch counts compared (concurrency is 1: the multiplier is the count).
#: 4 is Celery's default multiplier.
PREFETCH = (1, 4, 16)
LOW, HIGH = 6, 3
LOW_PRIORITY, HIGH_PRIORITY = 1, 9
QUEUE = "priority"


def node(prefetch: int) -> str:
    return f"prefetch{prefetch}"


def run_phase(lab: Lab, prefetch: int) -> dict[str, object]:
    """One prefetch count: build the backlog behind the gate, send the high
    tasks, open the gate; the execution order as ``G``/``L``/``H`` letters."""
    base = node(prefetch)
    gate = lab.run_dir / f"gate-{base}{lab.suffix}"
    gate.unlink(missing_ok=True)
    lab.add_consumer(QUEUE, base)
    try:
        held = lab.client.send_task(HOLD, (str(gate), lab.timeout), priority=0)
        wait_until(
            lambda: [
                task["id"]
                for task in (lab._inspect([base]).active() or {}).get(lab.hostname(base), [])
            ],
            done=lambda running: held.id in running,
            timeout=lab.timeout,
            message=f"{base} running the hold task",
        )
        lows = [
            lab.client.send_task(RECORD, (f"low{i}",), priority=LOW_PRIORITY) for i in range(LOW)
        ]
        # The worker takes what its prefetch allows; the rest waits in the queue.
        lab.wait_for_depth(QUEUE, max(0, 1 + LOW - prefetch))
        highs = [
            lab.client.send_task(RECORD, (f"high{i}",), priority=HIGH_PRIORITY) for i in range(HIGH)
        ]
        lab.wait_for_depth(QUEUE, max(0, 1 + LOW + HIGH - prefetch))
        waiting = lab.depth(QUEUE)[0]
        gate.touch()
        position = {
            letter: [result.get(timeout=lab.timeout) for result in results]
            for letter, results in (("G", [held]), ("L", lows), ("H", highs))
        }
    finally:
        gate.touch()
        lab.cancel_consumer(QUEUE, base)
        gate.unlink(missing_ok=True)
    order = "".join(
        letter
        for _, letter in sorted((pos, letter) for letter, ps in position.items() for pos in ps)
    )
    first_high = min(position["H"])
    return {
        "order": order,
        "prefetched_lows": min(prefetch - 1, LOW),
        "waiting_in_queue_before_gate": waiting,
        "lows_before_first_high": sum(pos < first_high for pos in position["L"]),
    }


def drive(lab: Lab, outcome: Outcome, seed: int) -> None:
    lab.start([NodeSpec(node(p), (QUEUE,), (f"--prefetch-multiplier={p}",)) for p in PREFETCH])
    # Each phase gives the queue to one worker only.
    for prefetch in PREFETCH:
        lab.cancel_consumer(QUEUE, node(prefetch))
    phases = {prefetch: run_phase(lab, prefetch) for prefetch in PREFETCH}
    outcome.sent = len(PREFETCH) * (1 + LOW + HIGH)
    outcome.findings["by prefetch"] = phases
    lab.tally(outcome)
    outcome.queues = lab.broker_counters(
        (QUEUE,), published={QUEUE: outcome.sent}, delivered={QUEUE: outcome.sent}
    )
    for prefetch, phase in phases.items():
        expected = min(prefetch - 1, LOW)
        outcome.check(
            f"prefetch {prefetch}: {expected} low task(s) ran before the first high one",
            phase["lows_before_first_high"] == expected,
            phase["order"],
        )
    outcome.check(
        "prefetch 1: every high task ran before every low one",
        phases[1]["order"] == "G" + "H" * HIGH + "L" * LOW,
        phases[1]["order"],
    )
    outcome.check(
        f"prefetch {PREFETCH[-1]}: the whole backlog ran first (prefetch defeats priority)",
        phases[PREFETCH[-1]]["order"] == "G" + "L" * LOW + "H" * HIGH,
        phases[PREFETCH[-1]]["order"],
    )
    outcome.check(
        "each worker ran its own phase only",
        all(outcome.workers[node(p)]["ran"] == {"hold": 1, "record": LOW + HIGH} for p in PREFETCH),
        outcome.tallies,
    )


EXPERIMENT = Experiment(
    name="priority",
    title="priority queue: high priority overtakes a backlog, unless prefetched",
    config_module="routing_demo.conf.experiments.priority",
    drive=drive,
)
