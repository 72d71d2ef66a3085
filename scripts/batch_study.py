"""Batch study (docs/batches.md): one attack on a batch of held-out images, with or without the separation.

The client (seed `--client-seed`) draws a distinct t per image from its own stream unless `--t` fixes one for all;
the attack runs on one torch thread for `--seconds` CPU seconds; the evaluator prints the per-image PSNR after the
Hungarian pairing, the pairing the timesteps give, and the separation's residual, as one JSON line; before it,
each phase's best guess image by image (paired by the timesteps), to see which stage fits which image.

`--probe` runs only the curriculum's first stage (the loudest group, L-BFGS from the attack's noise) for
`--seconds`, to ask what limits it: "stage" as the attack runs it (the quieter images held at zero), "oracle" (held
at the truth instead: does their error limit the loud fit?), "solo:B" (image B alone, every other at the truth: its
own difficulty), "without:B" (the group less image B, held at the truth), "wait:B" (the same, B held at zero as a
waiting image), "sweeps:K" (block coordinates: each loud image K evaluations alone, the others at their current
guess, in turn). The truth enters these diagnostics only as the held images, never an attack's choice.
`--optimizer` runs the attack (or the probe) under another optimiser, to check the optimiser first
(docs/gauss_newton.md).

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/batch_study.py --batch 8 --separation auto
    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python scripts/batch_study.py --batch 8 --probe solo:1 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gidm_core.attacks import curriculum
from gidm_core.attacks.curriculum import GroupMatcher, signal_groups
from gidm_core.attacks.events import Guess, Objective
from gidm_core.attacks.per_sample import SeparatedMatcher
from gidm_core.attacks.secrets import noise_variable
from gidm_core.attacks.separation import separate
from gidm_core.attacks.spectral import CORNER, low_noise_rows, mixed_space, smoothed
from gidm_core.config import OPTIMIZERS, ThreatModel, attack_config
from gidm_core.evaluation import pairing_by_t
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


def _drive(phase):
    """Run a phase generator to its end; its return value (the phase's best guess)."""
    try:
        while True:
            next(phase)
    except StopIteration as end:
        return end.value


def probe(played, kind: str, seconds: float, weight: float, basis: str = "pixels", corner: float = CORNER,
          start: str = "noise") -> dict:
    """The first curriculum stage under diagnostic `kind` (see the module's docstring), PSNR of its free images."""
    ctx, truth, t = played.run.context, played.batch.x0, played.update.t
    eps, _ = noise_variable(ctx)
    matcher = SeparatedMatcher(ctx.model, ctx.update, separate(ctx.model, ctx.update, t, ctx.threat), "l2",
                               "normalized", ctx.threat.defence, weight)
    groups = signal_groups(matcher, t)
    name, _, number = kind.partition(":")
    x = (ctx.randn() * 0.5).clamp(-1, 1)
    if start != "noise":  # zero, or the noise seen through the damped basis (its fine detail shrunk)
        x = x * 0 if start == "zero" else smoothed(x, corner).clamp(-1, 1)
    rows = groups[0]
    quiet = sum(groups[1:], [])
    x[quiet] = truth[quiet] if name == "oracle" else 0.0
    if name == "solo":
        rows = [int(number)]
        x = torch.where(torch.arange(len(x))[:, None, None, None] == rows[0], x, truth)
    if name in ("without", "wait"):
        rows = [r for r in rows if r != int(number)]
        x[int(number)] = truth[int(number)] if name == "without" else 0.0
    blocks = [[r] for r in rows] if name == "sweeps" else [rows]
    low = low_noise_rows(ctx.model, t)
    evaluations = int(number) if name == "sweeps" else 10**9
    began = time.process_time()
    while time.process_time() - began < seconds:
        for block in blocks:
            group = GroupMatcher(matcher, block, x, eps, t)
            damped_rows = [i for i, r in enumerate(group.rows) if basis == "group" or (basis == "low" and r in low)]
            variables, make_image, project = mixed_space(x[group.rows], damped_rows, corner)

            def objective(group=group, make_image=make_image, held=x):
                free = make_image()
                summed, per_sample = group(free)
                loss = summed + weight * per_sample
                image = held.clone()
                image[group.rows] = free.detach()
                return Objective(loss, loss, {}, Guess(image, None, t))

            left = seconds - (time.process_time() - began)
            if left <= 0:
                break
            # A time budget for one stage; K evaluations per block for sweeps (checked against the time here).
            ctx.config = attack_config("dlg", separation="auto", clock="cpu", pixel_iterations=evaluations,
                                       optimizer=ctx.config.optimizer,
                                       seconds=0 if name == "sweeps" else ctx.clock() + left)
            x = _drive(ctx.optimise(f"probe {block}", variables, objective, evaluations, 1.0,
                                    project=project)).image.detach().clone()
    scores = psnr_per_sample(to_unit(x), to_unit(truth))
    return {"probe": kind, "basis": basis, "corner": corner, "start": start, "optimizer": ctx.config.optimizer,
            "t": t.tolist(), "rows": rows,
            "psnr_rows": [round(float(scores[r]), 2) for r in rows],
            "matching": ctx.best[0] if ctx.best else None, "evaluations": ctx.iteration,
            "cpu_seconds": round(time.process_time() - began, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--method", default="dlg")
    parser.add_argument("--separation", default="auto")
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--client-seed", type=int, default=0)
    parser.add_argument("--t", type=int, default=None, help="one timestep for the whole batch")
    parser.add_argument("--private", action="store_true", help="eps and t private (GIDM+'s threat)")
    parser.add_argument("--probe", default=None, help="a diagnostic of the first stage (see above)")
    parser.add_argument("--weight", type=float, default=1.0, help="the probe's per-sample weight")
    parser.add_argument("--basis", default="pixels", choices=("pixels", "low", "group"),
                        help="the probe's search space: raw pixels, the damped Fourier basis for the low-noise "
                        "images only, or for the whole group")
    parser.add_argument("--corner", type=float, default=CORNER, help="the probe basis corner (cycles per image)")
    parser.add_argument("--start", default="noise", choices=("noise", "zero", "smooth"), help="the probe's start")
    parser.add_argument("--group-ratio", type=float, default=curriculum.GROUP_RATIO,
                        help="the curriculum's grouping ratio; inf puts the batch in one group (no curriculum: the "
                        "per-sample start runs)")
    parser.add_argument("--damped", default=curriculum.DAMPED, choices=("off", "low-noise", "first-group", "loud"),
                        help="which images the curriculum searches in the damped Fourier basis")
    parser.add_argument("--damped-joint", action=argparse.BooleanOptionalAction, default=curriculum.DAMPED_JOINT,
                        help="the joint stage too (low-noise images)")
    parser.add_argument("--optimizer", default="lbfgs", choices=OPTIMIZERS, help="the attack's optimiser")
    args = parser.parse_args()
    torch.set_num_threads(1)
    curriculum.GROUP_RATIO = args.group_ratio
    curriculum.DAMPED, curriculum.DAMPED_JOINT = args.damped, args.damped_joint
    model = load_model("faces32")
    threat = ThreatModel(knows_eps=not args.private, knows_t=not args.private)
    config = attack_config(args.method, separation=args.separation, seconds=args.seconds, clock="cpu",
                           optimizer=args.optimizer)
    played = play(model, victims(args.batch), threat, config, client_seed=args.client_seed,
                  t=None if args.t is None else [args.t])
    if args.probe:
        print(json.dumps(probe(played, args.probe, args.seconds, args.weight, args.basis, args.corner,
                               args.start)))
        return
    for event in played.run:
        if event.message and event.kind != "progress":
            print(f"[{event.phase}] {event.message}", flush=True)
    result = played.run.result
    by_t = pairing_by_t(result.t_estimate, played.batch.t.tolist())  # image i's slot; the identity if t repeat
    order = torch.tensor(by_t if by_t is not None else range(args.batch))
    for phase, image in result.snapshots.items():
        images = psnr_per_sample(to_unit(image[order]), to_unit(played.batch.x0))
        print(f"[{phase}] PSNR by image (paired by t): {' '.join(f'{v:.1f}' for v in images)}", flush=True)
    scores = played.evaluator.score_result(result)
    print(json.dumps({"batch": args.batch, "method": args.method, "optimizer": args.optimizer,
                      "group_ratio": args.group_ratio, "damped": args.damped, "damped_joint": args.damped_joint,
                      "separation": args.separation,
                      "t": played.batch.t.tolist(), "psnr": scores["psnr"], **played.evaluator.per_image(result),
                      **result.details, "iterations": result.iterations, "cpu_seconds": result.seconds}))


if __name__ == "__main__":
    main()
