"""`bench --ray`: the suite's jobs as Ray tasks, on a local Ray or a cluster (`--address`, or `RAY_ADDRESS`).

Each task runs the same `runners.run_job` as the other executors and returns the job's JSON to the driver, which
writes it: the cluster's nodes need the project and its environment, not the driver's filesystem. Ray is imported
only here, and only when `--ray` is given (it comes with requirements-scale.txt).
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import ModuleType

from ..errors import UserError
from .runners import Executor, Job, Outcome, failure, run_job


def import_ray() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs ray: pip install -r requirements-scale.txt") from None
    return ray


ADDRESS_TIMEOUT_S = 3.0


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Refuse a cluster address where nothing answers within `timeout` seconds, in one line, before Ray starts
    (`ray.init` would otherwise retry for minutes with warnings). "auto" and "local" are Ray's own words."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address}: give the Ray head as HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err)).lower()
        raise UserError(f"--address {address}: no Ray head answers there ({reason} within {timeout:g} s)") from None


@contextmanager
def ray_session(address: str | None, cpus: int) -> Iterator[ModuleType]:
    """Connect to the cluster at `address` (else `RAY_ADDRESS`), or start a quiet local Ray with `cpus` CPUs and no
    dashboard; a session already open in this process is reused and left open."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS")
    where = {"address": address} if address else {"num_cpus": cpus}
    with warnings.catch_warnings():  # a tip about a future default for GPU visibility, printed on every init
        warnings.simplefilter("ignore", FutureWarning)
        ray.init(**where, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()


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
