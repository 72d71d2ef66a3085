"""Line plots as PNG files, drawn with matplotlib: the benchmark's figures and the federation's leakage curves.

Each series is keyed by a method name (drawn in the method's registry colour and labelled with its label) or by any
other name (a federation's clients), which takes the palette in turn.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, and no GUI toolkit imported in a server or a worker
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen before pyplot loads)

from .methods import METHOD_LABELS, SPECS  # noqa: E402

COLOURS = {spec.name: spec.colour for spec in SPECS}
Series = dict[str, list[tuple[float, float]]]


def colour(key: str, index: int) -> tuple[float, float, float]:
    """A method's own colour; any other series takes the palette in turn (RGB in [0, 1])."""
    palette = list(COLOURS.values())
    return tuple(c / 255 for c in COLOURS.get(key, palette[index % len(palette)]))


def line_plot(series: Series, title: str, xlabel: str, ylabel: str, path: Path, logx: bool = False) -> None:
    """One PNG with a line per non-empty series (markers when a line has few points)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    try:
        for index, (key, points) in enumerate((k, v) for k, v in series.items() if v):
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o" if len(points) < 8 else None, label=METHOD_LABELS.get(key, key),
                    color=colour(key, index))
        if logx:
            ax.set_xscale("log")
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
