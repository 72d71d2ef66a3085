"""The benchmark's PNG plots: PSNR against attack time per setting, against defence strength, against t, and
against the attacked model's training round (drawn by `gidm_core.plots`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..plots import Series, line_plot

CURVE_POINTS = 40  # time grid of a mean curve


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def mean_curve(cell: dict) -> list[tuple[float, float]]:
    """PSNR against attack seconds, averaged over the cell's runs on a common time grid (each run holds its last
    reported value until its next report), up to the shortest run's end."""
    runs = [r["curve"] for r in cell["runs"] if r.get("curve")]
    if not runs:
        return []
    end = min(c[-1][1] for c in runs)
    grid = [end * (i + 1) / CURVE_POINTS for i in range(CURVE_POINTS)]

    def at(curve: list[list[float]], second: float) -> float:
        return next((p[2] for p in reversed(curve) if p[1] <= second), curve[0][2])

    return [(s, sum(at(c, s) for c in runs) / len(runs)) for s in grid]


def _by(rows: list[dict], x: Callable[[dict], float]) -> Series:
    """Mean PSNR per method against `x(row)`, over the given rows."""
    series: Series = {}
    for row in rows:
        for method, entry in row["methods"].items():
            if entry["psnr"]["mean"] is not None:
                series.setdefault(method, []).append((x(row), entry["psnr"]["mean"]))
    return {m: sorted(v) for m, v in series.items()}


def _round_rows(rows: list[dict]) -> list[dict]:
    """Federated rows that differ only in the attacked checkpoint: eps and t known, undefended, L-BFGS."""
    return [r for r in rows if r.get("training_round") is not None and r.get("setting") == "federated"
            and r["group"] in ("setting", "size", "model") and r["config"].get("knows_eps")
            and r["config"].get("batch") == 1 and r["config"].get("optimizer") == "lbfgs"
            and r["config"].get("prior") in ("attacked", None)]


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    written = []
    cells, rows = results["cells"], results["rows"]

    def plot(series: Series, name: str, title: str, xlabel: str, logx: bool = False) -> None:
        if any(series.values()):
            line_plot(series, title, xlabel, "PSNR (dB)", out / name, logx=logx)
            written.append(name)

    for row in rows:
        if row["group"] in ("setting", "size", "model", "batch", "optimizer"):
            series = {m: mean_curve(cells[e["cell"]]) for m, e in row["methods"].items() if e["cell"] in cells}
            plot(series, f"psnr_vs_time_{_slug(row['label'])}.png", f"PSNR against attack time: {row['label']}",
                 "attack seconds")
    for kind in sorted({r["defence_kind"] for r in rows if r["group"] == "defence"}):
        picked = [r for r in rows if r["group"] == "defence" and r["defence_kind"] == kind]
        xlabel = "noise std after clipping to norm 1" if kind == "noise" else "fraction pruned"
        plot(_by(picked, lambda r: r["strength"]), f"psnr_vs_defence_{kind}.png",
             f"PSNR against defence strength ({kind})", xlabel, logx=kind == "noise")
    for known in (True, False):
        picked = [r for r in rows if r["group"] == "t" and r["config"].get("knows_t") is known]
        secrets = "eps and t known" if known else "private eps and t"
        plot(_by(picked, lambda r: r["config"]["t"]), f"psnr_vs_t_{_slug(secrets)}.png",
             f"PSNR against the client's timestep ({secrets})", "t")
    for size in sorted({r["config"].get("size") for r in _round_rows(rows)}):
        picked = [r for r in _round_rows(rows) if r["config"].get("size") == size]
        if len({r["training_round"] for r in picked}) > 1:
            plot(_by(picked, lambda r: r["training_round"]), f"psnr_vs_round_{size}px.png",
                 f"Leakage against the attacked model's FedAvg round ({size} px)", "training round")
    return written
