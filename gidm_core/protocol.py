"""One attacked training round, set up the same way by every front end: CLI, app, benchmark, scripts and tests.

model -> the client's private batch -> the shared update -> the attack -> the evaluator. The client's secrets and
its defence's noise come from the client's seed, the attacker's guesses from the attacker's seed, each through its
own stream (`seeds.stream`), so no choice of seeds hands the attacker the client's noise. The truth (the batch)
reaches the evaluator only; the attack sees the model, the prior, the update and the threat model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .attacks import Event, Run, Steering, start_attack
from .attacks.gidm import check_prior
from .client import PrivateBatch, SharedUpdate, share
from .config import AttackConfig, ConfigError, LocalTraining, ThreatModel
from .evaluation import Evaluator
from .images import load_named_images
from .models import DiffusionModel
from .scenario import Scenario


@dataclass
class Round:
    """A played round: what the client kept, what it shared, the attack on it, and the scorer with the truth."""

    batch: PrivateBatch
    update: SharedUpdate
    run: Run
    evaluator: Evaluator

    def events(self) -> Iterator[Event]:
        """The attack's events, each scored against the truth."""
        return self.evaluator.track(self.run)


def play(model: DiffusionModel, images: torch.Tensor, threat: ThreatModel, config: AttackConfig, *,
         client_seed: int = 0, t: list[int] | None = None, prior: DiffusionModel | None = None,
         stop: threading.Event | None = None, lpips_every: int = 0,
         training: LocalTraining | None = None, steering: Steering | None = None) -> Round:
    """Set up one round: the client trains on `images` ((B, C, H, W) in [-1, 1]) with secrets drawn from
    `client_seed` (t fixed if given), shares its defended update (one FedSGD gradient, or with `training` a FedAvg
    delta after its local steps, on per-step draws from the same seed), and the attack of `config` (seeded by
    `config.attack_seed`, the attacker's own seed) is ready to run, steered by `steering` if given. Bad input
    raises a one-line `ConfigError` or `ModelLoadError` before any work is done."""
    model.check_size(images.shape[-1])
    if config.uses_latent_phase:
        check_prior(prior or model, images.shape[1], images.shape[-1])
        steps = (prior or model).num_train_timesteps
        if config.ddim_steps > steps:
            raise ConfigError(f"DDIM steps K must be at most the prior's {steps} training timesteps, "
                              f"got {config.ddim_steps}")
    batch = PrivateBatch.draw(images, model.num_train_timesteps, client_seed, t, training)
    update = share(model, batch, threat, seed=client_seed, training=training)
    run = start_attack(model, update, threat, config, prior, stop, steering)
    return Round(batch, update, run, Evaluator(batch, lpips_every))


def play_scenario(scenario: Scenario, load: Callable[[str], DiffusionModel], *, images: torch.Tensor | None = None,
                  stop: threading.Event | None = None, lpips_every: int = 0, steering: Steering | None = None
                  ) -> Round:
    """`play` for a described round: `load` turns a model spec into a model (the CLI's loader, the benchmark's, the
    app's cache), used for the attacked model and, when the scenario names one, GIDM's prior. `images` overrides
    loading `scenario.images` by name (a front end's own pictures, such as the app's uploads)."""
    model = load(scenario.model)
    size = scenario.size or model.image_size
    model.check_size(size)
    x0 = images if images is not None else load_named_images(scenario.images, size, model.channels)
    prior = None if scenario.prior is None else load(scenario.prior)
    return play(model, x0, scenario.threat, scenario.attack, client_seed=scenario.client_seed,
                t=None if scenario.t is None else list(scenario.t), prior=prior, stop=stop, lpips_every=lpips_every,
                training=scenario.training, steering=steering)
