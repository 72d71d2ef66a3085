"""GIDM+ per-timestep study: how well x0 and eps come back when the client keeps both eps and t private.

For each t, seed and held-out image: the client shares one FedSGD gradient with a secret eps drawn from the
client's seed; GIDM+ (threat preset private-eps-t), seeded from its own stream, attacks it with a fixed total
budget; the evaluator, who alone has the truth, scores the attack's final answer (chosen by matching loss). Each
run is saved as it finishes, so several processes may share one output folder (e.g. one per t); every finished run
rebuilds results.json and results.md there.

    PYTHONPATH=. .venv/bin/python scripts/gidm_plus_study.py --t 10 100 400 800 --seeds 0 1

At equal CPU time with several starts (docs/starts.md), e.g. the 16-run table at t = 100:

    .venv/bin/python scripts/gidm_plus_study.py --t 100 --seeds 0 1 --seconds 120 --starts 4 \
        --images face-05 face-17 face-29 face-41 face-53 face-65 face-77 face-89
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch

from gidm_core.config import attack_config, threat_preset
from gidm_core.images import load_named_images
from gidm_core.models import load_model
from gidm_core.protocol import play


def run_one(model_spec: str, t: int, seed: int, total: int | None, image: str, seconds: float = 0.0,
            starts: int | None = None, attack_seed: int | None = None, **overrides: object) -> dict:
    """One attack; `seconds` > 0 is a CPU-time budget (then `total` only splits it between phases). `overrides`
    are further `AttackConfig` fields (None: GIDM+'s own). The record keeps a trace every 25 evaluations: phase,
    CPU seconds, the attack's current matching loss and (the evaluator's) PSNR of its current guess."""
    model = load_model(model_spec)
    x0 = load_named_images([image], model.image_size, model.channels)
    threat = threat_preset("private-eps-t")
    config = attack_config("gidm-plus", pixel_iterations=total, attack_seed=seed if attack_seed is None
                           else attack_seed, report_every=25, seconds=seconds, clock="cpu", starts=starts,
                           **overrides)
    played = play(model, x0, threat, config, client_seed=seed, t=[t])
    trace = []
    for event in played.run:
        if event.losses and event.kind in ("phase", "progress"):
            psnr = played.evaluator.metrics(event.reconstruction, lpips=False)["psnr"]
            trace.append([event.phase, event.iteration, round(event.elapsed, 2), event.losses["matching"],
                          round(psnr, 2)])
    result = played.run.result
    abar = float(model.scheduler.alphas_cumprod[t])
    record = dict(model=model_spec, image=image, t=t, seed=seed, attack_seed=config.attack_seed,
                  budget=config.pixel_iterations, seconds_budget=seconds, starts=config.starts,
                  residual_share=config.residual_share, latent_iterations=config.latent_iterations, trace=trace,
                  sqrt_abar=abar ** 0.5, amplification=((1 - abar) / abar) ** 0.5,
                  status=result.status if result else "error")
    if result is not None:
        scores = played.evaluator.score_result(result)
        record.update(psnr=scores["psnr"], eps_rel_error=scores["eps_error"], seconds=result.seconds,
                      seconds_per_step=result.seconds / max(1, result.iterations),
                      t_estimate=list(result.t_estimate or ()), t_exact=list(result.t_estimate or ()) == [t],
                      matching_loss=result.matching_loss, iterations=result.iterations,
                      winning_start=min(result.history, key=lambda row: row["matching"]).get("start", 0))
    return record


def summarise(runs: list[dict]) -> str:
    """A Markdown table: one row per t, mean (and range) over seeds."""
    lines = ["| t | sqrt(abar_t) | error amplification sqrt(1-abar)/sqrt(abar) | x0 PSNR dB | eps rel. error "
             "| t exact | matching loss | s/step | seeds |", "|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for t in sorted({r["t"] for r in runs}):
        rows = [r for r in runs if r["t"] == t and "psnr" in r]
        if not rows:
            continue

        def cell(key: str, fmt: str, rows: list[dict] = rows) -> str:
            values = [r[key] for r in rows]
            mean = sum(values) / len(values)
            if len(values) == 1:
                return format(mean, fmt)
            return f"{format(mean, fmt)} ({format(min(values), fmt)}..{format(max(values), fmt)})"

        exact = sum(r["t_exact"] for r in rows)
        lines.append(f"| {t} | {rows[0]['sqrt_abar']:.3f} | {rows[0]['amplification']:.1f} | {cell('psnr', '.1f')} "
                     f"| {cell('eps_rel_error', '.3f')} | {exact}/{len(rows)} | {cell('matching_loss', '.1e')} "
                     f"| {cell('seconds_per_step', '.2f')} | {len(rows)} |")
    lines += ["", "| image | t | client seed | starts | CPU-s budget | PSNR dB | eps rel. error | matching loss "
              "| winning start | evaluations |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    done = sorted((r for r in runs if "psnr" in r), key=lambda r: (r["t"], r.get("starts", 1), r["image"], r["seed"]))
    for r in done:
        lines.append(f"| {r['image']} | {r['t']} | {r['seed']} | {r.get('starts', 1)} "
                     f"| {r.get('seconds_budget', 0):g} | {r['psnr']:.1f} | {r['eps_rel_error']:.3f} "
                     f"| {r['matching_loss']:.2e} "
                     f"| {r.get('winning_start', 0) + 1} | {r['iterations']} |")
    passes = {t: [r["psnr"] >= 30 for r in runs if r["t"] == t and "psnr" in r] for t in sorted({r["t"] for r in runs})}
    lines += ["", *(f"t = {t}: {sum(p)} of {len(p)} runs >= 30 dB" for t, p in passes.items() if p)]
    models = sorted({r["model"] for r in runs})
    images = sorted({r["image"] for r in runs})
    return f"GIDM+ on {', '.join(images)}, private eps and t, model {', '.join(models)}.\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="faces32")
    parser.add_argument("--images", nargs="+", default=["face-05", "face-17", "face-29"],
                        help="bundled victim names or image paths")
    parser.add_argument("--t", type=int, nargs="+", default=[10, 50, 100, 250, 500, 750, 950])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--budget", type=int, default=None,
                        help="GIDM+ pixel iterations (joint and residual stages; default: GIDM+'s own)")
    parser.add_argument("--seconds", type=float, default=0.0, help="CPU-second budget per attack (0: none)")
    parser.add_argument("--starts", type=int, default=None, help="starts per attack (default: GIDM+'s own)")
    parser.add_argument("--attack-seed", type=int, default=None, help="the attacker's seed (default: the client's)")
    parser.add_argument("--residual-share", type=float, default=None,
                        help="share of the pixel iterations for the residual stage (default: GIDM+'s own)")
    parser.add_argument("--latent-iterations", type=int, default=None, help="latent-phase iterations (default: own)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("outputs/gidm_plus_study"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    for t, seed, image in itertools.product(args.t, args.seeds, args.images):
        record = run_one(args.model, t, seed, args.budget, image, args.seconds, args.starts, args.attack_seed,
                         residual_share=args.residual_share, latent_iterations=args.latent_iterations)
        stem = "_".join(x.replace(":", "_").replace("/", "_") for x in (args.model, Path(image).stem))
        name = (f"{stem}_b{record['budget']}_c{args.seconds:g}_n{record['starts']}_t{t}_s{seed}"
                f"_a{record['attack_seed']}_r{record['residual_share']:g}_l{record['latent_iterations']}.json")
        (args.out / "runs" / name).write_text(json.dumps(record, indent=1))
        print(json.dumps({k: v for k, v in record.items() if k != "trace"}), flush=True)
        runs = [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*.json"))]
        (args.out / "results.json").write_text(json.dumps(runs, indent=1))
        (args.out / "results.md").write_text(summarise(runs))


if __name__ == "__main__":
    main()
