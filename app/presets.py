"""The app's presets: named sets of settings, each one a lesson or a measured plan (its comment says which).

A preset lists values for some of `settings.Settings`' fields; the rest keep their defaults when it is applied.
"""

from __future__ import annotations

from typing import Any

from gidm_core.config import attack_config

# Hyperparameter presets (the threat part of each preset is set alongside). "Fast CPU demo" is the default: GIDM
# with the core's defaults (a short DDIM latent phase so the prior shows, then pixels, both by L-BFGS), which
# passes 36 dB on the bundled faces32 in ~17 s of a 2-core CPU (README, The app).
_GIDM = attack_config("gidm")
# The demo stops a run once its matching loss has flattened (attacks.plateau): on faces32/face-05 it
# then ends near 45 dB after ~185 of its 400 evaluations and frees its slot for the next visitor (docs/robustness.md).
DEMO_PLATEAU = 20
_PLUS = attack_config("gidm-plus")
PRESETS: dict[str, dict[str, Any]] = {
    "Fast CPU demo": dict(method="gidm", secrets="known", defence="none", pixel_iterations=_GIDM.pixel_iterations,
                          lr=0.1,
                          latent_iterations=_GIDM.latent_iterations, latent_lr=0.05, ddim_steps=_GIDM.ddim_steps,
                          distance="l2", tv_weight=0.0, lr_schedule="constant", optimizer="lbfgs",
                          layer_weights="normalized", report_every=5, plateau=DEMO_PLATEAU),
    # The released code's optimiser and distance: Adam on plain squared L2 over every tensor, K = 16.
    "Paper setting (slow on CPU)": dict(method="gidm", secrets="known", defence="none", pixel_iterations=5000, lr=0.01,
                                        latent_iterations=2500, latent_lr=0.01, ddim_steps=16, distance="l2",
                                        tv_weight=0.0, lr_schedule="constant", optimizer="adam",
                                        layer_weights="uniform", report_every=25, plateau=0),
    # GIDM+ at t = 100 (where it recovers most held-out faces with their noise, docs/starts.md) on a one-minute plan:
    # 150 latent evaluations, then 350 mostly in its residual stage, which converges fast once the latent phase has
    # found the basin; two starts, so the status line says which leads. It fails at t = 10 (a rugged landscape, hard
    # even with eps known) and t = 800 (an eps error reaches x0 amplified 25.7x on faces32); docs/gidm_plus.md.
    "Private eps and t (GIDM+)": dict(method="gidm-plus", secrets="private", client_t=100, defence="none",
                                      pixel_iterations=250, lr=_PLUS.lr, latent_iterations=100, latent_lr=0.05,
                                      ddim_steps=2, distance="l2", tv_weight=0.0, lr_schedule=_PLUS.lr_schedule,
                                      optimizer=_PLUS.optimizer, layer_weights=_PLUS.layer_weights, starts=2,
                                      report_every=10, plateau=0),
    # What a diffusers-style client sends: 4 AdamW steps (weight decay 0.01) with new eps and t at every step.
    # The attack decodes nothing here (several Adam steps) and replays them with a smoothed Adam: on face-05, client
    # seed 0, GIDM reached 42.7 dB in 120 CPU-s (docs/adam_deltas.md); each evaluation replays 4 steps, so ~3 min.
    "Realistic client (AdamW, 4 steps, fresh noise)": dict(
        method="gidm", secrets="known", client_t=-1, defence="none", client_update="fedavg", local_steps=4,
        client_optimizer="adamw", client_lr=1e-3, weight_decay=0.01, noise_per_step="fresh",
        pixel_iterations=_GIDM.pixel_iterations, lr=0.1, latent_iterations=_GIDM.latent_iterations, latent_lr=0.05,
        ddim_steps=_GIDM.ddim_steps, distance="l2", tv_weight=0.0, lr_schedule="constant", optimizer="lbfgs",
        layer_weights="normalized", report_every=5, plateau=DEMO_PLATEAU),
    "Under DP (clip + noise)": dict(method="gidm", secrets="known", defence="clip + Gaussian noise", clip=1.0,
                                    sigma=0.01, keep=1.0, pixel_iterations=_GIDM.pixel_iterations, lr=0.1,
                                    latent_iterations=_GIDM.latent_iterations, latent_lr=0.05,
                                    ddim_steps=_GIDM.ddim_steps, distance="l2", tv_weight=0.0,
                                    lr_schedule="constant", optimizer="lbfgs", layer_weights="normalized",
                                    report_every=5, plateau=0),
}
DEFAULT_PRESET = "Fast CPU demo"
