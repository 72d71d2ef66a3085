"""Aggregation: results.json, results.md, readme_section.md and plots from the cell files a suite left on disk."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..config import DefenceConfig
from ..privacy import epsilon
from .grid import Row
from .jobs import BENCH_VERSION, SpeedProbe, cell_path
from .report import markdown, readme_section


def versions() -> dict[str, str]:
    """The versions a result depends on: Python and the numeric stack."""
    import platform
    from importlib.metadata import version

    return {"python": platform.python_version(),
            **{name: version(name) for name in ("torch", "diffusers", "numpy", "scipy", "scikit-image", "lpips")}}


def aggregate(rows: list[Row], probes: list[SpeedProbe], out: Path, run_seconds: float | None = None,
              ran: int = 0, suite: str = "") -> dict[str, Any]:
    """results.json, results.md, readme_section.md and plots from the cell files in `out/cells`; `run_seconds` is
    the wall time of the invocation that ran `ran` of them (the rest were cached)."""
    cells: dict[str, dict] = {}
    for cell in (c for row in rows for c in row.cells):
        path = cell_path(out, cell)
        if path.is_file():
            cells[cell.id] = json.loads(path.read_text())
    speed = [json.loads(cell_path(out, p).read_text()) for p in probes if cell_path(out, p).is_file()]
    table = []
    for row in rows:
        entries = {}
        for cell in row.cells:
            data = cells.get(cell.id)
            if data is None:
                continue
            entries[cell.method] = {
                "cell": cell.id, **{k: data["summary"][k] for k in data["summary"]},
                "step_ratio": data["step_ratio"], "peak_memory_mb": data["peak_memory_mb"],
                "device": data["device"], "model_name": data["model_name"], "threat": data["threat"],
            }
        defence = DefenceConfig(*row.cells[0].defence) if row.cells else DefenceConfig()
        table.append({"label": row.label, "group": row.group, "setting": row.setting, "dp_epsilon": epsilon(defence),
                      "training_round": row.training_round, "strength": row.strength,
                      "defence_kind": row.defence_kind, "config": asdict(row.cells[0]) if row.cells else {},
                      "methods": entries})
    results = {
        "bench_version": BENCH_VERSION, "suite": suite, "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_seconds": run_seconds, "ran_cells": ran, "torch": torch.__version__, "versions": versions(), "rows": table,
        "speed": speed,
        "cells": cells, "missing_cells": [c.id for r in rows for c in r.cells if c.id not in cells],
        "cpu_seconds": sum(c.get("cell_cpu_seconds", 0.0) for c in [*cells.values(), *speed]),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    (out / "readme_section.md").write_text(readme_section(results))
    from .plots import write_plots

    results["plots"] = write_plots(results, out)
    return results
