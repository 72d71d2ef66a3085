"""Does the prior help under DP noise, and does the per-layer weighting matter there? (issue 21, docs/evidence.md)

faces32, held-out faces, eps and t known, t = 100, the update clipped to norm 1 plus Gaussian noise sigma; DLG,
GIDM-latent and GIDM with uniform and per-layer normalised weights, each `--seconds` CPU seconds on one torch thread.
Honest seeds (attacker = client + 1000, separate streams). One JSON line per run, resumable; `--table` prints means.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/noise_weights.py --out docs/results/noise_weights.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from gidm_core.config import DefenceConfig, ThreatModel, attack_config
from gidm_core.evaluation import Evaluator
from gidm_core.models import load_model
from gidm_core.privacy import epsilon
from gidm_core.protocol import play_scenario
from gidm_core.scenario import Scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["face-05", "face-17", "face-41", "face-53"])
    parser.add_argument("--methods", nargs="+", default=["dlg", "gidm-latent", "gidm"])
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.01, 0.1])
    parser.add_argument("--weights", nargs="+", default=["uniform", "normalized"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--client-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="store_true", help="only print the table of the runs on disk")
    args = parser.parse_args()
    if not args.table:
        run(args)
    print(table(args.out))


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    model = load_model("faces32", "cpu")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.is_file():
        done = {(r["image"], r["method"], r["sigma"], r["weights"]) for r in map(json.loads, args.out.open())}
    for sigma in args.sigmas:
        for method in args.methods:
            for weights in args.weights:
                for image in args.images:
                    if (image, method, sigma, weights) in done:
                        continue
                    config = attack_config(method, seconds=args.seconds, clock="cpu", layer_weights=weights,
                                           attack_seed=args.client_seed + 1000)
                    threat = ThreatModel(defence=DefenceConfig(clip=1.0, sigma=sigma))
                    scenario = Scenario(images=(image,), client_seed=args.client_seed, t=(100,), threat=threat,
                                        attack=config)
                    played = play_scenario(scenario, lambda spec: model)
                    result = played.run.run_to_end()
                    row = {"image": image, "method": method, "sigma": sigma, "weights": weights,
                           "seconds": args.seconds, "client_seed": args.client_seed,
                           "epsilon": epsilon(threat.defence), **Evaluator(played.batch).score_result(result)}
                    with args.out.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
                    print(json.dumps(row), flush=True)


def table(path: Path) -> str:
    rows = [json.loads(line) for line in path.open()]
    keys = sorted({(r["sigma"], r["method"], r["weights"]) for r in rows})
    lines = ["| sigma | method | weights | n | PSNR dB (mean ± std) | LPIPS |", "|---:|---|---|---:|---:|---:|"]
    for sigma, method, weights in keys:
        runs = [r for r in rows if (r["sigma"], r["method"], r["weights"]) == (sigma, method, weights)]
        psnr = [r["psnr"] for r in runs]
        spread = f" ± {statistics.stdev(psnr):.1f}" if len(psnr) > 1 else ""
        lpips = statistics.mean(r["lpips"] for r in runs)
        lines.append(f"| {sigma:g} | {method} | {weights} | {len(runs)} | {statistics.mean(psnr):.1f}{spread} | "
                     f"{lpips:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
