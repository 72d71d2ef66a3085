"""The paper's claims, each checked against a results.json: confirmed, refuted, mixed, or cannot tell, with the
rows that say so. The rules are stated in each claim's text, so a reader can check the verdict by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..methods import METHOD_LABELS

MARGIN_DB = 1.0  # a method "beats" another by more than this; closer is a tie
NEAR_IDENTICAL = (30.0, 0.05)  # PSNR (dB) at least, LPIPS at most
RECOGNISABLE_DB = 25.0  # "recovers the image"
HIGH_RESOLUTION = 128  # px: what the paper calls high resolution


def _psnr(row: dict, method: str) -> float | None:
    entry = row["methods"].get(method)
    return None if entry is None else entry["psnr"]["mean"]


def _clean(row: dict) -> bool:
    """The rows a claim is judged on: undefended updates (the claims are about them) attacked with L-BFGS (our
    best optimiser: the Adam rows measure the optimiser, not the method)."""
    return row["group"] != "defence" and row["config"].get("optimizer", "lbfgs") == "lbfgs"


def _verdict(outcomes: list[bool | None]) -> str:
    """Each row confirms (True), refutes (False) or ties (None, within the margin)."""
    yes, no, tie = (sum(o is v for o in outcomes) for v in (True, False, None))
    if yes == no == 0:
        return "cannot tell" + (f" ({tie} row(s) within {MARGIN_DB:g} dB)" if tie else "")
    if no == tie == 0:
        return f"confirmed ({yes} of {yes} rows)"
    if yes == tie == 0:
        return f"refuted ({no} of {no} rows)"
    return f"mixed ({yes} confirm, {no} refute, {tie} within {MARGIN_DB:g} dB)"


def _beats_all(row: dict, method: str, others: tuple[str, ...]) -> tuple[bool | None, str]:
    value = _psnr(row, method)
    rivals = [(_psnr(row, m), m) for m in others if _psnr(row, m) is not None]
    if not rivals:
        return None, f"{row['label']}: {METHOD_LABELS[method]} {value:.1f} (alone in its row)"
    best, name = max(rivals)
    diff = value - best
    outcome = True if diff > MARGIN_DB else False if diff < -MARGIN_DB else None
    return outcome, f"{row['label']}: {METHOD_LABELS[method]} {value:.1f} vs {METHOD_LABELS[name]} {best:.1f} " \
                    f"({diff:+.1f})"


def _gidm_beats(rows: list[dict]) -> tuple[str, list[str]]:
    picked = [r for r in rows if _clean(r) and _psnr(r, "gidm") is not None
              and any(_psnr(r, m) is not None for m in ("gidm-latent", "dlg", "ig"))]
    checks = [_beats_all(r, "gidm", ("gidm-latent", "dlg", "ig")) for r in picked]
    return _verdict([c[0] for c in checks]), [c[1] for c in checks]


def _near_identical(rows: list[dict]) -> tuple[str, list[str]]:
    psnr_floor, lpips_ceiling = NEAR_IDENTICAL
    outcomes, lines = [], []
    for row in rows:
        entry = row["methods"].get("gidm")
        if entry is None or not _clean(row) or not row["config"].get("knows_eps", True):
            continue
        psnr, lpips = entry["psnr"]["mean"], entry["lpips"]["mean"]
        outcomes.append(psnr >= psnr_floor and lpips <= lpips_ceiling)
        lines.append(f"{row['label']}: GIDM {psnr:.1f} dB, LPIPS {lpips:.3f}")
    return _verdict(outcomes), lines


def _gidm_plus(rows: list[dict]) -> tuple[str, list[str]]:
    outcomes, lines = [], []
    for row in rows:
        value = _psnr(row, "gidm-plus")
        if value is None or not _clean(row):
            continue
        outcome, line = _beats_all(row, "gidm-plus", ("dlg", "ig", "gidm", "gidm-latent"))
        outcomes.append(value >= RECOGNISABLE_DB and outcome is not False)
        lines.append(line)
    return _verdict(outcomes), lines


def _high_resolution(rows: list[dict]) -> tuple[str, list[str]]:
    picked = [r for r in rows if r["config"].get("size", 32) >= HIGH_RESOLUTION and _psnr(r, "gidm") is not None]
    if not picked:
        return "cannot tell", [f"no row at {HIGH_RESOLUTION} px or more in this run (the full suite adds one with "
                               "--device cuda)"]
    return _verdict([_psnr(r, "gidm") >= RECOGNISABLE_DB for r in picked]), \
        [f"{r['label']}: GIDM {_psnr(r, 'gidm'):.1f} dB" for r in picked]


CLAIMS: list[tuple[str, Callable[[list[dict]], tuple[str, list[str]]]]] = [
    (f"GIDM beats its latent-only ablation and the baselines (GIDM > GIDM-latent, DLG, IG by more than "
     f"{MARGIN_DB:g} dB at equal time)", _gidm_beats),
    (f"Near-identical reconstructions (GIDM at >= {NEAR_IDENTICAL[0]:g} dB and LPIPS <= {NEAR_IDENTICAL[1]:g}, eps "
     "and t known)", _near_identical),
    (f"GIDM+ recovers the image with eps and t private (>= {RECOGNISABLE_DB:g} dB and not beaten by another "
     "method in its row)", _gidm_plus),
    (f"High resolution works (GIDM >= {RECOGNISABLE_DB:g} dB at {HIGH_RESOLUTION} px or more)", _high_resolution),
]


def claims(results: dict[str, Any]) -> list[str]:
    """One markdown bullet per claim: the verdict, then the rows it rests on (undefended, L-BFGS: `_clean`)."""
    rows = [r for r in results["rows"] if r["methods"]]
    lines = []
    for claim, check in CLAIMS:
        verdict, evidence = check(rows)
        lines.append(f"- **{claim}: {verdict}.** " + ("; ".join(evidence) if evidence else "no row tests it") + ".")
    return lines
