"""GIDM+ per-timestep study: how well x0 and eps come back when the client keeps both eps and t private.

For each t and seed: the client shares one FedSGD gradient of the 32 px astronaut photo with a seeded secret eps;
GIDM+ (threat preset private-eps-t) attacks it with a fixed total budget; the evaluator, who alone has the truth,
scores the attack's final answer (chosen by matching loss). Each run is saved as it finishes, so several processes
may share one output folder (e.g. one per t); every finished run rebuilds results.json and results.md there.

    PYTHONPATH=. .venv/bin/python scripts/gidm_plus_study.py --t 10 50 100 250 500 750 950 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from skimage import data as skdata

from gidm_core.attacks import start_attack
from gidm_core.client import PrivateBatch, share
from gidm_core.config import AttackConfig, attack_config, threat_preset
from gidm_core.data import load_image
from gidm_core.metrics import psnr, to_unit
from gidm_core.models import load_model


def run_one(model_spec: str, t: int, seed: int, total: int) -> dict:
    model = load_model(model_spec)
    x0 = load_image(skdata.astronaut(), model.image_size, model.channels)
    batch = PrivateBatch.draw(x0, model.num_train_timesteps, seed=seed, t=[t])
    threat = threat_preset("private-eps-t")
    update = share(model, batch, threat)
    config = attack_config("gidm-plus", iterations=AttackConfig.gidm_plus_iterations(total), seed=seed, report_every=50)
    started = time.perf_counter()
    result = start_attack(model, update, threat, config).run_to_end()
    seconds = time.perf_counter() - started
    abar = float(model.scheduler.alphas_cumprod[t])
    record = dict(model=model_spec, t=t, seed=seed, budget=total, sqrt_abar=abar ** 0.5,
                  amplification=((1 - abar) / abar) ** 0.5, status=result.status if result else "error",
                  seconds=seconds, seconds_per_step=seconds / max(1, result.iterations if result else 1))
    if result is not None:
        eps_error = (result.eps_estimate - batch.eps).norm() / batch.eps.norm()
        record.update(psnr=psnr(to_unit(result.reconstruction), to_unit(x0)), eps_rel_error=float(eps_error),
                      t_estimate=list(result.t_estimate or ()), t_exact=list(result.t_estimate or ()) == [t],
                      matching_loss=result.matching_loss, iterations=result.iterations)
    return record


def summarise(runs: list[dict]) -> str:
    """A Markdown table: one row per t, mean (and range) over seeds."""
    lines = ["| t | sqrt(abar_t) | error amplification sqrt(1-abar)/sqrt(abar) | x0 PSNR dB | eps rel. error "
             "| t exact | matching loss | s/step | seeds |", "|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for t in sorted({r["t"] for r in runs}):
        rows = [r for r in runs if r["t"] == t and "psnr" in r]
        if not rows:
            continue

        def cell(key: str, fmt: str) -> str:
            values = [r[key] for r in rows]
            mean = sum(values) / len(values)
            if len(values) == 1:
                return format(mean, fmt)
            return f"{format(mean, fmt)} ({format(min(values), fmt)}..{format(max(values), fmt)})"

        exact = sum(r["t_exact"] for r in rows)
        lines.append(f"| {t} | {rows[0]['sqrt_abar']:.3f} | {rows[0]['amplification']:.1f} | {cell('psnr', '.1f')} "
                     f"| {cell('eps_rel_error', '.3f')} | {exact}/{len(rows)} | {cell('matching_loss', '.1e')} "
                     f"| {cell('seconds_per_step', '.2f')} | {len(rows)} |")
    budget = sorted({r["budget"] for r in runs})
    models = sorted({r["model"] for r in runs})
    return (f"GIDM+ on the 32 px astronaut, private eps and t, model {', '.join(models)}, "
            f"{'/'.join(map(str, budget))} steps in all.\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="random:small-32")
    parser.add_argument("--t", type=int, nargs="+", default=[10, 50, 100, 250, 500, 750, 950])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=400, help="total GIDM+ steps (residual + refine)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/gidm_plus_study"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for t in args.t:
        for seed in args.seeds:
            record = run_one(args.model, t, seed, args.budget)
            name = f"{args.model.replace(':', '_').replace('/', '_')}_b{args.budget}_t{t}_s{seed}.json"
            (args.out / "runs" / name).write_text(json.dumps(record, indent=1))
            print(json.dumps(record), flush=True)
            runs = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*.json"))]
            (args.out / "results.json").write_text(json.dumps(runs, indent=1))
            (args.out / "results.md").write_text(summarise(runs))


if __name__ == "__main__":
    main()
