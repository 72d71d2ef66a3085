"""The benchmark's PNG plots: PSNR against iterations per method, against defence strength, and against t.

matplotlib draws them when it is installed; otherwise a small PIL line plotter does (PIL is already a dependency),
so the benchmark never needs a plotting package to produce its figures.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ..config import METHOD_LABELS

COLOURS = {"dlg": (31, 119, 180), "ig": (255, 127, 14), "gidm-latent": (148, 103, 189), "gidm": (44, 160, 44),
           "gidm-plus": (214, 39, 40)}
Series = dict[str, list[tuple[float, float]]]


def _colour(key: str, index: int) -> tuple[int, int, int]:
    """A method's own colour; any other series (e.g. a federation's clients) takes the palette in turn."""
    palette = list(COLOURS.values())
    return COLOURS.get(key, palette[index % len(palette)])


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def mean_curve(cell: dict) -> list[tuple[float, float]]:
    """PSNR against iteration, averaged over the cell's runs at the iterations every run reported."""
    runs = [r["curve"] for r in cell["runs"] if r.get("curve")]
    if not runs:
        return []
    common = set.intersection(*({p[0] for p in c} for c in runs))
    return [(it, sum(next(p[2] for p in c if p[0] == it) for c in runs) / len(runs)) for it in sorted(common)]


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    written = []
    cells = results["cells"]
    for row in results["rows"]:
        if row["group"] not in ("setting", "size", "model", "batch", "prior"):
            continue
        series = {m: mean_curve(cells[e["cell"]]) for m, e in row["methods"].items() if e["cell"] in cells}
        if any(series.values()):
            path = out / f"psnr_vs_iterations_{_slug(row['label'])}.png"
            line_plot(series, f"PSNR against iterations: {row['label']}", "iteration", "PSNR (dB)", path)
            written.append(path.name)
    for kind in sorted({r["defence_kind"] for r in results["rows"] if r["group"] == "defence"}):
        series: Series = {}
        for row in (r for r in results["rows"] if r["group"] == "defence" and r["defence_kind"] == kind):
            for method, entry in row["methods"].items():
                if entry["psnr"]["mean"] is not None:
                    series.setdefault(method, []).append((row["strength"], entry["psnr"]["mean"]))
        if series:
            path = out / f"psnr_vs_defence_{kind}.png"
            xlabel = "noise std after clipping to norm 1" if kind == "noise" else "fraction pruned"
            line_plot({m: sorted(v) for m, v in series.items()}, f"PSNR against defence strength ({kind})", xlabel,
                      "PSNR (dB)", path, logx=kind == "noise")
            written.append(path.name)
    series = {}
    for row in (r for r in results["rows"] if r["group"] == "t"):
        for method, entry in row["methods"].items():
            if entry["psnr"]["mean"] is not None:
                series.setdefault(method, []).append((row["config"]["t"], entry["psnr"]["mean"]))
    if series:
        path = out / "psnr_vs_t.png"
        line_plot({m: sorted(v) for m, v in series.items()}, "PSNR against the client's timestep (private eps, t)",
                  "t", "PSNR (dB)", path)
        written.append(path.name)
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
