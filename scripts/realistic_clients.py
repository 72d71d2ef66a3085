"""Realistic FedAvg clients on the trained faces32: what the attacks recover at equal CPU time.

One run: the client trains on its N local images (`--image`, repeated) as `LocalTraining` says (optimizer, E, B,
noise policy, clipping, dropout) with secrets drawn from `--client-seed`; the attack (its own seed, one torch
thread, a budget in CPU seconds) sees only what the threat model gives it; the evaluator scores the final answer.
`--t-only` skips the attack and reports how many of the client's timesteps the time-embedding layer gives back.
Each run appends one JSON line to `--out`.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/realistic_clients.py --image face-05 --steps 4 \
        --noise fresh --method dlg --seconds 120
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from gidm_core.attacks import spectral
from gidm_core.attacks.timestep import recover_timesteps
from gidm_core.client import PrivateBatch, share
from gidm_core.config import (
    CLIENT_OPTIMIZERS,
    DEFAULT_DROPOUT,
    OPTIMIZERS,
    LocalTraining,
    attack_config,
    threat_preset,
)
from gidm_core.evaluation import set_accuracy
from gidm_core.images import load_image
from gidm_core.models import load_model
from gidm_core.protocol import play


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="faces32")
    parser.add_argument("--image", action="append", required=True)
    parser.add_argument("--optimizer", default="sgd", choices=CLIENT_OPTIMIZERS)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--local-batch", type=int, default=0)
    parser.add_argument("--noise", default="same")
    parser.add_argument("--clip", type=float, default=0.0)
    parser.add_argument("--dropout", action="store_true")
    parser.add_argument("--threat", default="paper")
    parser.add_argument("--hide-masks", action="store_true", help="paper threat, but the dropout masks stay private")
    parser.add_argument("--method", default="dlg")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--client-seed", type=int, default=0)
    parser.add_argument("--attack-seed", type=int, default=1)
    parser.add_argument("--attack-optimizer", default="lbfgs", choices=OPTIMIZERS, help="the attack's optimiser")
    parser.add_argument("--t-only", action="store_true")
    parser.add_argument("--coarse-to-fine", default=None,
                        help="a low-noise SGD delta's pixel stages, CORNER:SHARE,... (0: pixels; '2:1': damped only)")
    parser.add_argument("--out", type=Path, default=Path("runs/realistic_clients.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.coarse_to_fine is not None:
        spectral.COARSE_TO_FINE = tuple(tuple(float(v) for v in stage.split(":"))
                                        for stage in args.coarse_to_fine.split(","))

    model = load_model(args.model)
    x0 = torch.cat([load_image(image, model.image_size, model.channels) for image in args.image])
    training = LocalTraining(steps=args.steps, lr=args.lr, optimizer=args.optimizer, weight_decay=args.weight_decay,
                             local_batch=args.local_batch, noise=args.noise, clip=args.clip,
                             dropout=DEFAULT_DROPOUT if args.dropout else 0.0)
    threat = threat_preset(args.threat)
    if args.hide_masks:
        threat = replace(threat, knows_masks=False)
    record = dict(model=args.model, images=args.image, training=training.describe(), threat=threat.describe(),
                  method=args.method, attack_optimizer=args.attack_optimizer,
                  client_seed=args.client_seed, attack_seed=args.attack_seed,
                  coarse_to_fine=spectral.COARSE_TO_FINE)
    if args.t_only:
        batch = PrivateBatch.draw(x0, model.num_train_timesteps, args.client_seed, training=training)
        update = share(model, batch, threat_preset("private-eps-t"), args.client_seed, training)
        estimate = recover_timesteps(model, update)
        record.update(t_true=sorted(batch.t.tolist()), t_estimate=estimate.t.tolist(), rank=estimate.rank,
                      confident=estimate.confident,
                      t_set_accuracy=set_accuracy(estimate.t.tolist(), batch.t.tolist()))
    else:
        config = attack_config(args.method, seconds=args.seconds, clock="cpu", attack_seed=args.attack_seed,
                               report_every=1000, optimizer=args.attack_optimizer)
        started = time.process_time()
        played = play(model, x0, threat, config, client_seed=args.client_seed, training=training)
        result = played.run.run_to_end()
        scores = played.evaluator.score_result(result)
        record.update(psnr=scores["psnr"], lpips=scores["lpips"], ssim=scores["ssim"],
                      psnr_per_image=played.evaluator.psnr_per_image(result.reconstruction),
                      t_true=played.batch.t.tolist(), t_set_accuracy=scores.get("t_set_accuracy"),
                      eps_error=scores.get("eps_error"), iterations=result.iterations,
                      attack_cpu_seconds=result.seconds, total_cpu_seconds=time.process_time() - started,
                      status=result.status, details=result.details)  # e.g. linearisation_error, separation
    print(json.dumps(record))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
