"""Where a command may write its results (checked before any work, so no run is lost at the end), and the run
files every front end writes alike (the loss history as CSV).

Shared by every command that writes a folder and by the app's export; it imports nothing else from the package.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .errors import UsageError

FORBIDDEN_OUT = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_out_folder(out: Path) -> Path:
    """Refuse an output folder that cannot be created or written (a file, a path under a file, /proc, /sys,
    /dev, a read-only place) before any work, so no run is lost at the end."""
    path = Path(os.path.abspath(out))
    real = Path(os.path.realpath(path))
    if any(p == forbidden or forbidden in p.parents for p in (path, real) for forbidden in FORBIDDEN_OUT):
        raise UsageError(f"--out {out}: not a place for results (a system folder)")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: {existing} is not writable")
    return path


def write_loss_csv(history: list[dict], path: Path) -> None:
    """One row per iteration: iteration, phase, then every loss term any phase reported."""
    columns = ["iteration", "phase"]
    for row in history:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
