"""``rerouting``: move the ``add`` queue from one worker to another, live.

Two workers: ``alpha`` starts on ``add``, ``beta`` on ``sub``. Routes never
change; only who consumes ``add`` does, through the ``add_consumer`` and
``cancel_consumer`` control commands (no restart):

1. ``alpha`` has ``add``;
2. ``add_consumer add -d beta``: both consume it, RabbitMQ shares it out;
3. ``cancel_consumer add -d alpha``: only ``beta`` has it.

Adding the new consumer before cancelling the old one leaves no moment in
which ``add`` has no consumer. Each phase's batch is finished before the
next change, and its tally comes from the results (``result.worker``).
"""

from __future__ import annotations

from collections import Counter

from .lab import ADD, SUB, Experiment, Lab, NodeSpec, Outcome, short

PER_PHASE = 4


def run_batch(lab: Lab, names: tuple[str, ...]) -> dict[str, int]:
    """Send ``PER_PHASE`` of each task; ``task@node`` -> how many ran there."""
    results = [
        (name, lab.client.send_task(name, (i, 1))) for name in names for i in range(PER_PHASE)
    ]
    ran: Counter[str] = Counter()
    for name, result in results:
        result.get(timeout=lab.timeout)
        ran[f"{short(name)}@{lab.base_of(result.worker)}"] += 1
    return dict(sorted(ran.items()))


def snapshot(lab: Lab, label: str, names: tuple[str, ...]) -> dict[str, object]:
    return {
        "phase": label,
        "consumes": lab.active_queues(),
        "consumers on add (broker)": lab.depth("add")[1],
        "ran": run_batch(lab, names),
    }


def drive(lab: Lab, outcome: Outcome, seed: int) -> None:
    lab.start([NodeSpec("alpha", ("add",)), NodeSpec("beta", ("sub",))])
    phases = [snapshot(lab, "alpha has add", (ADD, SUB))]
    lab.add_consumer("add", "beta")
    phases.append(snapshot(lab, "both consume add", (ADD,)))
    lab.cancel_consumer("add", "alpha")
    phases.append(snapshot(lab, "beta has add", (ADD, SUB)))
    outcome.sent = PER_PHASE * 5
    outcome.findings["phases"] = phases
    lab.tally(outcome)
    outcome.queues = lab.broker_counters(
        ("add", "sub"),
        published={"add": PER_PHASE * 3, "sub": PER_PHASE * 2},
        delivered={"add": PER_PHASE * 3, "sub": PER_PHASE * 2},
    )

    first, both, last = phases
    outcome.check(
        "phase 1: alpha ran every add, beta every sub",
        first["ran"] == {"add@alpha": PER_PHASE, "sub@beta": PER_PHASE},
        first["ran"],
    )
    outcome.check(
        "phase 2: add had two consumers and its tasks ran once each",
        both["consumers on add (broker)"] == 2
        and sum(both["ran"].values()) == PER_PHASE
        and set(both["ran"]) <= {"add@alpha", "add@beta"},
        both,
    )
    outcome.check(
        "phase 3: beta ran every add and every sub; alpha consumes nothing",
        last["ran"] == {"add@beta": PER_PHASE, "sub@beta": PER_PHASE}
        and last["consumes"] == {"alpha": [], "beta": ["add", "sub"]},
        last,
    )
    outcome.check(
        "the workers' own totals add up",
        sum(outcome.workers["alpha"]["ran"].values()) + sum(outcome.workers["beta"]["ran"].values())
        == outcome.sent,
        outcome.tallies,
    )


EXPERIMENT = Experiment(
    name="rerouting",
    title="runtime re-routing: add moves from alpha to beta with add/cancel_consumer",
    config_module="routing_demo.conf.experiments.rerouting",
    drive=drive,
)
