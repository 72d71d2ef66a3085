"""Running a suite: every job not already on disk, largest first, through an executor (`runners.py`: this process,
spawned worker processes, or Ray), recording each job as it finishes; then the aggregate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .aggregate import aggregate
from .grid import Row
from .jobs import Cell, SpeedProbe, cell_path
from .runners import Executor, error_path, record, run_in_pool, run_serial


def run_suite(rows: list[Row], probes: list[SpeedProbe], out: Path, workers: int = 1, threads: int = 1,
              device: str = "auto", log: Callable[[str], None] = tqdm.write, suite: str = "",
              executor: Executor | None = None) -> dict[str, Any]:
    """Run every cell of the suite not already in `out/cells`, then aggregate. Returns the aggregate.

    `executor` defaults to this process for one worker, else a process pool; a failed cell is logged, written to
    `out/cells/<id>.error.txt` and left out of the aggregate (its `missing_cells`), and the rest go on."""
    (out / "cells").mkdir(parents=True, exist_ok=True)
    jobs: dict[str, Cell | SpeedProbe] = {}
    for job in [*probes, *(c for row in rows for c in row.cells)]:
        job = replace(job, device=device)
        jobs.setdefault(job.id, job)
    todo = [j for j in jobs.values() if not cell_path(out, j).is_file()]
    todo.sort(key=lambda j: -j.cost())
    log(f"{len(jobs)} cells, {len(jobs) - len(todo)} already in {out / 'cells'}, {len(todo)} to run")
    if executor is None:
        executor = run_serial if workers <= 1 or len(todo) <= 1 else run_in_pool
    started = time.perf_counter()
    failed = 0
    with tqdm(total=len(todo), unit="cell", disable=None) as bar:  # no bar when stderr is not a terminal
        for i, (job, outcome) in enumerate(executor(todo, workers, threads), 1):
            record(out, job, outcome)
            failed += outcome.data is None
            status = f"FAILED: {outcome.error} (in {error_path(out, job)})" if outcome.data is None else "done"
            log(f"[{i}/{len(todo)}] {job.id} {status} ({time.perf_counter() - started:.0f} s)")
            bar.update()
    if failed:
        log(f"{failed} of {len(todo)} cells failed; a rerun retries them")
    suite_rows = [replace(r, cells=tuple(replace(c, device=device) for c in r.cells)) for r in rows]
    return aggregate(suite_rows, [replace(p, device=device) for p in probes], out,
                     run_seconds=time.perf_counter() - started if todo else None, ran=len(todo), suite=suite)
