"""``direct``: add and sub on their own queues, everything else on ``default``.

The project's topology as it ships: three workers, one per queue, and a
seeded mix of add, sub and (unrouted) mul. Each task must run on its queue's
worker only, by the results' record, by each worker's own totals, and by the
broker's per-queue counters.
"""

from __future__ import annotations

import random
from collections import Counter

from .lab import ADD, MUL, SUB, Experiment, Lab, NodeSpec, Outcome, short

#: Task -> the queue (and so the worker) the topology sends it to.
QUEUE_OF = {ADD: "add", SUB: "sub", MUL: "default"}
TASKS = 18


def drive(lab: Lab, outcome: Outcome, seed: int) -> None:
    lab.start([NodeSpec(queue, (queue,)) for queue in ("add", "sub", "default")])
    rng = random.Random(seed)
    sent = []
    for _ in range(TASKS):
        name = rng.choice((ADD, SUB, MUL))
        args = (rng.randint(0, 99), rng.randint(0, 99))
        sent.append((name, lab.client.send_task(name, args)))
    outcome.sent = len(sent)
    ran_on: Counter[tuple[str, str | None]] = Counter()
    for name, result in sent:
        result.get(timeout=lab.timeout)
        ran_on[short(name), lab.base_of(result.worker)] += 1
    lab.tally(outcome)
    per_queue = Counter(QUEUE_OF[name] for name, _ in sent)
    outcome.queues = lab.broker_counters(
        ("add", "sub", "default"), published=per_queue, delivered=per_queue
    )
    outcome.findings["ran_on (from results)"] = {
        f"{task} -> {node}": count for (task, node), count in sorted(ran_on.items())
    }

    for name, queue in QUEUE_OF.items():
        task = short(name)
        outcome.check(
            f"every {task} ran on the {queue} worker and nowhere else",
            outcome.workers[queue]["ran"].get(task, 0) == per_queue[queue]
            and all(
                worker["ran"].get(task, 0) == 0
                for base, worker in outcome.workers.items()
                if base != queue
            ),
            outcome.tallies,
        )
    outcome.check(
        "the results name the same workers",
        all(node == QUEUE_OF[f"routing_demo.tasks.{task}"] for task, node in ran_on),
        dict(outcome.findings["ran_on (from results)"]),
    )
    outcome.check_published("the broker routed each queue exactly its tasks", per_queue)


EXPERIMENT = Experiment(
    name="direct",
    title="direct exchange: add and sub on their own queues",
    config_module="routing_demo.conf.experiments.direct",
    drive=drive,
)
