"""Paired statistics for the claims: two methods compared on the same (image group, client seed) runs, the mean
difference with a seeded percentile-bootstrap 95 % interval, and a verdict only where the interval excludes 0.

Pairing removes what the runs share (an easy face, a lucky t) from the comparison, so a few runs per cell can
already tell two methods apart; an unpaired mean of two or three runs cannot say how sure it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SEED = 0  # the intervals are reproducible: the same results give the same words
RESAMPLES = 10_000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean (of differences, or of values against a threshold) with its bootstrap interval over `n` runs."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def sign(self) -> bool | None:
        """True when the whole interval is above 0, False when below, None when it holds 0 (cannot tell)."""
        return True if self.low > 0 else False if self.high < 0 else None

    def describe(self) -> str:
        if self.n < 2:
            return f"{self.mean:+.1f}, n = 1: no interval"
        return f"{self.mean:+.1f} [{self.low:+.1f}, {self.high:+.1f}], n = {self.n}"


def bootstrap(values: list[float], seed: int = BOOTSTRAP_SEED, resamples: int = RESAMPLES,
              level: float = LEVEL) -> Interval:
    """The mean of `values` and its percentile-bootstrap interval (resampling the runs with replacement); one run
    has no interval (it spans everything, so it decides nothing)."""
    if not values:
        raise ValueError("no paired runs to compare")
    data = np.asarray(values, dtype=np.float64)
    if data.size < 2:
        return Interval(float(data[0]), -np.inf, np.inf, 1)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, (resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high), int(data.size))


def run_key(run: dict) -> tuple[tuple[str, ...], int]:
    """What pairs two runs: the same victims and the same client seed (hence the same secrets and update)."""
    return tuple(run["images"]), int(run["client_seed"])


def scores(cell: dict | None, metric: str = "psnr") -> dict[tuple[tuple[str, ...], int], float]:
    """A cell's finished runs by `run_key`: their `metric`."""
    if cell is None:
        return {}
    return {run_key(r): r[metric] for r in cell.get("runs", [])
            if r.get("status") in ("done", "stopped") and r.get(metric) is not None}


def paired_difference(a: dict[tuple, float], b: dict[tuple, float]) -> Interval | None:
    """Mean of a - b over the runs both have (None when they share none)."""
    shared = sorted(set(a) & set(b))
    return bootstrap([a[k] - b[k] for k in shared]) if shared else None
