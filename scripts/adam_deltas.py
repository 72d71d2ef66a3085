"""Attacks on Adam / AdamW client deltas (docs/adam_deltas.md): one JSON line per run, on faces32.

The client trains E local steps of `--client-optimizer` on one image (eps and t known: the paper's threat), the
attack runs `--seconds` CPU seconds on one torch thread, the evaluator scores its answer. `--smoothing` overrides
the smoothed re-simulation's kappa (0: the exact Adam, i.e. plain L2 matching of the delta); `--no-decode` matches
a one-step delta as sent instead of decoding it; `--anneal` overrides the pixel phase's kappa stages. Besides PSNR
and LPIPS it reports the matching loss (at kappa SMOOTHING) of the answer and of the truth: an answer whose loss is
above the truth's is short of search, not misled by the surrogate.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/adam_deltas.py --image face-05 --steps 4 --method gidm
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gidm_core.attacks import adam_delta
from gidm_core.attacks.pixel import matcher_for
from gidm_core.config import LocalTraining, attack_config, threat_preset
from gidm_core.images import load_image
from gidm_core.models import load_model
from gidm_core.protocol import play


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="face-05", help="a name in assets/images (without .png)")
    parser.add_argument("--client-optimizer", default="adamw", choices=["adam", "adamw"])
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--noise", default="same", choices=["same", "fresh"])
    parser.add_argument("--method", default="gidm")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--t", type=int, default=100, help="the client's timestep; -1: drawn from its seed")
    parser.add_argument("--client-seed", type=int, default=0)
    parser.add_argument("--smoothing", type=float, default=None)
    parser.add_argument("--no-decode", action="store_true")
    parser.add_argument("--anneal", default=None,
                        help="the pixel phase's kappa stages as FACTOR:SHARE,... of --smoothing ('1:1': fixed kappa)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.smoothing is not None:
        adam_delta.SMOOTHING = args.smoothing
    if args.anneal is not None:
        adam_delta.ANNEALING = tuple(tuple(float(v) for v in stage.split(":")) for stage in args.anneal.split(","))
    if args.no_decode:
        adam_delta.decodable = lambda update, defence: False
    model = load_model("faces32")
    x0 = load_image(f"assets/images/{args.image}.png", model.image_size, model.channels)
    decay = args.weight_decay if args.client_optimizer == "adamw" else 0.0
    training = LocalTraining(steps=args.steps, lr=1e-3, optimizer=args.client_optimizer, weight_decay=decay,
                             noise=args.noise)
    config = attack_config(args.method, seconds=args.seconds, clock="cpu", attack_seed=args.client_seed + 1000)
    played = play(model, x0, threat_preset("paper"), config, client_seed=args.client_seed,
                  t=None if args.t < 0 else [args.t], training=training)
    started = time.process_time()
    result = played.run.run_to_end()
    seconds = time.process_time() - started
    scores = played.evaluator.score_result(result)
    # Surrogate or search? The matching loss (at kappa SMOOTHING) of the answer and of the truth, evaluator side.
    ctx = played.run.context
    matcher = matcher_for(ctx)
    update = ctx.update
    losses = {name: float(matcher(image.to(ctx.device), update.eps, update.t, create_graph=False).detach())
              for name, image in (("answer", result.reconstruction), ("truth", x0))}
    print(json.dumps(dict(vars(args), t=played.batch.t.tolist(), cpu_seconds=round(seconds, 1),
                          iterations=result.iterations, psnr=round(scores["psnr"], 2),
                          lpips=round(scores["lpips"], 4), loss_answer=losses["answer"],
                          loss_truth=losses["truth"])))


if __name__ == "__main__":
    main()
