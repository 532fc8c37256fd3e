"""``deadletter``: what the workers reject and what nothing matches, kept.

The project's own topology and workers, sent good tasks and three kinds of
bad message:

- an unknown task name: the ``default`` worker rejects it, RabbitMQ
  dead-letters it through ``routing_demo.dlx`` into ``dead_letter`` with an
  ``x-death`` header (reason ``rejected``, the queue it left);
- a body that is not valid JSON, published to ``add``: rejected the same way;
- a routing-key typo (``exchange="routing_demo", routing_key="ad"``): no
  queue is bound with it, so the task exchange's alternate exchange puts it
  in ``unroutable``. The exchange is named explicitly: with ``routing_key``
  alone and a route to a queue on a *direct* exchange, Celery publishes to
  the AMQP default exchange with the queue's name as key instead.

Both holding queues are then read through the management API without
consuming anything (what the UI's "Get messages" does).
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from urllib.parse import quote

from kombu import Producer

from routing_demo.topology import dead_letter_queue, task_exchange, unroutable_queue

from .lab import ADD, MUL, SUB, Experiment, Lab, NodeSpec, Outcome, short

GOOD = 6
UNKNOWN_TASK = "routing_demo.tasks.nope"
UNKNOWN, TYPOS, MALFORMED = 2, 2, 1
HOLDING = (dead_letter_queue.name, unroutable_queue.name)

#: How to read a holding queue by hand, leaving its messages in place.
PEEK_COMMAND = (
    "curl -s -u guest:guest -H 'content-type: application/json' "
    """-d '{{"count": 10, "ackmode": "ack_requeue_true", "encoding": "auto"}}' """
    "http://localhost:15672/api/queues/{vhost}/{queue}/get"
)


def publish_malformed(lab: Lab) -> str:
    """A task message for ``add`` whose JSON body is cut short; its id."""
    task_id = str(uuid.uuid4())
    with lab.client.connection_for_write() as connection:
        Producer(connection.default_channel).publish(
            b'[[1, 2], {}, {"unterminated',
            exchange=task_exchange.name,
            routing_key="add",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"lang": "py", "task": ADD, "id": task_id, "root_id": task_id},
            delivery_mode=2,
        )
    return task_id


def summarise(message: dict) -> dict[str, object]:
    """What matters in a held message: task, id, why and from where."""
    properties = message.get("properties", {})
    headers = properties.get("headers", {})
    death = (headers.get("x-death") or [{}])[0]
    return {
        "task": headers.get("task"),
        "id": headers.get("id"),
        "routing_key": message.get("routing_key"),
        "reason": death.get("reason", "unroutable"),
        "left_queue": death.get("queue", "-"),
    }


def drive(lab: Lab, outcome: Outcome, seed: int) -> None:
    lab.start([NodeSpec(queue, (queue,)) for queue in ("add", "sub", "default")])
    rng = random.Random(seed)
    good = [rng.choice((ADD, SUB, MUL)) for _ in range(GOOD)]
    good_results = [lab.client.send_task(name, (rng.randint(0, 9), 3)) for name in good]
    unknown = [lab.client.send_task(UNKNOWN_TASK, (1, 2)) for _ in range(UNKNOWN)]
    for _ in range(TYPOS):
        lab.client.send_task(ADD, (2, 2), exchange=task_exchange.name, routing_key="ad")
    malformed = [publish_malformed(lab) for _ in range(MALFORMED)]
    outcome.sent = GOOD + UNKNOWN + TYPOS + MALFORMED

    for result in good_results:
        result.get(timeout=lab.timeout)
    failures = Counter()
    for result in unknown:
        result.get(timeout=lab.timeout, propagate=False)
        failures[f"{result.state} {type(result.result).__name__}"] += 1
    lab.wait_for_depth(dead_letter_queue.name, UNKNOWN + MALFORMED)
    lab.wait_for_depth(unroutable_queue.name, TYPOS)
    lab.tally(outcome)
    expected_ran = Counter({ADD: "add", SUB: "sub", MUL: "default"}[name] for name in good)
    per_queue = expected_ran + Counter({"add": MALFORMED, "default": UNKNOWN})
    outcome.queues = lab.broker_counters(
        ("add", "sub", "default", *HOLDING),
        published={**per_queue, unroutable_queue.name: TYPOS},
        delivered=per_queue,
    )
    held = {queue: [summarise(m) for m in lab.peek(queue, count=20)] for queue in HOLDING}
    outcome.findings.update(
        {
            "unknown task results": dict(failures),
            "held messages (management API, left in place)": held,
            "read them yourself": {
                queue: PEEK_COMMAND.format(vhost=quote(lab.vhost, safe=""), queue=queue)
                for queue in HOLDING
            },
        }
    )

    ran = outcome.tallies
    outcome.check(
        "the good tasks ran on their queues' workers",
        all(
            sum(ran.get(base, {}).values()) == expected_ran[base]
            for base in ("add", "sub", "default")
        )
        and all(
            set(ran.get(base, {})) <= {short(n)}
            for n, base in ((ADD, "add"), (SUB, "sub"), (MUL, "default"))
        ),
        ran,
    )
    outcome.check(
        "unknown tasks failed with NotRegistered",
        failures == Counter({"FAILURE NotRegistered": UNKNOWN}),
        dict(failures),
    )
    dead = held[dead_letter_queue.name]
    outcome.check(
        "dead_letter holds the unknown tasks (from default) and the malformed body (from add)",
        sorted((m["task"], m["reason"], m["left_queue"]) for m in dead)
        == sorted(
            [(UNKNOWN_TASK, "rejected", "default")] * UNKNOWN
            + [(ADD, "rejected", "add")] * MALFORMED
        )
        and {m["id"] for m in dead} >= set(malformed) | {r.id for r in unknown},
        dead,
    )
    lost = held[unroutable_queue.name]
    outcome.check(
        "unroutable holds the routing-key typos",
        sorted((m["task"], m["routing_key"]) for m in lost) == [(ADD, "ad")] * TYPOS,
        lost,
    )
    outcome.check(
        "the broker counted them",
        outcome.queues[dead_letter_queue.name].ready == UNKNOWN + MALFORMED
        and outcome.queues[unroutable_queue.name].ready == TYPOS,
        {queue: outcome.queues[queue] for queue in HOLDING},
    )


EXPERIMENT = Experiment(
    name="deadletter",
    title="dead-letter and unroutable: rejected and unmatched messages are kept",
    config_module="routing_demo.conf.experiments.deadletter",
    drive=drive,
)
