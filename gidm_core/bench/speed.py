"""The speed probe: each attack phase's cost per step as a ratio to one forward+backward of the same UNet."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from typing import Any

import torch

from ..faces import SKIMAGE_PHOTOS
from ..images import load_named_images
from .jobs import BENCH_VERSION, SpeedProbe
from .machine import budget_clock, device_name, now, time_forward_backward

SPEED_CASES = (  # (label, method, private eps/t, AttackConfig iteration fields for n steps of the one phase)
    ("DLG pixel step (L2)", "dlg", False, lambda n: dict(pixel_iterations=n)),
    ("IG pixel step (cosine + TV)", "ig", False, lambda n: dict(pixel_iterations=n)),
    ("GIDM latent step (DDIM K)", "gidm-latent", False, lambda n: dict(latent_iterations=n, pixel_iterations=0)),
    ("GIDM pixel step", "gidm", False, lambda n: dict(latent_iterations=0, pixel_iterations=n)),
    ("DLG pixel+eps step (private eps)", "dlg", True, lambda n: dict(pixel_iterations=n)),
    ("GIDM+ pixel step (70 % joint x0, eps; 30 % residual x_t, r)", "gidm-plus", True,
     lambda n: dict(latent_iterations=0, pixel_iterations=n)),
)


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

    def attack_seconds(method: str, private: bool, split: dict) -> tuple[float, int]:
        config = attack_config(method, ddim_steps=probe.ddim_steps, report_every=10**6, lr_schedule="constant",
                               optimizer=probe.optimizer, **split)
        run = play(model, x0, threats[private], config, t=[100]).run
        start = now(device)
        run.run_to_end()
        return now(device) - start, config.total_iterations

    warm = 2
    fwd_bwd: list[float] = []
    raw: dict[str, list[float]] = {label: [] for label, *_ in SPEED_CASES}
    for _ in range(probe.reps):  # interleaved, so a burst of load elsewhere hits every case alike
        fwd_bwd.append(time_forward_backward(model, probe.batch, probe.size, device, reps=3))
        for label, method, private, split in SPEED_CASES:
            short, short_steps = attack_seconds(method, private, split(warm))
            long, long_steps = attack_seconds(method, private, split(warm + probe.steps))
            raw[label].append(max(long - short, 0.0) / (long_steps - short_steps))
    base = statistics.median(fwd_bwd)
    cpu_seconds = time.process_time() - cpu_started
    cases = {label: {"step_seconds": statistics.median(v), "ratio": statistics.median(v) / base,
                     "samples": v} for label, v in raw.items()}
    return {"id": probe.id, "bench_version": BENCH_VERSION, "config": asdict(probe), "kind": "speed",
            "model_name": model.name, "device": device, "device_name": device_name(device),
            "torch_threads": torch.get_num_threads(), "clock": budget_clock(device), "fwd_bwd_seconds": base,
            "fwd_bwd_samples": fwd_bwd,
            "cases": cases, "cell_cpu_seconds": cpu_seconds}
