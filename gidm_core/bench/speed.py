"""The speed probe: each attack phase's cost per step as a ratio to one forward+backward of the same UNet."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from ..faces import SKIMAGE_PHOTOS
from ..images import load_named_images
from .jobs import BENCH_VERSION, SpeedProbe
from .machine import budget_clock, device_name, now, time_forward_backward

if TYPE_CHECKING:
    from ..models import DiffusionModel

SPEED_CASES = (  # (label, method, private eps/t, AttackConfig iteration fields for n steps of the one phase)
    ("DLG pixel step (L2)", "dlg", False, lambda n: dict(pixel_iterations=n)),
    ("IG pixel step (cosine + TV)", "ig", False, lambda n: dict(pixel_iterations=n)),
    ("GIDM latent step (DDIM K)", "gidm-latent", False, lambda n: dict(latent_iterations=n, pixel_iterations=0)),
    ("GIDM pixel step", "gidm", False, lambda n: dict(latent_iterations=0, pixel_iterations=n)),
    ("DLG pixel+eps step (private eps)", "dlg", True, lambda n: dict(pixel_iterations=n)),
    ("GIDM+ pixel step (70 % joint x0, eps; 30 % residual x_t, r)", "gidm-plus", True,
     lambda n: dict(latent_iterations=0, pixel_iterations=n, residual_share=0.3)),  # the split its label names
)

# A separated batch's matching step (distinct t, per-sample terms on), against the B = 1 DLG step: the bound
# is 1.2 x B times the B = 1 step, i.e. a "per_image_vs_b1" of at most 1.2.
BATCH_CASE = ("DLG pixel step, B = 16, separated", 16)
# One matching evaluation (the loss and its gradient w.r.t. the image) of an SGD client's delta after 4 fresh-noise
# steps: re-simulated step by step, and at the broadcast weights (`attacks/linearised.py`), on which the pixel phase
# spends most of its plan where the client's lr allows.
STEPS_CASES = {False: "SGD E = 4 fresh: evaluation, exact re-simulation",
               True: "SGD E = 4 fresh: evaluation, linearised"}


def sgd_evaluations(model: DiffusionModel, x0: torch.Tensor, device: str) -> Callable[[bool, int], float]:
    """A timer: seconds for `count` matching evaluations of `STEPS_CASES`' client (exact or linearised) on `x0`'s
    update, from a zero guess; eps and t as the paper's threat model gives them."""
    from ..attacks.matching import GradientMatcher
    from ..config import LocalTraining, ThreatModel, attack_config
    from ..protocol import play

    sgd = play(model, x0, ThreatModel(), attack_config("dlg"),
               training=LocalTraining(steps=4, lr=1e-3, optimizer="sgd", local_batch=1, noise="fresh"))
    matcher, guess = GradientMatcher(model, sgd.update), torch.zeros_like(x0).requires_grad_(True)

    def seconds(linearised: bool, count: int) -> float:
        matcher.linearised = linearised
        start = now(device)
        for _ in range(count):
            torch.autograd.grad(matcher(guess, sgd.batch.eps, sgd.update.t), guess)
        return now(device) - start

    return seconds


def run_speed(probe: SpeedProbe) -> dict[str, Any]:
    """The probe's JSON: per-case step seconds and their ratio to one forward+backward, measured in one process."""
    from ..config import ThreatModel, attack_config
    from ..models import load_model, resolve_device
    from ..protocol import play

    device = resolve_device(probe.device)
    cpu_started = time.process_time()
    model = load_model(probe.model, device)
    photos = [f"skimage:{SKIMAGE_PHOTOS[i % len(SKIMAGE_PHOTOS)]}" for i in range(probe.batch)]
    x0 = load_named_images(photos, probe.size, model.channels)
    threats = {False: ThreatModel(), True: ThreatModel(knows_eps=False, knows_t=False)}

    batch_label, batch_size = BATCH_CASE
    photos16 = [f"skimage:{SKIMAGE_PHOTOS[i % len(SKIMAGE_PHOTOS)]}" for i in range(batch_size)]
    batches = {probe.batch: (x0, [100]),
               batch_size: (load_named_images(photos16, probe.size, model.channels),
                            torch.linspace(20, model.num_train_timesteps - 20, batch_size).long().tolist())}

    def attack_seconds(method: str, private: bool, split: dict, batch: int = probe.batch) -> tuple[float, int]:
        config = attack_config(method, ddim_steps=probe.ddim_steps, report_every=10**6, lr_schedule="constant",
                               optimizer=probe.optimizer, **split)
        images, t = batches[batch]
        run = play(model, images, threats[private], config, t=t).run
        start = now(device)
        run.run_to_end()
        return now(device) - start, config.total_iterations

    evaluation_seconds = sgd_evaluations(model, x0, device)
    warm = 2
    fwd_bwd: list[float] = []
    raw: dict[str, list[float]] = {label: [] for label, *_ in SPEED_CASES}
    raw[batch_label] = []
    raw.update({label: [] for label in STEPS_CASES.values()})
    for _ in range(probe.reps):  # interleaved, so a burst of load elsewhere hits every case alike
        fwd_bwd.append(time_forward_backward(model, probe.batch, probe.size, device, reps=3))
        for label, method, private, split in SPEED_CASES:
            short, short_steps = attack_seconds(method, private, split(warm))
            long, long_steps = attack_seconds(method, private, split(warm + probe.steps))
            raw[label].append(max(long - short, 0.0) / (long_steps - short_steps))
        short, short_steps = attack_seconds("dlg", False, dict(pixel_iterations=warm), batch_size)
        long, long_steps = attack_seconds("dlg", False, dict(pixel_iterations=warm + probe.steps), batch_size)
        raw[batch_label].append(max(long - short, 0.0) / (long_steps - short_steps))
        for linearised, label in STEPS_CASES.items():
            short, long = evaluation_seconds(linearised, warm), evaluation_seconds(linearised, warm + probe.steps)
            raw[label].append(max(long - short, 0.0) / probe.steps)
    base = statistics.median(fwd_bwd)
    cpu_seconds = time.process_time() - cpu_started
    cases = {label: {"step_seconds": statistics.median(v), "ratio": statistics.median(v) / base,
                     "samples": v} for label, v in raw.items()}
    if probe.batch == 1:
        one = cases[SPEED_CASES[0][0]]["step_seconds"]
        cases[batch_label]["per_image_vs_b1"] = cases[batch_label]["step_seconds"] / (batch_size * one)
    return {"id": probe.id, "bench_version": BENCH_VERSION, "config": asdict(probe), "kind": "speed",
            "model_name": model.name, "device": device, "device_name": device_name(device),
            "torch_threads": torch.get_num_threads(), "clock": budget_clock(device), "fwd_bwd_seconds": base,
            "fwd_bwd_samples": fwd_bwd,
            "cases": cases, "cell_cpu_seconds": cpu_seconds}
