"""Batch study (docs/batches.md): one attack on a batch of held-out images, with or without the separation.

The client (seed `--client-seed`) draws a distinct t per image from its own stream unless `--t` fixes one for all;
the attack runs on one torch thread for `--seconds` CPU seconds; the evaluator prints the per-image PSNR after the
Hungarian pairing, the pairing the timesteps give, and the separation's residual, as one JSON line; before it,
each phase's best guess slot by slot (slot b holds the guess at t_b), to see which stage fits which image.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/batch_study.py --batch 8 --separation auto
"""

from __future__ import annotations

import argparse
import json

import torch

from gidm_core.config import ThreatModel, attack_config
from gidm_core.images import load_named_images
from gidm_core.metrics import psnr_per_sample, to_unit
from gidm_core.models import load_model
from gidm_core.protocol import play

FACES = [f"face-{i:02d}" for i in (5, 17, 29, 41, 53, 65, 77, 89)]


def victims(batch: int) -> torch.Tensor:
    """`batch` distinct images at 32 px: the eight held-out faces, their mirror images, the faces upside down, then
    photos (32 in all)."""
    faces = load_named_images(FACES, 32, 3)
    photos = load_named_images([f"skimage:{n}" for n in ("astronaut", "coffee", "chelsea", "rocket", "camera",
                                                          "immunohistochemistry")] + ["brick", "cat"], 32, 3)
    pool = torch.cat([faces, faces.flip(-1), faces.flip(-2), photos])
    if batch > len(pool):
        raise SystemExit(f"at most {len(pool)} distinct images here")
    return pool[:batch]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--method", default="dlg")
    parser.add_argument("--separation", default="auto")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--client-seed", type=int, default=0)
    parser.add_argument("--t", type=int, default=None, help="one timestep for the whole batch")
    parser.add_argument("--private", action="store_true", help="eps and t private (GIDM+'s threat)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model("faces32")
    threat = ThreatModel(knows_eps=not args.private, knows_t=not args.private)
    config = attack_config(args.method, separation=args.separation, seconds=args.seconds, clock="cpu")
    played = play(model, victims(args.batch), threat, config, client_seed=args.client_seed,
                  t=None if args.t is None else [args.t])
    for event in played.run:
        if event.message and event.kind != "progress":
            print(f"[{event.phase}] {event.message}", flush=True)
    result = played.run.result
    for phase, image in result.snapshots.items():
        slots = psnr_per_sample(to_unit(image), to_unit(played.batch.x0))
        print(f"[{phase}] PSNR by slot: {' '.join(f'{v:.1f}' for v in slots)}", flush=True)
    scores = played.evaluator.score_result(result)
    print(json.dumps({"batch": args.batch, "method": args.method, "separation": args.separation,
                      "t": played.batch.t.tolist(), "psnr": scores["psnr"], **played.evaluator.per_image(result),
                      **result.details, "iterations": result.iterations, "cpu_seconds": result.seconds}))


if __name__ == "__main__":
    main()
