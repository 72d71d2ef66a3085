"""`tune --ray`: the study's trials as Ray tasks, `plan.workers` at a time, on a local Ray or a cluster.

Optuna stays on the driver (ask, tell): each task gets one point of the space, the shared update and the threat
model, loads the model itself and returns its `TrialOutcome`. A task is not pruned mid-run (the pruner lives on the
driver); its checkpoint losses are reported when it returns. Ray is imported only here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from ..client import SharedUpdate
from ..config import AttackConfig, ThreatModel
from .trial import Referee, TrialOutcome, run_trial


def trial_task(plan: Any, update: SharedUpdate, threat: ThreatModel, config: AttackConfig,
               params: dict[str, Any]) -> TrialOutcome:
    """One trial in a Ray worker: everything it needs arrives as arguments (the worker shares no state)."""
    import torch

    from ..models import load_model

    if plan.threads > 0:
        torch.set_num_threads(plan.threads)
    model = load_model(plan.model, plan.device, allow_local=True)
    prior = None if plan.prior == "attacked" else load_model(plan.prior, plan.device, allow_local=True)
    update = SharedUpdate(tuple(g.to(model.device) for g in update.gradients), update.batch_size, update.image_shape,
                          update.eps, update.t, update.training, update.schedule)
    return run_trial(model, update, threat, config, params, Referee(model, update, threat), prior)


def run_on_ray(study: Any, update: SharedUpdate, threat: ThreatModel, config: Any, plan: Any, trials: int,
               stop: threading.Event | None = None) -> Iterator[tuple[Any, TrialOutcome]]:
    """Ask, run and yield (trial, outcome) until `trials` have returned; `stop` cancels the tasks still running."""
    from ..ray_session import ray_session

    with ray_session(plan.address, plan.workers * max(plan.threads, 1)) as ray:
        task = ray.remote(max_retries=1)(trial_task)
        cpus = max(plan.threads, 1)
        update_ref = ray.put(SharedUpdate(tuple(g.cpu() for g in update.gradients), update.batch_size,
                                          update.image_shape, update.eps, update.t, update.training, update.schedule))
        pending: dict[Any, Any] = {}
        asked = 0

        def submit() -> None:
            nonlocal asked
            trial = study.ask()
            params = config.suggest(trial)
            ref = task.options(num_cpus=cpus, num_gpus=int(plan.device.startswith("cuda"))).remote(
                plan, update_ref, threat, config.attack(params), params)
            pending[ref] = (trial, params)
            asked += 1

        while asked < trials and len(pending) < plan.workers:
            submit()
        while pending:
            if stop is not None and stop.is_set():
                for ref in pending:
                    ray.cancel(ref, force=True)
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            if not ready:
                continue
            trial, params = pending.pop(ready[0])
            try:
                outcome = ray.get(ready[0])
            except ray.exceptions.RayError as error:  # the worker died or could not run the task
                cause = getattr(error, "cause", None) or error
                outcome = TrialOutcome(params, float("inf"), float("inf"), 0, 0.0, "failed",
                                       f"{type(cause).__name__}: {str(cause).strip()[:200]}")
            yield trial, outcome
            if asked < trials:
                submit()
