"""The benchmark's text: results.md (every metric) and the README's results section, from results.json alone."""

from __future__ import annotations

import json
from typing import Any

from ..config import METHOD_LABELS
from .jobs import METHOD_ORDER, THRESHOLDS_DB


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def _pm(stat: dict, spec: str = ".1f") -> str:
    if stat is None or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:{spec}} ± {stat['std']:{spec}}" if stat["n"] > 1 else format(stat["mean"], spec)


def markdown(results: dict[str, Any]) -> str:
    """results.md: the PSNR table, every metric per method and row, and the step-time ratios."""
    lines = [f"# Benchmark results ({results['suite'] or 'custom'} suite)", ""]
    any_cell = next(iter(results["cells"].values()), None)
    if any_cell:
        lines.append(f"Device: {any_cell['device_name']} ({any_cell['device']}, {any_cell['torch_threads']} torch "
                     f"thread(s) per worker); torch {results['torch']}; generated {results['generated']}"
                     + (f"; {results['run_seconds']:.0f} s to run" if results.get("run_seconds") else "")
                     + f"; {results['cpu_seconds']:.0f} CPU-seconds in all cells.")
        lines.append("")
    lines += ["## PSNR (dB, mean ± std over images and seeds), same iteration budget across each row", ""]
    lines.append("| setting | " + " | ".join(METHOD_LABELS[m] for m in METHOD_ORDER) + " |")
    lines.append("|---|" + "---:|" * len(METHOD_ORDER))
    for row in results["rows"]:
        values = [_pm(row["methods"][m]["psnr"]) if m in row["methods"] else "" for m in METHOD_ORDER]
        best = max((row["methods"][m]["psnr"]["mean"] or -1e9, m) for m in row["methods"]) if row["methods"] else None
        if best and len(row["methods"]) > 1:
            i = METHOD_ORDER.index(best[1])
            values[i] = f"**{values[i]}**"
        lines.append(f"| {row['label']} | " + " | ".join(values) + " |")
    lines += ["", "## Every metric", "",
              "t acc. and eps err. only where the client kept them private; s to 25/30 dB counts runs that got "
              "there (n/runs); step ratio = seconds per iteration / one forward+backward of the same UNet.", "",
              "| setting | method | iters | PSNR | SSIM | LPIPS | MSE | t acc. | eps err. | wall s | it/s | "
              "s to 25 dB | s to 30 dB | step ratio | peak MB | device |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in results["rows"]:
        for method in METHOD_ORDER:
            e = row["methods"].get(method)
            if e is None:
                continue
            runs = e["psnr"]["n"]
            reach = [f"{_pm(e[f'seconds_to_{d:g}db'])} ({e[f'reached_{d:g}db']}/{runs})" for d in THRESHOLDS_DB]
            lines.append(
                f"| {row['label']} | {METHOD_LABELS[method]} | {_fmt(e['iterations']['mean'], '.0f')} | "
                f"{_pm(e['psnr'])} | {_pm(e['ssim'], '.3f')} | {_pm(e['lpips'], '.3f')} | {_pm(e['mse'], '.4f')} | "
                f"{_pm(e['t_accuracy'], '.2f')} | {_pm(e['eps_error'], '.2f')} | {_pm(e['seconds'])} | "
                f"{_pm(e['iterations_per_second'])} | {reach[0]} | {reach[1]} | {_fmt(e['step_ratio'], '.1f')} | "
                f"{_fmt(e['peak_memory_mb'], '.0f')} | {e['device']} |")
    if results["speed"]:
        labels = list(dict.fromkeys(label for probe in results["speed"] for label in probe["cases"]))
        lines += ["", "## Step time as a ratio to one forward+backward of the same UNet (same process)", "",
                  "Median over interleaved repeats of (time of n + 2 steps - time of 2 steps) / n.", "",
                  "| model | optimiser | size | batch | DDIM K | fwd+bwd ms | " + " | ".join(labels) + " |",
                  "|---|---|---:|---:|---:|---:|" + "---:|" * len(labels)]
        for probe in results["speed"]:
            c = probe["config"]
            lines.append(f"| {probe['model_name']} | {c.get('optimizer', 'adam')} | {c['size']} | {c['batch']} | "
                         f"{c['ddim_steps']} | "
                         f"{probe['fwd_bwd_seconds'] * 1000:.1f} | " + " | ".join(
                             f"{probe['cases'][label]['ratio']:.1f}x" if label in probe["cases"] else ""
                             for label in labels) + " |")
    configs = {json.dumps({k: v for k, v in r["config"].items() if k not in ("method",)}, sort_keys=True)
               for r in results["rows"]}
    lines += ["", f"{len(results['cells'])} cells; {len(configs)} settings. Each cell's config, per-run numbers and "
              "PSNR-against-iterations curve are in results.json (`cells`)."]
    if results["missing_cells"]:
        lines.append(f"Missing cells (not run yet): {len(results['missing_cells'])}.")
    return "\n".join(lines) + "\n"


def readme_section(results: dict[str, Any], margin_db: float = 1.0) -> str:
    """The README's results section, stated from results.json alone: where GIDM beats the best baseline (DLG or IG)
    by more than `margin_db`, where it ties, where it loses, and how GIDM+ fares by t."""
    rows = [r for r in results["rows"] if r["methods"]]
    cells = results["cells"]
    if not rows:
        return "No results yet.\n"
    first = next(iter(cells.values()))
    models = sorted({e["model_name"] for r in rows for e in r["methods"].values()})
    runs = sorted({c["summary"]["psnr"]["n"] for c in cells.values()})
    budgets = sorted({r["config"]["iterations"] for r in rows})
    lines = [f"Numbers from `python -m gidm_core bench --suite {results['suite']}` ({first['device_name']}, "
             f"{first['device']}); model(s): {', '.join(models)}; {'/'.join(map(str, budgets))} iterations per "
             f"method in every row; {'/'.join(map(str, runs))} run(s) (images x seeds) per cell. PSNR in dB, "
             "mean over runs; full table in results.md.", ""]
    if any(m.startswith("random:") for m in models):
        lines += ["**These numbers attack a randomly initialised UNet**: it has learnt no images, so GIDM's prior "
                  "is no prior at all here; the comparison says nothing yet about trained models.", ""]

    def psnr(row: dict, method: str) -> float | None:
        entry = row["methods"].get(method)
        return None if entry is None else entry["psnr"]["mean"]

    verdicts: dict[str, list[str]] = {"beats": [], "ties": [], "loses": []}
    for row in rows:
        baselines = [(psnr(row, m), METHOD_LABELS[m]) for m in ("dlg", "ig") if psnr(row, m) is not None]
        for method in ("gidm", "gidm-latent"):
            value = psnr(row, method)
            if value is None or not baselines:
                continue
            best, name = max(baselines)
            diff = value - best
            verdict = "beats" if diff > margin_db else "loses" if diff < -margin_db else "ties"
            verdicts[verdict].append(f"{row['label']}: {METHOD_LABELS[method]} {value:.1f} vs {name} {best:.1f} "
                                     f"({diff:+.1f})")
    for verdict, title in (("beats", f"GIDM beats the best baseline (by more than {margin_db:g} dB)"),
                           ("ties", f"GIDM within {margin_db:g} dB of the best baseline"),
                           ("loses", f"GIDM loses to a baseline (by more than {margin_db:g} dB)")):
        lines.append(f"- **{title}:** " + ("; ".join(verdicts[verdict]) if verdicts[verdict] else "nowhere") + ".")
    by_t = []
    for row in rows:
        config = row["config"]
        entry = row["methods"].get("gidm-plus")
        if entry is None or config.get("knows_t", True) or config.get("t") is None:
            continue
        dlg = psnr(row, "dlg")
        by_t.append((config["t"], row["label"], entry, dlg))
    if by_t:
        lines += ["", "GIDM+ (private eps and t) by the client's timestep t:", "",
                  "| t | setting | GIDM+ PSNR | DLG PSNR (joint x0, eps) | GIDM+ t accuracy | GIDM+ eps error |",
                  "|---:|---|---:|---:|---:|---:|"]
        for t, label, entry, dlg in sorted(by_t, key=lambda item: item[0]):
            lines.append(f"| {t} | {label} | {_pm(entry['psnr'])} | {_fmt(dlg, '.1f')} | "
                         f"{_pm(entry['t_accuracy'], '.2f')} | {_pm(entry['eps_error'], '.2f')} |")
    for probe in results.get("speed", []):
        ratios = ", ".join(f"{label} {case['ratio']:.1f}x" for label, case in probe["cases"].items())
        lines += ["", f"Step time with {probe['config'].get('optimizer', 'adam')} ({probe['model_name']}, "
                  f"{probe['config']['size']} px, DDIM K = {probe['config']['ddim_steps']}; one step = one "
                  "evaluation), as a multiple of one forward+backward of the same UNet "
                  f"({probe['fwd_bwd_seconds'] * 1000:.0f} ms): {ratios}."]
    return "\n".join(lines) + "\n"
