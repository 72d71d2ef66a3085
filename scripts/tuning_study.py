"""Does tuning by matching loss pay? For each held-out face: one shared update (faces32, FedSGD, eps and t known,
client seed 0); a study of N trials x S CPU-s (GIDM, seeded TPE, pruning) ranked by the referee matching loss; then
GIDM's defaults given the study's whole CPU time in one run. The evaluator scores everything afterwards.

One torch thread, CPU-second budgets (the machine is shared). Writes one JSON line per face to --out and prints a
summary: PSNR of the tuner's pick vs the defaults at equal total time, and how often the matching-loss pick was also
the PSNR-best trial. Usage:
    OMP_NUM_THREADS=1 python scripts/tuning_study.py --images face-05 face-17 --trials 12 --seconds 10 --out x.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from gidm_core.client import PrivateBatch, share
from gidm_core.config import attack_config, threat_preset
from gidm_core.evaluation import Evaluator
from gidm_core.images import load_named_images
from gidm_core.models import load_model
from gidm_core.protocol import play
from gidm_core.tuning import TuneConfig, tune


def one_face(model, name: str, args: argparse.Namespace) -> dict:
    threat = threat_preset("paper")
    x0 = load_named_images([name], model.image_size, model.channels)
    batch = PrivateBatch.draw(x0, model.num_train_timesteps, args.client_seed)
    update = share(model, batch, threat, seed=args.client_seed)
    evaluator = Evaluator(batch, lpips_every=0)
    config = TuneConfig(method=args.method, trials=args.trials, seconds=args.seconds, clock="cpu",
                        attack_seed=args.attack_seed)
    trials = []
    for record in tune(model, update, threat, config):
        o = record.outcome
        psnr = evaluator.metrics(o.reconstruction, lpips=False)["psnr"] if o.reconstruction is not None else None
        trials.append({"trial": record.number, "state": record.state, "matching_loss": o.matching_loss,
                       "seconds": o.seconds, "iterations": o.iterations, "psnr": psnr, "params": o.params})
        print(f"  {name} trial {record.number} {record.state} loss {o.matching_loss:.3g} psnr {psnr:.2f} "
              f"{o.seconds:.1f}s", flush=True)
    records_best = best_trial(trials)
    spent = sum(t["seconds"] for t in trials)
    default = attack_config(args.method, seconds=spent, clock="cpu", attack_seed=args.attack_seed)
    played = play(model, x0, threat, default, client_seed=args.client_seed)
    result = played.run.run_to_end()
    default_psnr = played.evaluator.metrics(result.reconstruction, lpips=False)["psnr"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    psnr_best = max(complete, key=lambda t: t["psnr"])
    losses = [t["matching_loss"] for t in complete]
    psnrs = [t["psnr"] for t in complete]
    return {"image": name, "t": batch.t.tolist(), "trials": trials, "study_cpu_seconds": spent,
            "chosen": records_best["trial"], "chosen_psnr": records_best["psnr"], "psnr_best_trial": psnr_best["trial"],
            "psnr_best": psnr_best["psnr"], "agree": psnr_best["trial"] == records_best["trial"],
            "default_trial_psnr": trials[0]["psnr"], "default_equal_time_psnr": default_psnr,
            "default_equal_time_iterations": result.iterations, "spearman_loss_psnr": spearman(losses, psnrs)}


def best_trial(trials: list[dict]) -> dict:
    return min((t for t in trials if t["state"] == "COMPLETE"), key=lambda t: (t["matching_loss"], t["trial"]))


def spearman(a: list[float], b: list[float]) -> float | None:
    if len(a) < 3:
        return None
    rank = lambda v: [sorted(v).index(x) for x in v]
    return statistics.correlation(rank(a), rank(b))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", nargs="+", default=["face-05", "face-17", "face-29", "face-41"])
    parser.add_argument("--model", default="faces32")
    parser.add_argument("--method", default="gidm")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client-seed", type=int, default=0)
    parser.add_argument("--attack-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    rows = []
    for name in args.images:
        started = time.process_time()
        row = one_face(model, name, args)
        row["cpu_seconds"] = time.process_time() - started
        rows.append(row)
        with args.out.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"{name}: pick trial {row['chosen']} {row['chosen_psnr']:.2f} dB (PSNR-best trial "
              f"{row['psnr_best_trial']} {row['psnr_best']:.2f}); defaults at 1 trial {row['default_trial_psnr']:.2f}"
              f", at equal time ({row['study_cpu_seconds']:.0f} CPU-s) {row['default_equal_time_psnr']:.2f}; "
              f"Spearman(loss, PSNR) {row['spearman_loss_psnr']}", flush=True)
    agree = sum(r["agree"] for r in rows)
    print(f"matching-loss pick = PSNR-best trial in {agree} of {len(rows)}; mean pick "
          f"{statistics.fmean(r['chosen_psnr'] for r in rows):.2f} dB vs defaults at equal time "
          f"{statistics.fmean(r['default_equal_time_psnr'] for r in rows):.2f} dB")


if __name__ == "__main__":
    main()
