"""The benchmark's PNG plots: PSNR against attack time per setting, against defence strength, against t, and
against the attacked model's training round.

matplotlib draws them when it is installed; otherwise a small PIL line plotter does (PIL is already a dependency),
so the benchmark never needs a plotting package to produce its figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..methods import METHOD_LABELS, SPECS

COLOURS = {spec.name: spec.colour for spec in SPECS}
Series = dict[str, list[tuple[float, float]]]
CURVE_POINTS = 40  # time grid of a mean curve


def _colour(key: str, index: int) -> tuple[int, int, int]:
    """A method's own colour; any other series (e.g. a federation's clients) takes the palette in turn."""
    palette = list(COLOURS.values())
    return COLOURS.get(key, palette[index % len(palette)])


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


def line_plot(series: Series, title: str, xlabel: str, ylabel: str, path: Path, logx: bool = False) -> None:
    series = {k: v for k, v in series.items() if v}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _pil_plot(series, title, xlabel, ylabel, path, logx)
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for index, (key, points) in enumerate(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o" if len(points) < 8 else None, label=METHOD_LABELS.get(key, key),
                color=[c / 255 for c in _colour(key, index)])
    if logx:
        ax.set_xscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if raw <= step * m)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _pil_plot(series: Series, title: str, xlabel: str, ylabel: str, path: Path, logx: bool) -> None:
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, right, top, bottom = 720, 450, 70, 150, 40, 55
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    try:
        draw.font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has only the bitmap font
        pass
    fx = (lambda x: math.log10(x)) if logx else (lambda x: x)
    points = [(fx(x), y) for v in series.values() for x, y in v]
    if not points:
        image.save(path)
        return
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = min(p[1] for p in points), max(p[1] for p in points)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    pad = max((y1 - y0) * 0.08, 0.5)
    y0, y1 = y0 - pad, y1 + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (width - left - right),
                height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom))

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    for y in _nice_ticks(y0, y1):
        _, py = to_px(x0, y)
        draw.line([left, py, width - right, py], fill=(225, 225, 225))
        draw.text((left - 8, py), f"{y:g}", fill="black", anchor="rm")
    xticks = ([e for e in range(math.floor(x0), math.ceil(x1) + 1)] if logx else _nice_ticks(x0, x1))
    for x in xticks:
        if x0 - 1e-9 <= x <= x1 + 1e-9:
            px, _ = to_px(x, y0)
            draw.line([px, height - bottom, px, height - bottom + 4], fill="black")
            draw.text((px, height - bottom + 8), f"1e{x:g}" if logx else f"{x:g}", fill="black", anchor="mt")
    draw.text(((left + width - right) / 2, 12), title, fill="black", anchor="mt")
    draw.text(((left + width - right) / 2, height - 18), xlabel, fill="black", anchor="mt")
    draw.text((8, top - 20), ylabel, fill="black")
    for i, (key, values) in enumerate(series.items()):
        colour = _colour(key, i)
        pixels = [to_px(fx(x), y) for x, y in values]
        if len(pixels) > 1:
            draw.line(pixels, fill=colour, width=2)
        if len(pixels) < 8:
            for px, py in pixels:
                draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        ly = top + 10 + 18 * i
        draw.line([width - right + 12, ly, width - right + 36, ly], fill=colour, width=3)
        draw.text((width - right + 42, ly), METHOD_LABELS.get(key, key), fill="black", anchor="lm")
    image.save(path)
