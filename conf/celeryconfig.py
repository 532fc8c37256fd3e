"""routing_demo's Celery settings: the seed's uppercase list in Celery 5 form.

``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND`` in the environment win
over ``broker_url`` and ``result_backend`` here (Celery reads them itself),
so one install serves RabbitMQ vhosts, ``rpc://`` and Redis without edits.
The settings table in docs/settings.md explains each value.
"""

from __future__ import annotations

import os

from routing_demo.security import broker_password_from_file
from routing_demo.topology import (
    QUEUES,
    TASK_QUEUES,
    TASK_ROUTES,
    default_queue,
    task_exchange,
    worker_selection_options,
)
from routing_demo.transports import LIBRABBITMQ_TRANSPORT, broker_transport_for

# --- Broker -----------------------------------------------------------------
#: ``pyamqp://`` on purpose: with plain ``amqp://`` kombu switches to
#: librabbitmq whenever it is importable, and librabbitmq 2.0.0 cannot
#: consume with kombu 5.7 (``basic_consume`` rejects ``on_cancel``).
broker_url = "pyamqp://guest:guest@localhost:5672//"
#: The transport follows the URL actually used, on purpose: ``amqp://`` and
#: ``pyamqp://`` get py-amqp, ``librabbitmq://`` gets the kombu 5.7 adapter in
#: ``routing_demo.transports``. It wins over kombu's own guess from the scheme.
broker_transport = broker_transport_for(os.environ.get("CELERY_BROKER_URL") or broker_url)
#: The password may come from a file instead of the URL (a Docker or
#: Kubernetes secret): ``ROUTING_DEMO_BROKER_PASSWORD_FILE``, with a
#: ``CELERY_BROKER_URL`` that names the user but no password. Unset: ``None``.
broker_password = broker_password_from_file(os.environ.get("CELERY_BROKER_URL") or broker_url)
#: Keep retrying the first connection: workers may start before RabbitMQ.
broker_connection_retry_on_startup = True
#: Seconds a client waits for a TCP connection before it reports the error.
broker_connection_timeout = 4
#: Publisher confirms (the seed's ``{'fanout_prefix': True}`` is a
#: Redis-transport option): a publish returns once RabbitMQ has taken the
#: message, or raises. Without them a message sent while the broker goes down
#: can vanish with no error. Quorum queues need them too. librabbitmq has no
#: confirms (its transport refuses the option): none there.
broker_transport_options: dict[str, object] = (
    {} if broker_transport == LIBRABBITMQ_TRANSPORT else {"confirm_publish": True}
)
#: Reconnect on a channel error instead of exiting: ``PRECONDITION_FAILED``
#: when a countdown/ETA task is held past RabbitMQ's ``consumer_timeout``,
#: ``RESOURCE_LOCKED`` on a restarted node's pidbox queue.
broker_channel_error_retry = True
#: A publish whose connection broke is retried for about 60 s (0, 1, 2, 3, 4,
#: then 5 s apart), longer than a broker restart; Celery's default policy gives
#: up after about 0.6 s. A publish to a broker that never answered still fails
#: within ``broker_connection_timeout`` and its retries (about 6 s).
task_publish_retry_policy = {
    "max_retries": 15,
    "interval_start": 0,
    "interval_step": 1,
    "interval_max": 5,
}

#: Seconds a publish waits for its confirm. A quorum queue without a quorum
#: (two of three nodes down) never confirms: the wait ends, and the publish
#: is retried through another node (``routing_demo.publish``).
publish_confirm_timeout = float(os.environ.get("ROUTING_DEMO_PUBLISH_CONFIRM_TIMEOUT", "10"))
#: Messages a pipelined batch (``routing_demo.batch``: a ``group``,
#: ``send_all``, ``pipelined``) keeps unconfirmed on its channel at most.
publish_confirm_window = 1000
#: Seconds a publish may take in all, retries included; then it raises
#: ``PublishTimeout`` naming the cause. Longer than a broker restart.
publish_timeout = float(os.environ.get("ROUTING_DEMO_PUBLISH_TIMEOUT", "60"))

# --- Results ------------------------------------------------------------------
#: ``rpc://`` sends results back as AMQP messages to the caller; set
#: ``CELERY_RESULT_BACKEND=redis://…`` for results any process can read.
result_backend = "rpc://"
result_serializer = "json"
result_accept_content = ["json"]
#: Store task name, args, queue and the worker's node name with the result:
#: the record of *where* a task ran.
result_extended = True
#: Redis result keys expire after an hour; an expired id then reads PENDING.
result_expires = 60 * 60
#: ...so the publisher also keeps when each id was sent, for a week (about
#: 150 bytes of Redis per task; 0 keeps none): ``routes status`` then tells an
#: expired result from an id never sent (``routing_demo.sent_state``).
routing_demo_sent_ids_expire = 7 * 24 * 60 * 60
#: rpc:// result messages stay transient: only the waiting caller reads them.
#: Their reply queue (one per client) is declared durable and auto-delete by
#: Celery itself, which RabbitMQ 4.3 accepts: it refuses only *transient*
#: queues that are not exclusive.
#:
#: The worker publishes them (STARTED, then SUCCESS or FAILURE) without
#: waiting for a publisher confirm (``routing_demo.backends``), though
#: ``confirm_publish`` is on: a confirm cannot make a transient message in an
#: auto-delete queue outlive a broker restart, and the caller's ``.get()`` is
#: the end-to-end check. What is given up: a result written into a connection
#: that breaks before RabbitMQ read it is not re-sent, so ``.get()`` times out
#: (as it does after a broker restart). Task publishes stay confirmed.
result_persistent = False
#: Cap on the Redis backend's connection pool.
redis_max_connections = 1024

# --- Tasks and routing --------------------------------------------------------
include = ["routing_demo.tasks"]
task_serializer = "json"
accept_content = ["json"]
task_queues = TASK_QUEUES
task_routes = TASK_ROUTES
task_default_queue = default_queue.name
task_default_exchange = task_exchange.name
task_default_exchange_type = task_exchange.type
task_default_routing_key = default_queue.routing_key
#: ``classic`` or ``quorum``, from ``ROUTING_DEMO_QUEUE_TYPE`` (see
#: ``routing_demo.topology``): quorum queues on a cluster, classic on one node.
#: Celery then sends countdown/ETA tasks through native delayed delivery
#: (``celery_delayed_*`` quorum queues), which our topic exchange supports.
task_default_queue_type = QUEUES.queue_type
#: A route or ``-Q`` naming an undeclared queue is an error, not a new queue.
task_create_missing_queues = False
#: Which worker consumes which queue, for the ``routes`` tools (``topology``,
#: ``explain``, ``verify``, ``workers start``): node base name -> its
#: ``celery worker`` selection, ``{"add": "-Q add", "sub": "-Q sub", "default":
#: "-X add,sub"}``, from ``routing_demo.topology``. An app without this setting
#: gets its answer from the live workers (``inspect active_queues``).
routes_worker_selections = worker_selection_options()
#: Queues that hold dead letters and unroutable messages: declared by every
#: worker (``routing_demo.consumer``), bound to the exchanges the task queues'
#: ``x-dead-letter-exchange`` and the task exchange's ``alternate-exchange``
#: name, and consumed by nobody, so they are not among ``task_queues``.
routes_holding_queues = QUEUES.holding_queues
#: Persistent messages in durable queues survive a broker restart.
task_default_delivery_mode = "persistent"
#: Acknowledge after the task ran, and give the message back when the worker
#: process dies mid-task, so a killed worker loses no task.
task_acks_late = True
task_reject_on_worker_lost = True
#: Report STARTED, so "queued" and "running" are told apart.
task_track_started = True
#: Results are the proof of where a task ran; keep them.
task_ignore_result = False

# --- Worker -------------------------------------------------------------------
#: Prefork, one pool process per CPU core (``None``): Celery's defaults, said
#: aloud. Prefork because ``task_reject_on_worker_lost`` needs each task in a
#: process of its own: a pool process that dies gives its message back and
#: the worker lives on (a thread, or the solo pool, dies with the worker).
#: Threads and solo drain trivial tasks faster (``benchmarks/README.md``) but
#: give that up. One process per core: with -c 1 both plain Celery and this
#: configuration drained slower than with -c 2 on two cores (the result
#: publishes run in the pool processes, in parallel). ``-c`` per worker.
worker_pool = "prefork"
worker_concurrency = None
#: No time limits and no recycling of pool processes: Celery's defaults.
#: Neither keeps a message from being lost, and both cost the worker's main
#: process, which every task passes through. A time limit arms a timer per
#: task, and a cancelled timer stays queued until it would have fired: about
#: 440 bytes per task held for the whole limit (an hour at 1,000 tasks/s: 1.5
#: GB). Recycling runs a full ``gc.collect()`` and a fork every N tasks per
#: pool process. A worker whose tasks can hang or leak sets them on its own
#: command line (``routes workers start --time-limit … --max-tasks-per-child
#: …``), or a task takes ``time_limit=``.
task_time_limit = None
task_soft_time_limit = None
worker_max_tasks_per_child = None
#: Rejects what cannot be decoded instead of dropping it, so it dead-letters.
worker_consumer = "routing_demo.consumer:Consumer"
#: On a lost broker connection, stop tasks whose messages will be redelivered
#: anyway (acks_late), rather than run them twice.
worker_cancel_long_running_tasks_on_connection_loss = True

# --- Revokes ------------------------------------------------------------------
#: A worker started with ``--statedb`` (``routes workers start``, compose)
#: writes each revoke to that file as it arrives, not only at a clean exit, so
#: a revoked task whose message comes back after a SIGKILL is still discarded
#: (``routing_demo.revokes``). ``imports`` is how Celery loads a module of
#: control commands into the worker.
imports = ("routing_demo.revokes",)

# --- RabbitMQ 4.3 -----------------------------------------------------------------
#: RabbitMQ 4.3 refuses transient queues that are not exclusive. A worker's
#: ``<node>.celery.pidbox`` queue, a control client's reply queue and an event
#: receiver's ``celeryev.*`` queue are transient, so they are exclusive: owned
#: by one connection and deleted with it. Celery 5.7's defaults, set here so
#: that they do not change under us (Celery 5.5 knows none of these names).
control_queue_exclusive = True
control_queue_durable = False
event_queue_exclusive = True
event_queue_durable = False
#: RabbitMQ 4.3 also denies global QoS: the worker's consumer
#: (``routing_demo.consumer``) always sets a per-consumer prefetch limit.

# --- Time and beat --------------------------------------------------------------
timezone = "UTC"
enable_utc = True
#: The seed's CELERYBEAT_SCHEDULER: remembers each entry's last run in a file.
beat_scheduler = "celery.beat:PersistentScheduler"
#: In the writable run directory (pidfiles and logs live there too).
beat_schedule_filename = os.path.join(
    os.environ.get("ROUTING_DEMO_RUN_DIR", "run"), "celerybeat-schedule"
)
#: ``add`` every ``ROUTING_DEMO_BEAT_INTERVAL`` seconds (default 30). Beat sends
#: through the app like any caller, so the task follows its route to the add
#: queue. Run exactly one beat: each one sends every entry.
beat_schedule = {
    "add-every-interval": {
        "task": "routing_demo.tasks.add",
        "schedule": float(os.environ.get("ROUTING_DEMO_BEAT_INTERVAL", "30")),
        "args": (2, 3),
    },
}
