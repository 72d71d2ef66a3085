"""Running a suite: every job not already on disk, largest first, in this process or in spawned worker processes,
each job's JSON written atomically; then the aggregate."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .aggregate import aggregate
from .cells import run_cell
from .grid import Row
from .jobs import Cell, SpeedProbe, cell_path
from .speed import run_speed


def _execute(job: Cell | SpeedProbe, out: str, threads: int) -> tuple[str, float]:
    """Run one job in this (worker) process and write its JSON atomically."""
    if threads > 0:
        torch.set_num_threads(threads)
    data = run_speed(job) if isinstance(job, SpeedProbe) else run_cell(job)
    path = cell_path(Path(out), job)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return job.id, data.get("cell_seconds", 0.0)


def run_suite(rows: list[Row], probes: list[SpeedProbe], out: Path, workers: int = 1, threads: int = 1,
              device: str = "auto", log: Callable[[str], None] = print, suite: str = "") -> dict[str, Any]:
    """Run every cell of the suite not already in `out/cells`, then aggregate. Returns the aggregate."""
    (out / "cells").mkdir(parents=True, exist_ok=True)
    jobs: dict[str, Cell | SpeedProbe] = {}
    for job in [*probes, *(c for row in rows for c in row.cells)]:
        job = replace(job, device=device)
        jobs.setdefault(job.id, job)
    todo = [j for j in jobs.values() if not cell_path(out, j).is_file()]
    todo.sort(key=lambda j: -j.cost())
    log(f"{len(jobs)} cells, {len(jobs) - len(todo)} already in {out / 'cells'}, {len(todo)} to run")
    started = time.perf_counter()
    if workers <= 1 or len(todo) <= 1:
        for i, job in enumerate(todo, 1):
            _execute(job, str(out), threads)
            log(f"[{i}/{len(todo)}] {job.id} ({time.perf_counter() - started:.0f} s)")
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_execute, job, str(out), threads) for job in todo]
            for i, future in enumerate(as_completed(futures), 1):
                job_id, _ = future.result()
                log(f"[{i}/{len(todo)}] {job_id} ({time.perf_counter() - started:.0f} s)")
    suite_rows = [Row(r.label, r.group, tuple(replace(c, device=device) for c in r.cells), r.strength,
                      r.defence_kind) for r in rows]
    return aggregate(suite_rows, [replace(p, device=device) for p in probes], out,
                     run_seconds=time.perf_counter() - started, suite=suite)
