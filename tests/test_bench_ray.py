"""`bench --ray`: Ray tasks give the same cells as a serial run, skip cached cells, and report a failing cell (or a
dead worker) while the others complete.

A two-cell grid (the tiny suite's first row: DLG and GIDM on `random:tiny-32`, 12 iterations each, one torch thread
everywhere, so runs are deterministic) on one local Ray session shared by the module (a few seconds to start).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gidm_core import bench
from gidm_core.bench import ray_runner
from gidm_core.bench.grid import Row
from gidm_core.bench.runners import error_path, run_serial
from gidm_core.cli import main

pytestmark = pytest.mark.ray

ROWS = bench.build_suite("tiny")[0][:1]
TIMING = {"seconds", "iterations_per_second", "step_seconds", "phase_step_seconds", "seconds_to_25db",
          "seconds_to_30db"}


def _run(rows: list[Row], out: Path, executor, log=None) -> dict:
    return bench.run_suite(rows, [], out, workers=2, threads=1, device="cpu", suite="tiny", executor=executor,
                           log=log or (lambda line: None))


def _metrics(cell: dict) -> dict:
    """Everything a cell measured except how long it took (wall times and memory vary from run to run)."""
    runs = [{**{k: v for k, v in run.items() if k not in TIMING}, "curve": [[p[0], p[2]] for p in run["curve"]]}
            for run in cell["runs"]]
    summary = {k: v for k, v in cell["summary"].items() if k not in TIMING and not k.startswith("seconds")}
    keep = ("id", "config", "model_name", "threat", "device", "torch_threads", "failed_runs")
    return {"runs": runs, "summary": summary, **{k: cell[k] for k in keep}}


@pytest.fixture(scope="module")
def ray_local():
    with ray_runner.ray_session(None, 2) as ray:
        yield ray


@pytest.fixture(scope="module")
def serial_and_ray(tmp_path_factory, ray_local) -> tuple[Path, Path]:
    serial, on_ray = tmp_path_factory.mktemp("serial"), tmp_path_factory.mktemp("ray")
    assert not _run(ROWS, serial, run_serial)["missing_cells"]
    assert not _run(ROWS, on_ray, ray_runner.ray_executor(None))["missing_cells"]
    return serial, on_ray


def test_address_without_ray_is_a_usage_error(tmp_path, capsys):
    assert main(["bench", "--suite", "tiny", "--out", str(tmp_path), "--address", "10.0.0.1:6379"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--address needs --ray" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cells").exists()


def test_ray_missing_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["bench", "--suite", "tiny", "--out", str(tmp_path), "--ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install -r requirements-scale.txt" in err and len(err.splitlines()) == 1


def test_ray_cells_equal_serial_cells(serial_and_ray):
    serial, on_ray = serial_and_ray
    ids = {replace(c, device="cpu").id for c in ROWS[0].cells}
    assert len(ids) == 2
    for cell_id in ids:
        a = json.loads((serial / "cells" / f"{cell_id}.json").read_text())
        b = json.loads((on_ray / "cells" / f"{cell_id}.json").read_text())
        assert a["torch_threads"] == b["torch_threads"] == 1
        assert a["summary"]["psnr"]["n"] == 1 and a["runs"][0]["iterations"] == 12
        assert _metrics(a) == _metrics(b)  # PSNR, MSE, SSIM, LPIPS, matching loss, t, curves: exactly equal


def test_ray_runs_only_the_cells_not_on_disk(serial_and_ray):
    _, on_ray = serial_and_ray
    files = sorted((on_ray / "cells").glob("*.json"))
    kept, removed = files[0], files[1]
    before, text = kept.stat().st_mtime_ns, removed.read_text()
    removed.unlink()
    logged: list[str] = []
    _run(ROWS, on_ray, ray_runner.ray_executor(None), logged.append)
    assert logged[0].endswith("1 already in " + str(on_ray / "cells") + ", 1 to run")
    assert kept.stat().st_mtime_ns == before
    assert _metrics(json.loads(removed.read_text())) == _metrics(json.loads(text))


@pytest.mark.parametrize("executor", ["serial", "ray"])
def test_failing_cell_is_reported_and_the_other_completes(tmp_path, ray_local, executor):
    good = replace(ROWS[0].cells[0], total_iterations=3)
    bad = replace(good, model="random:nope-32")  # no such architecture: the cell raises when it loads its model
    logged: list[str] = []
    results = _run([Row("one good, one bad", "setting", (good, bad))], tmp_path,
                   ray_runner.ray_executor(None) if executor == "ray" else run_serial, logged.append)
    bad, good = replace(bad, device="cpu"), replace(good, device="cpu")
    assert results["missing_cells"] == [bad.id]
    assert (tmp_path / "cells" / f"{good.id}.json").is_file()
    reason = error_path(tmp_path, bad).read_text().splitlines()[0]
    assert reason == "ModelLoadError: unknown random architecture 'nope': choose one of tiny, small, attn, ddpm"
    assert any(line.startswith("[") and bad.id in line and f"FAILED: {reason}" in line for line in logged)
    assert logged[-1] == "1 of 2 cells failed; a rerun retries them"


def test_dead_ray_worker_is_reported(tmp_path, ray_local, monkeypatch):
    # A worker killed mid-task (out of memory, a segfault). A lambda, so that Ray ships it by value, not by name.
    monkeypatch.setattr(ray_runner, "run_job", lambda job, threads: os._exit(1))
    cell = replace(ROWS[0].cells[0], total_iterations=1, device="cpu")
    [(job, outcome)] = list(ray_runner.run_on_ray([cell], workers=1, threads=1))
    assert job == cell and outcome.data is None
    assert outcome.error.startswith("WorkerCrashedError: The worker died unexpectedly")
    assert "\n" not in outcome.error
