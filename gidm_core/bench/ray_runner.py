"""`bench --ray`: the suite's jobs as Ray tasks, on a local Ray or a cluster (`--address`, or `RAY_ADDRESS`).

Each task runs the same `runners.run_job` as the other executors and returns the job's JSON to the driver, which
writes it: the cluster's nodes need the project and its environment, not the driver's filesystem. Ray is imported
only here, and only when `--ray` is given (it comes with requirements-scale.txt).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

from ..ray_session import import_ray, ray_session
from .runners import Executor, Job, Outcome, failure, run_job


def run_on_ray(todo: list[Job], workers: int, threads: int, address: str | None = None
               ) -> Iterator[tuple[Job, Outcome]]:
    """Every job as a Ray task, yielded as each finishes. A task asks for `threads` CPUs (the torch threads it
    runs) and a GPU when its device is CUDA; a local Ray gets `workers` tasks' worth of CPUs. A worker that dies
    is retried once (a lost node), then reported as that job's failure."""
    cpus = max(1, threads)
    with ray_session(address, workers * cpus) as ray:
        task = ray.remote(max_retries=1)(run_job)
        pending = {task.options(num_cpus=cpus, num_gpus=int(job.device.startswith("cuda"))).remote(job, threads): job
                   for job in todo}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:  # run_job never raises: its worker died, or could not load it
                outcome = failure(getattr(error, "cause", None) or error)
            yield job, outcome


def ray_executor(address: str | None) -> Executor:
    """`run_on_ray` bound to `address`, checking first that Ray is installed (before any model loads)."""
    import_ray()
    return partial(run_on_ray, address=address)
