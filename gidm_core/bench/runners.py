"""How a suite's jobs run: one job -> `Outcome` in whatever process runs it (`run_job`), and one place that writes
outcomes on the driver (`record`). An executor takes the to-do jobs and yields (job, outcome) as each one finishes:
`run_serial` in this process, `run_in_pool` in spawned worker processes, `ray_runner.run_on_ray` as Ray tasks.
Workers write nothing, so a cluster's nodes need not share the driver's filesystem; a job that raises, or whose
worker dies, becomes a failed outcome that the driver reports while the other jobs go on.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cells import run_cell
from .jobs import Cell, SpeedProbe, cell_path
from .speed import run_speed

Job = Cell | SpeedProbe


@dataclass(frozen=True)
class Outcome:
    """What one job gave back: its JSON dict, or `error` (one line) and `detail` (the traceback) when it failed."""

    data: dict[str, Any] | None
    error: str = ""
    detail: str = ""


Executor = Callable[[list[Job], int, int], Iterator[tuple[Job, Outcome]]]  # (todo, workers, threads) -> outcomes


def failure(error: BaseException, detail: str = "") -> Outcome:
    """A failed outcome: the exception's type and the first line of its message (at most 300 characters), and
    `detail` (else the whole message) for the error file."""
    lines = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return Outcome(None, reason if len(reason) <= 300 else reason[:299] + "…", detail or str(error))


def run_job(job: Job, threads: int) -> Outcome:
    """Run one job in this process with `threads` torch threads (0: torch's default). Never raises an `Exception`:
    every executor reports a failing cell the same way, and one bad cell does not stop a grid."""
    try:
        if threads > 0:
            torch.set_num_threads(threads)
        return Outcome(run_speed(job) if isinstance(job, SpeedProbe) else run_cell(job))
    except Exception as error:  # noqa: BLE001 - any cell bug or bad spec is that cell's failure, reported
        return failure(error, traceback.format_exc())


def error_path(out: Path, job: Job) -> Path:
    """Where a failed job's reason lives, beside the cell files (a rerun retries it; success removes it)."""
    return cell_path(out, job).with_suffix(".error.txt")


def record(out: Path, job: Job, outcome: Outcome) -> None:
    """Write a job's JSON atomically, or its error file when it failed."""
    path = cell_path(out, job)
    if outcome.data is None:
        error_path(out, job).write_text(f"{outcome.error}\n\n{outcome.detail}".rstrip() + "\n")
        return
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(outcome.data, indent=1))
    tmp.replace(path)
    error_path(out, job).unlink(missing_ok=True)


def run_serial(todo: list[Job], workers: int, threads: int) -> Iterator[tuple[Job, Outcome]]:
    """Every job in this process, in order (`workers` is unused: one at a time)."""
    for job in todo:
        yield job, run_job(job, threads)


def run_in_pool(todo: list[Job], workers: int, threads: int) -> Iterator[tuple[Job, Outcome]]:
    """Jobs in `workers` spawned processes, as they finish; a worker that dies fails the jobs it takes with it."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures = {pool.submit(run_job, job, threads): job for job in todo}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as error:  # noqa: BLE001 - e.g. BrokenProcessPool: the worker was killed
                outcome = failure(error)
            yield futures[future], outcome
