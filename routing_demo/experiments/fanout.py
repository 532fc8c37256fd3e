"""``fanout``: a broadcast task runs once on every worker; a routed task once in all.

Three workers each consume ``default`` and ``broadcast_tasks`` (kombu's
``Broadcast``: a fanout exchange and one uniquely named queue per worker).
Each ``clear_cache`` message is copied into every worker's queue, so it runs
three times; each ``mul`` goes to the one shared ``default`` queue and runs
once, on whichever worker RabbitMQ hands it to.
"""

from __future__ import annotations

from collections import Counter

from .lab import CLEAR_CACHE, MUL, Experiment, Lab, NodeSpec, Outcome

NODES = ("cache1", "cache2", "cache3")
#: Broadcast messages, one per cache key.
CACHE_KEYS = ("prices", "users")
#: Ordinary tasks on the shared ``default`` queue.
SHARED = 6


def drive(lab: Lab, outcome: Outcome, seed: int) -> None:
    lab.start([NodeSpec(node, ("default", "broadcast_tasks")) for node in NODES])
    for key in CACHE_KEYS:
        # Results ignored: every worker runs this message under the same id.
        lab.client.send_task(CLEAR_CACHE, (key,), ignore_result=True)
    shared = [lab.client.send_task(MUL, (seed, index)) for index in range(SHARED)]
    outcome.sent = len(CACHE_KEYS) + SHARED
    for result in shared:
        result.get(timeout=lab.timeout)
    mul_ran_on = Counter(lab.base_of(result.worker) for result in shared)
    lab.wait_for_totals(
        lambda totals: all(
            totals.get(node, {}).get(CLEAR_CACHE, 0) >= len(CACHE_KEYS) for node in NODES
        )
    )
    lab.tally(outcome)
    broadcast_queues = {
        node: next(name for name in worker["queues"] if name.startswith("bcast."))
        for node, worker in outcome.workers.items()
    }
    outcome.findings["broadcast queue per worker"] = broadcast_queues
    outcome.findings["mul ran on (from results)"] = dict(sorted(mul_ran_on.items()))
    per_queue = {name: len(CACHE_KEYS) for name in broadcast_queues.values()}
    outcome.queues = lab.broker_counters(
        ["default", *broadcast_queues.values()],
        published={"default": SHARED, **per_queue},
        delivered={"default": SHARED, **per_queue},
    )
    bindings = [
        binding["destination"]
        for binding in lab.management.bindings(lab.vhost)
        if binding["source"] == "broadcast_tasks"
    ]
    outcome.findings["broadcast_tasks (fanout) is bound to"] = sorted(bindings)

    ran = {node: worker["ran"] for node, worker in outcome.workers.items()}
    outcome.check(
        "every worker ran each broadcast exactly once",
        all(ran[node].get("clear_cache") == len(CACHE_KEYS) for node in NODES),
        ran,
    )
    outcome.check(
        "each worker has a broadcast queue of its own, bound to the fanout exchange",
        len(set(broadcast_queues.values())) == len(NODES)
        and sorted(bindings) == sorted(broadcast_queues.values()),
        bindings,
    )
    outcome.check(
        "the routed tasks ran once in all, shared between the workers",
        sum(worker.get("mul", 0) for worker in ran.values()) == SHARED
        and sum(mul_ran_on.values()) == SHARED,
        dict(mul_ran_on),
    )
    outcome.check_published(
        "the broker copied each broadcast into every worker's queue",
        {**per_queue, "default": SHARED},
    )


EXPERIMENT = Experiment(
    name="fanout",
    title="fanout (Broadcast): every worker runs clear_cache once",
    config_module="routing_demo.conf.experiments.fanout",
    drive=drive,
)
