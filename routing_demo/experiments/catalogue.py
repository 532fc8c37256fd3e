"""The experiments by name, and the one function that runs any of them."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from ..rabbitmq import ManagementAPI
from .lab import Experiment, Lab, Outcome

__all__ = ["EXPERIMENTS", "Experiment", "run_experiment"]


def _experiments() -> dict[str, Experiment]:
    names = ("direct", "topic", "fanout", "priority", "quorum", "deadletter", "rerouting")
    modules = [import_module(f"{__package__}.{name}") for name in names]
    return {module.EXPERIMENT.name: module.EXPERIMENT for module in modules}


#: Name -> experiment, in the order ``all`` runs them.
EXPERIMENTS: dict[str, Experiment] = _experiments()


def run_experiment(
    name: str,
    *,
    broker_url: str,
    backend_url: str,
    management: ManagementAPI,
    run_dir: Path,
    seed: int = 7,
    timeout: float = 60.0,
) -> Outcome:
    """Run experiment ``name`` in the vhost ``broker_url`` names (it must
    exist and be empty); the workers are stopped before this returns."""
    experiment = EXPERIMENTS[name]
    with Lab(
        config_module=experiment.config_module,
        broker_url=broker_url,
        backend_url=backend_url,
        management=management,
        run_dir=run_dir,
        timeout=timeout,
    ) as lab:
        outcome = experiment.new_outcome(lab)
        experiment.drive(lab, outcome, seed)
        outcome.findings["published as (task -> exchange, routing key)"] = lab.publish_summary()
    return outcome
