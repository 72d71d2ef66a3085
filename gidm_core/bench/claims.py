"""The paper's claims, each checked against a results.json: confirmed, refuted, mixed, or cannot tell, with the
rows that say so. A row decides only where the bootstrap 95 % interval of its paired difference (or of its margin
over a threshold) excludes 0 (`paired.py`); the rules are stated in each claim's text, so a reader can check the
verdict by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..methods import METHOD_LABELS
from .paired import Interval, bootstrap, paired_difference, scores

NEAR_IDENTICAL = (30.0, 0.05)  # PSNR (dB) at least, LPIPS at most
RECOGNISABLE_DB = 25.0  # "recovers the image"
HIGH_RESOLUTION = 128  # px: what the paper calls high resolution


def _psnr(row: dict, method: str) -> float | None:
    entry = row["methods"].get(method)
    return None if entry is None else entry["psnr"]["mean"]


# Row groups outside the paper's claims: defences (the claims are about undefended updates), controls (an update of
# another image or noise: they test the attack, not the paper), and what goes beyond the paper's one image and one
# FedSGD gradient (batches, realistic clients), which the table shows but the paper never claims.
NOT_CLAIMED = ("defence", "control", "batch", "realistic clients")


def _clean(row: dict) -> bool:
    """The rows a claim is judged on: the paper's own regime (`NOT_CLAIMED` left out) attacked with L-BFGS (our
    best optimiser: the Adam rows measure the optimiser, not the method)."""
    return row["group"] not in NOT_CLAIMED and row["config"].get("optimizer", "lbfgs") == "lbfgs"


Cells = dict[str, dict]  # results.json's "cells": cell id -> its JSON, runs included


def _runs(row: dict, method: str, cells: Cells, metric: str = "psnr") -> dict[tuple, float]:
    entry = row["methods"].get(method)
    return {} if entry is None else scores(cells.get(entry.get("cell")), metric)


def _verdict(outcomes: list[bool | None]) -> str:
    """Each row confirms (True), refutes (False), or cannot tell (None: its interval holds 0)."""
    yes, no, unsure = (sum(o is v for o in outcomes) for v in (True, False, None))
    if yes == no == 0:
        return "cannot tell" + (f" ({unsure} row(s) whose 95 % interval holds 0)" if unsure else "")
    if no == unsure == 0:
        return f"confirmed ({yes} of {yes} rows)"
    if yes == unsure == 0:
        return f"refuted ({no} of {no} rows)"
    return f"mixed ({yes} confirm, {no} refute, {unsure} cannot tell)"


def _against(value: dict[tuple, float], threshold: float) -> Interval | None:
    """The runs' mean minus `threshold`, with its interval."""
    return bootstrap([v - threshold for v in value.values()]) if value else None


def _beats_all(row: dict, method: str, others: tuple[str, ...], cells: Cells) -> tuple[bool | None, str]:
    """`method` against the best other method of the row (by mean), paired on the runs both made."""
    value = _psnr(row, method)
    rivals = [(_psnr(row, m), m) for m in others if _psnr(row, m) is not None]
    if not rivals:
        return None, f"{row['label']}: {METHOD_LABELS[method]} {value:.1f} (alone in its row)"
    best, name = max(rivals)
    diff = paired_difference(_runs(row, method, cells), _runs(row, name, cells))
    text = f"{row['label']}: {METHOD_LABELS[method]} {value:.1f} vs {METHOD_LABELS[name]} {best:.1f} "
    if diff is None:
        return None, text + "(no runs in common)"
    return diff.sign, text + f"({diff.describe()})"


def _gidm_beats(rows: list[dict], cells: Cells) -> tuple[str, list[str]]:
    picked = [r for r in rows if _clean(r) and _psnr(r, "gidm") is not None
              and any(_psnr(r, m) is not None for m in ("gidm-latent", "dlg", "ig"))]
    checks = [_beats_all(r, "gidm", ("gidm-latent", "dlg", "ig"), cells) for r in picked]
    return _verdict([c[0] for c in checks]), [c[1] for c in checks]


def _both(a: bool | None, b: bool | None) -> bool | None:
    """Two conditions that must both hold: False if either fails for sure, True if both hold for sure."""
    return False if False in (a, b) else True if a is b is True else None


def _near_identical(rows: list[dict], cells: Cells) -> tuple[str, list[str]]:
    psnr_floor, lpips_ceiling = NEAR_IDENTICAL
    outcomes, lines = [], []
    for row in rows:
        if "gidm" not in row["methods"] or not _clean(row) or not row["config"].get("knows_eps", True):
            continue
        psnr = _against(_runs(row, "gidm", cells), psnr_floor)
        lpips = _against({k: -v for k, v in _runs(row, "gidm", cells, "lpips").items()}, -lpips_ceiling)
        if psnr is None or lpips is None:
            continue
        outcomes.append(_both(psnr.sign, lpips.sign))
        lines.append(f"{row['label']}: GIDM {psnr.mean + psnr_floor:.1f} dB ({psnr.describe()} over "
                     f"{psnr_floor:g}), LPIPS {lpips_ceiling - lpips.mean:.3f}")
    return _verdict(outcomes), lines


def _gidm_plus(rows: list[dict], cells: Cells) -> tuple[str, list[str]]:
    outcomes, lines = [], []
    for row in rows:
        runs = _runs(row, "gidm-plus", cells)
        if not runs or not _clean(row):
            continue
        recovers = _against(runs, RECOGNISABLE_DB)
        beaten, line = _beats_all(row, "gidm-plus", ("dlg", "ig", "gidm", "gidm-latent"), cells)
        outcomes.append(_both(recovers.sign, beaten is not False))  # "not beaten": no interval below 0
        lines.append(f"{line}, {recovers.describe()} dB over {RECOGNISABLE_DB:g}")
    return _verdict(outcomes), lines


def _high_resolution(rows: list[dict], cells: Cells) -> tuple[str, list[str]]:
    picked = [(r, _against(_runs(r, "gidm", cells), RECOGNISABLE_DB)) for r in rows
              if r["config"].get("size", 32) >= HIGH_RESOLUTION]
    picked = [(r, i) for r, i in picked if i is not None]
    if not picked:
        return "cannot tell", [f"no row at {HIGH_RESOLUTION} px or more in this run (the full suite adds one with "
                               "--device cuda)"]
    return _verdict([i.sign for _, i in picked]), \
        [f"{r['label']}: GIDM {i.mean + RECOGNISABLE_DB:.1f} dB ({i.describe()} over {RECOGNISABLE_DB:g})"
         for r, i in picked]


CLAIMS: list[tuple[str, Callable[[list[dict], Cells], tuple[str, list[str]]]]] = [
    ("GIDM beats its latent-only ablation and the baselines (GIDM > the best of GIDM-latent, DLG, IG at equal time, "
     "paired on the same runs)", _gidm_beats),
    (f"Near-identical reconstructions (GIDM at >= {NEAR_IDENTICAL[0]:g} dB and LPIPS <= {NEAR_IDENTICAL[1]:g}, eps "
     "and t known)", _near_identical),
    (f"GIDM+ recovers the image with eps and t private (>= {RECOGNISABLE_DB:g} dB and not beaten by another "
     "method in its row)", _gidm_plus),
    (f"High resolution works (GIDM >= {RECOGNISABLE_DB:g} dB at {HIGH_RESOLUTION} px or more)", _high_resolution),
]


def claims(results: dict[str, Any]) -> list[str]:
    """One markdown bullet per claim: the verdict, then the rows it rests on (undefended, L-BFGS: `_clean`), each
    with its mean difference (or margin over the threshold) and bootstrap 95 % interval over the paired runs."""
    rows = [r for r in results["rows"] if r["methods"]]
    cells = results.get("cells", {})
    lines = []
    for claim, check in CLAIMS:
        verdict, evidence = check(rows, cells)
        lines.append(f"- **{claim}: {verdict}.** " + ("; ".join(evidence) if evidence else "no row tests it") + ".")
    return lines
