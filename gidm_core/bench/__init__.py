"""Benchmark: `python -m gidm_core bench --suite {quick,full} --out DIR`.

Every number the README states comes from here. The grid (`grid.py`) is a list of rows of `Cell`s (`jobs.py`); each
cell is a pure function from its frozen config to a JSON dict (`cells.run_cell`): it loads its own model and images
from their specs, runs every (image group, seed) of the cell, and shares no state with any other cell, so cells can
run in any order, in parallel worker processes, or on a cluster. A cell's file is `DIR/cells/<id>.json`, the id a
stable hash of its config; a rerun skips cells whose file already exists (`suite.py`). `aggregate.py` then writes
results.json, and `report.py` and `plots.py` results.md, the README's section and the plots.

Timing: an attack's wall seconds exclude the evaluator's scoring of events, and every cell times one
forward+backward (a plain training-step gradient) of the same UNet in the same process (`machine.py`), so step
times are reported as ratios that survive a noisy, shared machine. `speed.py` measures each phase's step alone.
The command line is in `command.py`, which only `cli.py` imports.
"""

from __future__ import annotations

from .aggregate import aggregate
from .cells import run_cell
from .grid import SUITES, Row, build_suite, pick_images, pick_models
from .jobs import ATTACKER_SEED_OFFSET, BENCH_VERSION, METHOD_ORDER, THRESHOLDS_DB, Cell, SpeedProbe, cell_path
from .machine import PeakMemory, device_name, time_forward_backward
from .report import markdown, readme_section
from .speed import SPEED_CASES, run_speed
from .suite import run_suite

__all__ = ["ATTACKER_SEED_OFFSET", "BENCH_VERSION", "METHOD_ORDER", "SPEED_CASES", "SUITES", "THRESHOLDS_DB", "Cell", "PeakMemory", "Row",
           "SpeedProbe", "aggregate", "build_suite", "cell_path", "device_name", "markdown",
           "pick_images", "pick_models", "readme_section", "run_cell", "run_speed", "run_suite",
           "time_forward_backward"]
