"""Plan and run every measurement, each in its own throw-away vhost.

For each measurement the runner creates a vhost through the management
API and starts a ``celery worker`` for the variant (not for the raw-kombu
ceiling); every worker is started up front and stopped at the end.

The real run **interleaves rounds**: round 1 of every measurement, then
round 2 in reverse order, and so on (A B C … C B A …), each round in a fresh
child process. Two configurations compared in the table were therefore
measured seconds apart in every round, and a machine that slows down or
speeds up over the run (other load, thermal limits, the broker's own
housekeeping) moves both alike instead of favouring whichever ran first.
In ``overlap`` mode (the quick smoke run) two measurements run at a time,
all rounds back to back: faster, so its figures are a smoke test's, not to
be compared.

The broker may be a cluster: ``broker`` is then a ``;``-separated list of
every node's URL (kombu connects to the first and fails over to the next),
and the management API of any one node creates the vhosts cluster-wide.
After measuring, the runner asks the management API where each
measurement's queues live (the node of a classic queue; the leader and
members of a quorum queue), so the output says what was replicated.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from celery import Celery

from ..rabbitmq import ManagementAPI, vhost_url
from ..topology import QUEUE_TYPES
from . import stats, targets
from .peers import DRAMATIQ_QUEUE, PLAIN_CELERY_QUEUE
from .raw_amqp import MODES as RAW_AMQP_MODES
from .settings import TRANSPORTS, Variant, shipped_variant, worker_environ
from .speedups import build_speedups, speedups_dir, speedups_status
from .worker import BenchWorker

__all__ = [
    "FULL",
    "QUICK",
    "Counts",
    "Spec",
    "dramatiq_shape",
    "merge_rounds",
    "peer_availability",
    "plan",
    "plan_peers",
    "queue_placement",
    "run_bench",
    "select",
    "transport_availability",
]

#: The project's pyproject.toml: its ``bench`` dependency group has Dramatiq.
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

#: Prefetch multipliers and pools the sweep tries.
PREFETCH_SWEEP = (1, 4, 16, 64, 256)
POOL_SWEEP = ("prefork", "threads", "solo")


@dataclass(frozen=True)
class Counts:
    """How much each measurement does."""

    tasks: int
    rounds: int
    raw_messages: int
    latency_samples: int


#: A smoke run: every measurement, small batches.
QUICK = Counts(tasks=50, rounds=1, raw_messages=300, latency_samples=15)
#: The real run (about 18 minutes on 2 cores: 5 interleaved rounds of ~20 measurements).
FULL = Counts(tasks=3000, rounds=5, raw_messages=15000, latency_samples=300)


@dataclass(frozen=True)
class Spec:
    """One measurement: what it runs and on which variant and backend."""

    id: str
    kind: str  # raw | raw-amqp | celery | plain-celery | dramatiq | e2e
    group: str  # ceiling | sweep | routing | queue-type | transport | shipped | peer | e2e
    variant: Variant
    backend: str = "rpc"
    with_no_results: bool = False
    changed: dict[str, Any] = field(default_factory=dict)
    #: Tasks sent with their results stored (``celery``, ``plain-celery``).
    results: bool = False
    #: Also send each batch through ``group`` and ``routing_demo.batch``.
    batch_sends: bool = False
    #: ``raw-amqp``: the publish mode; ``dramatiq``: ``confirm_delivery``.
    mode: str = ""

    @property
    def queues(self) -> list[str]:
        """The queues the tasks travel through (and the worker consumes)."""
        if self.kind == "plain-celery":
            return [PLAIN_CELERY_QUEUE]
        if self.kind == "dramatiq":
            return [DRAMATIQ_QUEUE]
        return self.variant.queues

    def guarantees(self) -> dict[str, bool]:
        """What this measurement keeps: publisher confirms, persistent
        messages, late acks (a task lost with its worker runs again), results."""
        variant = self.variant
        if self.kind == "raw":
            return dict.fromkeys(stats.GUARANTEES, False)
        if self.kind == "raw-amqp":
            return {"confirms": True, "persistent": True, "late_acks": False, "results": False}
        if self.kind == "plain-celery":
            # Celery's defaults: persistent delivery, early acks, no confirms.
            return {"confirms": False, "persistent": True, "late_acks": False, "results": True}
        if self.kind == "dramatiq":
            # Dramatiq acks a message once its actor has run; persistent delivery.
            return {
                "confirms": self.mode == "confirms",
                "persistent": True,
                "late_acks": True,
                "results": False,
            }
        return {
            "confirms": variant.confirm_publish and variant.transport != "librabbitmq",
            "persistent": True,
            "late_acks": variant.acks_late,
            "results": self.results or self.kind == "e2e",
        }


def plan(shipped: Variant, transports: list[str]) -> list[Spec]:
    """Every measurement, one factor changed from the shipped configuration at a time."""
    specs = [
        Spec(f"raw/{name}", "raw", "ceiling", shipped.with_(transport=name)) for name in transports
    ]
    specs.append(Spec(stats.DEFAULT_ID, "celery", "sweep", shipped))
    specs.append(
        Spec(
            "celery/single-queue",
            "celery",
            "routing",
            shipped.with_(topology="single"),
            changed={"topology": "single"},
        )
    )

    def sweep(field_name: str, value: Any, label: str) -> None:
        if getattr(shipped, field_name) != value:
            specs.append(
                Spec(
                    f"celery/{label}",
                    "celery",
                    "sweep",
                    shipped.with_(**{field_name: value}),
                    changed={field_name: value},
                )
            )

    for prefetch in PREFETCH_SWEEP:
        sweep("prefetch_multiplier", prefetch, f"prefetch-{prefetch}")
    for pool in POOL_SWEEP:
        sweep("pool", pool, f"pool-{pool}")
    # The queue-type pair: the shipped configuration with every durable
    # queue classic, then quorum, whatever ROUTING_DEMO_QUEUE_TYPE says.
    for queue_type in QUEUE_TYPES:
        specs.append(
            Spec(
                f"celery/{queue_type}",
                "celery",
                "queue-type",
                shipped.with_(queue_type=queue_type),
                changed={"queue_type": queue_type},
            )
        )
    sweep("acks_late", not shipped.acks_late, f"acks-late-{'off' if shipped.acks_late else 'on'}")
    sweep(
        "confirm_publish",
        not shipped.confirm_publish,
        f"confirms-{'off' if shipped.confirm_publish else 'on'}",
    )
    sweep("events", True, "events-on")
    for name in transports:
        if name != shipped.transport:
            specs.append(
                Spec(
                    f"celery/transport-{name}",
                    "celery",
                    "transport",
                    # Only the transport changes; librabbitmq has no confirms.
                    shipped.with_(
                        transport=name,
                        confirm_publish=shipped.confirm_publish and name != "librabbitmq",
                    ),
                    changed={"transport": name},
                )
            )
    specs.append(Spec("e2e/rpc", "e2e", "e2e", shipped, backend="rpc", with_no_results=True))
    specs.append(Spec("e2e/redis", "e2e", "e2e", shipped, backend="redis"))
    return specs


def plan_peers(shipped: Variant) -> list[Spec]:
    """The shipped app as an application uses it (results stored; single
    confirmed ``apply_async`` and the batch ways), the safe-publish ceilings
    and the peers: plain Celery with the same pool, concurrency and result
    backend, Dramatiq with the same processes x threads, confirms off and on."""
    return [
        *(
            Spec(f"raw/amqp-{mode}", "raw-amqp", "ceiling", shipped, mode=mode)
            for mode in RAW_AMQP_MODES
        ),
        Spec(stats.SHIPPED_RPC_ID, "celery", "shipped", shipped, results=True, batch_sends=True),
        Spec(stats.SHIPPED_REDIS_ID, "celery", "shipped", shipped, backend="redis", results=True),
        Spec(stats.PLAIN_RPC_ID, "plain-celery", "peer", shipped, results=True),
        Spec(stats.PLAIN_REDIS_ID, "plain-celery", "peer", shipped, backend="redis", results=True),
        Spec(stats.DRAMATIQ_ID, "dramatiq", "peer", shipped, mode="no-confirms"),
        Spec(stats.DRAMATIQ_CONFIRMS_ID, "dramatiq", "peer", shipped, mode="confirms"),
    ]


def dramatiq_shape(variant: Variant) -> tuple[int, int]:
    """Dramatiq's processes x threads for the worker ``variant`` describes:
    prefork -c N is N processes of one thread, threads -c N one process of
    N threads, solo one of one."""
    if variant.pool == "prefork":
        return variant.effective_concurrency(), 1
    if variant.pool == "threads":
        return 1, variant.effective_concurrency()
    return 1, 1


def peer_availability(pyproject: Path, *, install: bool, log: Callable[[str], None]) -> dict:
    """Dramatiq (``dramatiq[rabbitmq]``, the ``bench`` dependency group):
    {"available": bool, "detail": why}. Missing, it is installed from the
    group when ``install`` (pip 25.1+ reads ``[dependency-groups]``)."""

    def probe() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import dramatiq, pika; print(dramatiq.__version__)"],
            capture_output=True,
            text=True,
            check=False,
        )

    found = probe()
    if found.returncode != 0 and install and pyproject.is_file():
        log(f"installing the bench dependency group from {pyproject} ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--group", f"{pyproject}:bench"],
            capture_output=True,
            text=True,
            check=False,
        )
        found = probe()
    if found.returncode == 0:
        return {"available": True, "detail": f"dramatiq {found.stdout.strip()}"}
    lines = found.stderr.strip().splitlines()
    return {
        "available": False,
        "detail": f"not importable ({lines[-1] if lines else 'unknown error'}); "
        "pip install --group bench",
    }


def select(specs: list[Spec], only: list[str] | None) -> list[Spec]:
    """The specs whose id contains one of ``only`` (all of them without ``only``)."""
    if not only:
        return specs
    return [spec for spec in specs if any(part in spec.id for part in only)]


def transport_availability(cache_dir: Path, *, build: bool, log: Callable[[str], None]) -> dict:
    """Transport name -> {"available": bool, "detail": why}."""
    run_dir = Path(cache_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, Any]] = {
        "pyamqp": {"available": True, "detail": f"py-amqp {version('amqp')}, pure Python"}
    }
    usable, why = speedups_status(run_dir)
    if not usable and build:
        log(f"building py-amqp with Cython speedups into {speedups_dir(run_dir)} ...")
        usable, why = build_speedups(run_dir, log=run_dir / "amqp-speedups-build.log")
    elif not usable:
        why += "; the full run builds it (or pass --build-speedups)"
    found["pyamqp-speedups"] = {"available": usable, "detail": why}
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import librabbitmq, routing_demo.transports.librabbitmq; "
            "print(getattr(librabbitmq, '__version__', '?'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        found["librabbitmq"] = {
            "available": True,
            "detail": f"librabbitmq {probe.stdout.strip()} through "
            "routing_demo.transports.librabbitmq",
        }
    else:
        lines = probe.stderr.strip().splitlines()
        found["librabbitmq"] = {
            "available": False,
            "detail": f"not importable: {lines[-1] if lines else 'unknown error'}",
        }
    return found


def queue_placement(queues: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, Any]]:
    """Where each of ``names`` lives, from the management API's queue list:
    its type, its node (a quorum queue's leader) and the nodes holding a copy
    (a classic queue: its one node; a quorum queue: every member)."""
    found = {queue["name"]: queue for queue in queues}
    placement: dict[str, dict[str, Any]] = {}
    for name in names:
        queue = found.get(name)
        if queue is None:
            placement[name] = {"type": None, "node": None, "members": []}
            continue
        node = queue.get("leader") or queue.get("node")
        members = queue.get("members") or ([node] if node else [])
        placement[name] = {
            "type": queue.get("type", "classic"),
            "node": node,
            "members": sorted(members),
        }
    return placement


@dataclass
class Prepared:
    spec: Spec
    vhost: str
    broker_url: str
    backend_url: str
    worker: BenchWorker | None


class Runner:
    """Runs specs against one broker, one Redis, one management API."""

    def __init__(
        self,
        *,
        broker: str,
        redis_url: str,
        management: ManagementAPI,
        run_dir: Path,
        cache_dir: Path,
        counts: Counts,
        seed: int,
        log: Callable[[str], None],
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.broker = broker
        self.redis_url = redis_url
        self.management = management
        self.run_dir = Path(run_dir)
        self.counts = counts
        self.seed = seed
        self.log = log
        self.token = uuid.uuid4().hex[:6]
        self.placements: dict[str, dict[str, dict[str, Any]]] = {}

    def _pythonpath(self, variant: Variant) -> str | None:
        if TRANSPORTS[variant.transport].speedups:
            return str(speedups_dir(self.cache_dir) / "site")
        return None

    def prepare(self, spec: Spec) -> Prepared:
        """Create the vhost and start (not yet wait for) the worker."""
        slug = spec.id.replace("/", "-")
        vhost = f"bench-{self.token}-{slug}"
        self.management.create_vhost(vhost)
        transport = TRANSPORTS[spec.variant.transport]
        broker_url = vhost_url(self.broker, vhost, scheme=transport.scheme)
        backend_url = "rpc://" if spec.backend == "rpc" else self.redis_url
        worker = None
        name = f"bench-{self.token}-{slug}"
        command, environ = self._peer_command(spec, name, vhost)
        if spec.kind not in ("raw", "raw-amqp"):
            worker = BenchWorker(
                name=name,
                variant=spec.variant,
                broker_url=broker_url,
                backend_url=backend_url,
                run_dir=self.run_dir / "workers",
                pythonpath=self._pythonpath(spec.variant),
                command=command,
                environ=environ,
            )
            worker.start()
        return Prepared(spec, vhost, broker_url, backend_url, worker)

    def _peer_command(
        self, spec: Spec, name: str, vhost: str
    ) -> tuple[list[str] | None, dict[str, str] | None]:
        """A peer's worker command (after ``python -m``) and environment;
        ``(None, None)`` for the project's own app."""
        variant = spec.variant
        queue_type = {"ROUTING_DEMO_QUEUE_TYPE": variant.queue_type}
        if spec.kind == "plain-celery":
            options = [f"--pool={variant.pool}"]
            if variant.pool != "solo":
                options.append(f"--concurrency={variant.effective_concurrency()}")
            return [
                "celery", "-A", "routing_demo.bench.peers.plain_celery", "worker",
                "-n", f"{name}@%h", "-Q", PLAIN_CELERY_QUEUE, *options,
                "--loglevel=WARNING", "--without-mingle", "--without-gossip",
                "--without-heartbeat", f"--logfile={self.run_dir / 'workers' / (name + '.log')}",
            ], queue_type  # fmt: skip
        if spec.kind == "dramatiq":
            processes, threads = dramatiq_shape(variant)
            return [
                "dramatiq", "routing_demo.bench.peers.dramatiq_app",
                "-p", str(processes), "-t", str(threads),
            ], {**queue_type, **self.dramatiq_environ(spec, vhost)}  # fmt: skip
        return None, None

    def dramatiq_environ(self, spec: Spec, vhost: str) -> dict[str, str]:
        return {
            "ROUTING_DEMO_BENCH_DRAMATIQ_URL": vhost_url(self.broker, vhost, scheme="amqp"),
            "ROUTING_DEMO_BENCH_DRAMATIQ_CONFIRM": "1" if spec.mode == "confirms" else "0",
        }

    def wait_ready(self, prepared: Prepared) -> None:
        if prepared.worker is None:
            return
        if prepared.spec.kind == "dramatiq":
            from .peers.gate import GateClient

            processes = dramatiq_shape(prepared.spec.variant)[0]
            url = vhost_url(self.broker, prepared.vhost, scheme="amqp")

            def answers() -> bool:
                try:
                    client = GateClient(url, processes)
                except Exception:  # the vhost's first connection may race the worker's
                    return False
                try:
                    client.call("progress", timeout=0.5)
                    return True
                except TimeoutError:
                    return False
                finally:
                    client.close()

            prepared.worker.wait_ready(None, probe=answers)
            return
        app = Celery("routing_demo-bench-ping", set_as_current=False)
        app.conf.update(
            broker_url=prepared.broker_url,
            **TRANSPORTS[prepared.spec.variant.transport].settings,
        )
        try:
            prepared.worker.wait_ready(app)
        finally:
            app.close()

    def teardown(self, prepared: Prepared) -> None:
        try:
            if prepared.worker is not None:
                prepared.worker.stop()
        finally:
            self.management.delete_vhost(prepared.vhost)

    def _logged_measure(self, prepared: Prepared) -> dict[str, Any]:
        self.log(f"measuring {prepared.spec.id}")
        return self.measure(prepared)

    def measure(self, prepared: Prepared) -> dict[str, Any]:
        """Every round of one prepared spec, back to back, in one child."""
        started = time.monotonic()
        raw = self.run_child(
            prepared,
            rounds=self.counts.rounds,
            seed=self.seed,
            latency_samples=self.counts.latency_samples,
        )
        return self._measurement(prepared.spec, raw, time.monotonic() - started, prepared.vhost)

    def measure_interleaved(self, prepared: list[Prepared]) -> list[dict[str, Any]]:
        """One round of every spec per pass, the order reversed on every
        other pass, so drift over the run hits every configuration alike.

        Each pass is a fresh child with its own warm-up round; pass ``n``
        uses seed ``seed + n``, so a pass sends the same tasks to every
        configuration and different passes send different ones. Latency
        samples are split evenly across the passes.
        """
        rounds = self.counts.rounds
        samples_per_pass = -(-self.counts.latency_samples // rounds)
        raws: dict[str, list[dict[str, Any]]] = {item.spec.id: [] for item in prepared}
        elapsed: dict[str, float] = dict.fromkeys(raws, 0.0)
        for index in range(rounds):
            order = prepared if index % 2 == 0 else prepared[::-1]
            for item in order:
                self.log(f"round {index + 1}/{rounds}: {item.spec.id}")
                started = time.monotonic()
                raws[item.spec.id].append(
                    self.run_child(
                        item, rounds=1, seed=self.seed + index, latency_samples=samples_per_pass
                    )
                )
                elapsed[item.spec.id] += time.monotonic() - started
        return [
            self._measurement(
                item.spec, merge_rounds(raws[item.spec.id]), elapsed[item.spec.id], item.vhost
            )
            for item in prepared
        ]

    def teardown_all(self, prepared: list[Prepared]) -> None:
        """Signal every worker first, then wait for each and delete the vhosts:
        the warm shutdowns run side by side."""
        for item in prepared:
            if item.worker is not None:
                item.worker.signal_stop()
        errors = []
        for item in prepared:
            try:
                self.teardown(item)
            except Exception as exc:  # clean up the rest, then report
                errors.append(exc)
        if errors:
            raise errors[0]

    def run_child(
        self, prepared: Prepared, *, rounds: int, seed: int, latency_samples: int
    ) -> dict[str, Any]:
        """Run the measuring child for one prepared spec; return its raw figures."""
        spec = prepared.spec
        counts = self.counts
        transport = TRANSPORTS[spec.variant.transport]
        child_spec: dict[str, Any] = {"kind": spec.kind, "seed": seed, "rounds": rounds}
        if spec.kind == "raw":
            child_spec.update(
                url=prepared.broker_url,
                count=counts.raw_messages,
                kombu_transport=transport.kombu_transport,
            )
        elif spec.kind == "raw-amqp":
            child_spec.update(
                url=prepared.broker_url,
                count=counts.tasks,
                mode=spec.mode,
                queue_type=spec.variant.queue_type,
            )
        elif spec.kind == "dramatiq":
            child_spec.update(
                url=vhost_url(self.broker, prepared.vhost, scheme="amqp"),
                processes=dramatiq_shape(spec.variant)[0],
                count=counts.tasks,
            )
        else:
            assert prepared.worker is not None
            child_spec.update(
                node=prepared.worker.hostname,
                queues=spec.queues,
                count=counts.tasks,
                with_no_results=spec.with_no_results,
                latency_samples=latency_samples,
                results=spec.results,
                batch_sends=spec.batch_sends,
            )
        peer_env = self._peer_command(spec, "-", prepared.vhost)[1]
        env = {
            **os.environ,
            **(worker_environ(spec.variant) if peer_env is None else peer_env),
            "CELERY_BROKER_URL": prepared.broker_url,
            "CELERY_RESULT_BACKEND": prepared.backend_url,
        }
        pythonpath = self._pythonpath(spec.variant)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
        done = subprocess.run(
            [sys.executable, "-m", "routing_demo.bench.child", json.dumps(child_spec)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{spec.id} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _measurement(
        self, spec: Spec, raw: dict[str, Any], elapsed: float, prepared_vhost: str
    ) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        unit = "msg/s" if spec.kind in ("raw", "raw-amqp") else "tasks/s"
        for name, values in raw.items():
            if name == "latency":
                metrics[f"latency_{spec.backend}"] = stats.latency_summary(values)
            elif isinstance(values, list) and values:
                metrics[name] = stats.rate_summary(values, unit)
        return {
            "id": spec.id,
            "kind": spec.kind,
            "group": spec.group,
            "transport": spec.variant.transport,
            "backend": spec.backend if spec.kind != "raw" else None,
            "variant": spec.variant.as_dict(),
            "changed": spec.changed,
            "queues": spec.queues,
            "guarantees": spec.guarantees(),
            "missing": raw.get("missing") or {},
            "amqp_speedups": raw.get("amqp_speedups"),
            "raw_source": raw.get("source"),
            "seconds": round(elapsed, 2),
            "vhost": prepared_vhost,
            "queue_placement": self.placements.get(spec.id),
            "metrics": metrics,
        }

    def record_placement(self, prepared: list[Prepared]) -> None:
        """Ask the broker where each worker's queues live (a ready worker has
        declared them): kept in every measurement as ``queue_placement``."""
        for item in prepared:
            if item.worker is None:
                continue
            try:
                queues = self.management.queues(item.vhost)
            except Exception as exc:  # a missing note must not fail the run
                self.log(f"{item.spec.id}: queue placement unknown ({exc})")
                continue
            self.placements[item.spec.id] = queue_placement(queues, item.spec.queues)

    def run(self, specs: list[Spec], *, overlap: bool) -> list[dict[str, Any]]:
        """Start every worker, measure (interleaved, or two at a time with
        ``overlap``), then stop every worker and delete every vhost."""
        prepared: list[Prepared] = []
        try:
            for spec in specs:
                prepared.append(self.prepare(spec))
            self.log(f"{len(prepared)} vhosts made, workers started")
            started = time.monotonic()
            for item in prepared:
                self.wait_ready(item)
            self.log(f"{len(prepared)} workers ready in {time.monotonic() - started:.1f}s")
            self.record_placement(prepared)
            if not overlap:
                return self.measure_interleaved(prepared)
            # Two children at a time: figures from an overlapped run are a
            # smoke test's, not to be compared, so use both cores for speed.
            with ThreadPoolExecutor(max_workers=2) as pool:
                return list(pool.map(self._logged_measure, prepared))
        finally:
            self.log("stopping workers, deleting vhosts")
            self.teardown_all(prepared)


def merge_rounds(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """One child's output from several one-round children: lists of figures
    are concatenated in pass order, anything else is taken from the last."""
    merged: dict[str, Any] = {}
    for raw in passes:
        for name, value in raw.items():
            if isinstance(value, list):
                merged.setdefault(name, []).extend(value)
            else:
                merged[name] = value
    return merged


def cluster_nodes(management: ManagementAPI) -> list[str]:
    """The running nodes the management API knows (one, unless clustered)."""
    response = management.session.get(f"{management.base_url}/nodes", timeout=management.timeout)
    response.raise_for_status()
    return sorted(node["name"] for node in response.json() if node.get("running", True))


def placement(overlap: bool, management: ManagementAPI, broker: str = "") -> dict[str, Any]:
    """Where producer, broker and worker ran: on this one host, sharing its cores;
    with a cluster, which node the clients connect to."""
    try:
        broker_version = management.overview().get("rabbitmq_version")
        nodes = cluster_nodes(management)
    except Exception as exc:  # the placement note must not fail the run
        broker_version, nodes = f"unknown ({exc})", []
    urls = [part.strip() for part in broker.split(";") if part.strip()]
    first = urlsplit(urls[0]) if urls else None
    connects_to = f"{first.hostname}:{first.port or 5672}" if first else "-"
    if len(nodes) > 1:
        where = (
            f"RabbitMQ {broker_version}, a cluster of {len(nodes)} nodes ({', '.join(nodes)}) "
            f"on this host; every client connects to the first URL ({connects_to}) and fails "
            "over to the next"
        )
    else:
        where = f"RabbitMQ {broker_version} on this host (loopback TCP)"
    return {
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "producer": "a child process of the bench (one thread), on this host",
        "broker": where,
        "broker_nodes": nodes,
        "connects_to": connects_to,
        "worker": "one `celery worker` process per measurement (prefork: parent + pool "
        "children) on this host, all started up front; those not being measured sit idle",
        "pinning": "none: producer, broker and worker share every core",
        "idle_workers_during_measurements": True,
        "rounds": "two measurements at a time, rounds back to back"
        if overlap
        else "interleaved: round n of every measurement, then round n+1 in reverse order",
    }


def run_bench(
    *,
    broker: str,
    redis_url: str,
    management: ManagementAPI,
    run_dir: Path,
    cache_dir: Path,
    quick: bool,
    seed: int,
    build_speedups_now: bool,
    overlap: bool,
    only: list[str] | None,
    log: Callable[[str], None],
    tasks: int | None = None,
    rounds: int | None = None,
    install_peers: bool = True,
) -> dict[str, Any]:
    """Every measurement, then the rows, the targets and the document.
    ``tasks`` scales every batch (raw messages and latency samples in
    proportion), ``rounds`` replaces the mode's round count."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    counts = QUICK if quick else FULL
    if tasks is not None:
        scale = tasks / counts.tasks
        counts = replace(
            counts,
            tasks=tasks,
            raw_messages=max(int(counts.raw_messages * scale), 100),
            latency_samples=max(int(counts.latency_samples * scale), 10),
        )
    if rounds is not None:
        counts = replace(counts, rounds=rounds)
    shipped = shipped_variant()
    # Build py-amqp's speedups only when a selected measurement runs on them.
    needs_speedups = any(
        TRANSPORTS[spec.variant.transport].speedups
        for spec in select(plan(shipped, [*TRANSPORTS]), only)
    )
    transports = transport_availability(
        cache_dir, build=build_speedups_now and needs_speedups, log=log
    )
    specs = select(
        plan(shipped, [name for name, info in transports.items() if info["available"]])
        + plan_peers(shipped),
        only,
    )
    peers: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if any(spec.kind == "dramatiq" for spec in specs):
        peers["dramatiq"] = peer_availability(PYPROJECT, install=install_peers, log=log)
        if not peers["dramatiq"]["available"]:
            for spec in specs:
                if spec.kind == "dramatiq":
                    skipped[spec.id] = peers["dramatiq"]["detail"]
            specs = [spec for spec in specs if spec.kind != "dramatiq"]
    runner = Runner(
        broker=broker,
        redis_url=redis_url,
        management=management,
        run_dir=run_dir,
        cache_dir=cache_dir,
        counts=counts,
        seed=seed,
        log=log,
    )
    load_before = os.getloadavg()
    started = time.monotonic()
    measurements = runner.run(specs, overlap=overlap)
    # A smoke run's (and an overlapped run's) figures are not comparable.
    judged = not quick and not overlap
    return {
        "schema": stats.SCHEMA_VERSION,
        "mode": "quick" if quick else "full",
        "seed": seed,
        "counts": counts.__dict__,
        "shipped": shipped.as_dict(),
        "versions": {
            "python": platform.python_version(),
            "celery": version("celery"),
            "kombu": version("kombu"),
            "amqp": version("amqp"),
        },
        "placement": placement(overlap, management, broker),
        "load_average": {"before": list(load_before), "after": list(os.getloadavg())},
        "seconds": round(time.monotonic() - started, 1),
        "vhost_prefix": f"bench-{runner.token}-",
        "transports": transports,
        "peers": peers,
        "skipped": {
            **skipped,
            **{
                f"{m['id']} {name}": why
                for m in measurements
                for name, why in (m.get("missing") or {}).items()
            },
        },
        "measurements": measurements,
        "rows": stats.build_rows(measurements),
        "queue_types": stats.compare_queue_types(measurements),
        "judged": judged,
        "targets": targets.evaluate(measurements) if judged else [],
    }
