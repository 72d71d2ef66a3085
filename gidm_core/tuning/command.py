"""`python -m gidm_core tune`: the client shares one update, the attacker tunes a method on it by matching loss,
and the evaluator (here, outside the tuner) scores each trial's answer against the truth, in a file of its own.

Writes to --out: `trials.csv` / `trials.json` (the tuner's table: what the attacker knows), `evaluator.csv` (each
trial's PSNR and SSIM, which the tuner never reads), and `best.json` (the chosen configuration, the `attack` command
that reruns it, and whether the matching-loss choice was also the PSNR-best trial).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

from ..attack_command import attack_argv, command_line
from ..config import THREAT_PRESETS, ConfigError, threat_preset
from ..errors import UsageError
from ..flags import check_cores, check_rate
from ..outputs import check_out_folder
from ..seeds import MAX_SEED
from .space import SPACES
from .study import MAX_TRIALS, RayPlan, TrialRecord, TuneConfig, best


def add_tune_command(commands: argparse._SubParsersAction) -> None:
    """Register `python -m gidm_core tune` on the CLI's subparsers."""
    parser = commands.add_parser("tune", help="tune an attack's hyperparameters on one shared update by matching "
                                 "loss alone (Optuna TPE, pruning)")
    parser.add_argument("--model", default="faces32", help="bundled name[@checkpoint], local folder or random:<arch>")
    parser.add_argument("--image", action="append", required=True, help="victim image (repeat for a batch)")
    parser.add_argument("--method", default="gidm", help=f"one of {', '.join(SPACES)}")
    parser.add_argument("--threat", default="paper", help=f"threat preset: {', '.join(THREAT_PRESETS)}")
    parser.add_argument("--t", type=int, action="append", default=None, help="the client's timestep (per image)")
    parser.add_argument("--client-seed", type=int, default=0, help="the client's seed (its eps, t, defence noise)")
    parser.add_argument("--trials", type=int, default=12, help=f"finished trials the study ends with (1-{MAX_TRIALS})")
    parser.add_argument("--seconds-per-trial", type=float, default=None,
                        help="each trial's time budget (CPU seconds with --clock cpu, the default)")
    parser.add_argument("--iterations-per-trial", type=int, default=None,
                        help="each trial's evaluations instead of a time budget (reproducible on any machine)")
    parser.add_argument("--clock", default="cpu", choices=("cpu", "wall"), help="what a second of budget is")
    parser.add_argument("--attack-seed", type=int, default=0, help="the tuner's seed: the sampler's, and every trial's "
                        "attacker seed")
    parser.add_argument("--storage", default=None, help="an Optuna storage URL, e.g. sqlite:///study.db: the "
                        "study lives there, and a rerun with the same settings resumes it")
    parser.add_argument("--study-name", default=None, help="the study's name in --storage (default tune-<method>)")
    parser.add_argument("--no-pruning", action="store_true", help="run every trial to its budget")
    parser.add_argument("--ray", action="store_true", help="run trials as Ray tasks (--workers at once)")
    parser.add_argument("--workers", type=int, default=2, help="with --ray: trials at once")
    parser.add_argument("--address", default=None, help="with --ray: a cluster's head HOST:PORT (default: local)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (per Ray worker too; 0: torch's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/tune-<method>-<time>)")
    parser.set_defaults(func=tune_command)


def _check(args: argparse.Namespace) -> TuneConfig:
    """Every flag that can be checked before a model loads (one line, exit 2)."""
    from ..models import check_spec

    if args.seconds_per_trial is not None and args.iterations_per_trial is not None:
        raise UsageError("give --seconds-per-trial or --iterations-per-trial, not both")
    if args.seconds_per_trial is not None:
        check_rate("--seconds-per-trial", args.seconds_per_trial)
    if args.iterations_per_trial is not None and args.iterations_per_trial < 1:
        raise UsageError(f"--iterations-per-trial must be >= 1, got {args.iterations_per_trial}")
    if not 0 <= args.client_seed <= MAX_SEED:
        raise UsageError(f"--client-seed must be in [0, 2**63 - 1], got {args.client_seed}")
    if (args.address or args.workers != 2) and not args.ray:
        raise UsageError("--workers and --address need --ray")
    if args.ray:
        check_cores("--workers", args.workers, cap=1 << 16 if args.address else None)
    check_cores("--threads", args.threads, zero="torch's default")
    if args.t is not None and len(args.t) not in (1, len(args.image)):
        raise UsageError(f"--t given {len(args.t)} times for {len(args.image)} image(s)")
    if args.storage is not None and args.storage.startswith("sqlite:///"):
        folder = Path(args.storage.removeprefix("sqlite:///")).expanduser().absolute().parent
        if not folder.is_dir():
            raise UsageError(f"--storage {args.storage}: the folder {folder} does not exist")
    threat_preset(args.threat)
    check_spec(args.model, allow_local=True)
    try:
        return TuneConfig(method=args.method, trials=args.trials, seconds=args.seconds_per_trial or 0.0,
                          iterations=args.iterations_per_trial or 0, clock=args.clock, attack_seed=args.attack_seed,
                          pruning=not args.no_pruning)
    except ConfigError as err:
        raise UsageError(str(err)) from None


def tune_command(args: argparse.Namespace) -> int:
    config = _check(args)
    if args.ray:
        from ..ray_session import check_address, import_ray

        import_ray()
        if args.address:
            check_address(args.address)
    out = check_out_folder(args.out or Path("runs") / f"tune-{config.method}-{time.strftime('%Y%m%d-%H%M%S')}")
    import torch

    from ..evaluation import Evaluator
    from ..models import load_model, resolve_device
    from ..protocol import share_scenario
    from ..scenario import Scenario
    from .study import tune

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    threat = threat_preset(args.threat)
    scenario = Scenario(model=args.model, images=tuple(args.image), client_seed=args.client_seed, t=args.t,
                        threat=threat, attack=config.attack({}))
    # The client's side: its private batch and the update it shares, made once. Only the update reaches the tuner.
    shared = share_scenario(scenario, lambda spec: load_model(spec, device, allow_local=True))
    evaluator = Evaluator(shared.batch, lpips_every=0)
    setup = {"model": args.model, "images": list(args.image), "client_seed": args.client_seed, "t": args.t}
    plan = RayPlan(args.model, threat.prior, device, args.workers, args.threads, args.address) if args.ray else None
    records: list[TrialRecord] = []
    scores: dict[int, dict[str, float]] = {}
    out.mkdir(parents=True, exist_ok=True)
    print(f"{'trial':>5} {'state':9} {'matching loss':>13} {'PSNR':>6}  params")
    for record in tune(shared.model, shared.update, threat, config, prior=shared.prior, storage=args.storage,
                       study_name=args.study_name, setup=setup, ray=plan):
        records.append(record)
        if record.outcome.reconstruction is not None:  # the evaluator's score, kept apart from the tuner's table
            metrics = evaluator.metrics(record.outcome.reconstruction, lpips=False)
            scores[record.number] = {"psnr": metrics["psnr"], "ssim": metrics["ssim"]}
        psnr = scores.get(record.number, {}).get("psnr", math.nan)
        print(f"{record.number:5d} {record.state:9} {record.outcome.matching_loss:13.4g} {psnr:6.2f}  "
              f"{_short(record.outcome.params)}", flush=True)
    write_outputs(out, records, scores, config, threat, args)
    chosen = best(records)
    if chosen is None:
        print("error: no trial finished", flush=True)
        return 1
    print(f"best by matching loss: trial {chosen.number} -> {out / 'best.json'}")
    return 0


def _short(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def table_rows(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """The tuner's table: one row per trial, what the attacker knows (no PSNR)."""
    rows = []
    for r in records:
        o = r.outcome
        rows.append({"trial": r.number, "state": r.state, "matching_loss": o.matching_loss,
                     "attack_loss": o.attack_loss, "iterations": o.iterations, "seconds": round(o.seconds, 2),
                     "status": o.status, **{f"param_{k}": v for k, v in o.params.items()}})
    return rows


def agreement(records: list[TrialRecord], scores: dict[int, dict[str, float]]) -> dict[str, Any]:
    """Was the trial the matching loss chose also the PSNR-best one (among trials with both scores)?"""
    chosen = best(records)
    scored = [r for r in records if r.state == "COMPLETE" and r.number in scores]
    if chosen is None or not scored:
        return {"chosen_trial": None, "psnr_best_trial": None, "agree": None}
    top = max(scored, key=lambda r: scores[r.number]["psnr"])
    return {"chosen_trial": chosen.number, "chosen_psnr": scores.get(chosen.number, {}).get("psnr"),
            "psnr_best_trial": top.number, "psnr_best": scores[top.number]["psnr"],
            "agree": top.number == chosen.number,
            "default_trial_psnr": scores.get(0, {}).get("psnr")}


def write_outputs(out: Path, records: list[TrialRecord], scores: dict[int, dict[str, float]], config: TuneConfig,
                  threat: Any, args: argparse.Namespace) -> None:
    rows = table_rows(records)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with (out / "trials.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "trials.json").write_text(json.dumps(rows, indent=1, default=str))
    with (out / "evaluator.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["trial", "psnr", "ssim"])
        writer.writerows([n, round(s["psnr"], 3), round(s["ssim"], 4)] for n, s in sorted(scores.items()))
    chosen = best(records)
    report: dict[str, Any] = {"method": config.method, "trials": len(records), "evaluator": agreement(records, scores)}
    if chosen is not None:
        attack = config.attack(chosen.outcome.params)
        report.update(best_trial=chosen.number, matching_loss=chosen.outcome.matching_loss,
                      params=chosen.outcome.params, config=attack.__dict__,
                      command=command_line(attack_argv(attack, threat, model=args.model, images=list(args.image),
                                                       client_seed=args.client_seed, t=args.t)))
    (out / "best.json").write_text(json.dumps(report, indent=1, default=str))
