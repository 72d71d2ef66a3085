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
from .control import control_update
from .evaluation import Evaluator
from .images import control_names, load_named_images
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


@dataclass
class Shared:
    """A round up to the attack: the models, what the client kept (for the evaluator) and what it shared. The
    tuner attacks one such update many times; `attack` starts one attack on it."""

    model: DiffusionModel
    prior: DiffusionModel | None
    threat: ThreatModel
    batch: PrivateBatch
    update: SharedUpdate

    def attack(self, config: AttackConfig, *, stop: threading.Event | None = None, lpips_every: int = 0,
               steering: Steering | None = None) -> Round:
        run = start_attack(self.model, self.update, self.threat, config, self.prior, stop, steering)
        return Round(self.batch, self.update, run, Evaluator(self.batch, lpips_every))


def play(model: DiffusionModel, images: torch.Tensor, threat: ThreatModel, config: AttackConfig, *,
         client_seed: int = 0, t: list[int] | None = None, prior: DiffusionModel | None = None,
         stop: threading.Event | None = None, lpips_every: int = 0,
         training: LocalTraining | None = None, control_images: torch.Tensor | None = None,
         steering: Steering | None = None) -> Round:
    """Set up one round: the client trains on `images` ((B, C, H, W) in [-1, 1]) with secrets drawn from
    `client_seed` (t fixed if given), shares its defended update (one FedSGD gradient, or with `training` a FedAvg
    delta after its local steps, on per-step draws from the same seed), and the attack of `config` (seeded by
    `config.attack_seed`, the attacker's own seed) is ready to run, steered by `steering` if given. Bad input
    raises a one-line `ConfigError` or `ModelLoadError` before any work is done.

    With `threat.control` set, the attack is handed a control update instead (`control.py`; "other-image" needs
    `control_images`, e.g. `images.control_names`' pictures), while the evaluator still holds the real victims:
    the round then measures what the attack returns when nothing of the victim leaks."""
    shared = client_side(model, images, threat, config, client_seed=client_seed, t=t, prior=prior,
                         training=training, control_images=control_images)
    return shared.attack(config, stop=stop, lpips_every=lpips_every, steering=steering)


def client_side(model: DiffusionModel, images: torch.Tensor, threat: ThreatModel, config: AttackConfig, *,
                client_seed: int = 0, t: list[int] | None = None, prior: DiffusionModel | None = None,
                training: LocalTraining | None = None, control_images: torch.Tensor | None = None) -> Shared:
    """`play` without the attack: checks the round (including that `config`'s prior fits), draws the client's
    private batch and shares its update."""
    model.check_size(images.shape[-1])
    if config.uses_latent_phase:
        check_prior(prior or model, images.shape[1], images.shape[-1])
        steps = (prior or model).num_train_timesteps
        if config.ddim_steps > steps:
            raise ConfigError(f"DDIM steps K must be at most the prior's {steps} training timesteps, "
                              f"got {config.ddim_steps}")
    batch = PrivateBatch.draw(images, model.num_train_timesteps, client_seed, t, training)
    update = share(model, batch, threat, seed=client_seed, training=training)
    update = control_update(model, update, threat, client_seed, others=control_images, t=t, training=training)
    return Shared(model, prior, threat, batch, update)


def share_scenario(scenario: Scenario, load: Callable[[str], DiffusionModel], *,
                   images: torch.Tensor | None = None) -> Shared:
    """A described round up to the attack: `load` turns a model spec into a model (the CLI's loader, the
    benchmark's, the app's cache), used for the attacked model and, when the scenario names one, GIDM's prior.
    `images` overrides loading `scenario.images` by name (a front end's own pictures, such as the app's uploads).
    An "other-image" control's stand-ins are the bundled images `images.control_names` picks for those names."""
    model = load(scenario.model)
    size = scenario.size or model.image_size
    model.check_size(size)
    x0 = images if images is not None else load_named_images(scenario.images, size, model.channels)
    prior = None if scenario.prior is None else load(scenario.prior)
    others = None
    if scenario.threat.control == "other-image":  # the next bundled image of each victim's kind stands in
        others = load_named_images(control_names(list(scenario.images)), size, model.channels)
    return client_side(model, x0, scenario.threat, scenario.attack, client_seed=scenario.client_seed,
                       t=None if scenario.t is None else list(scenario.t), prior=prior, training=scenario.training,
                       control_images=others)


def play_scenario(scenario: Scenario, load: Callable[[str], DiffusionModel], *, images: torch.Tensor | None = None,
                  stop: threading.Event | None = None, lpips_every: int = 0, steering: Steering | None = None
                  ) -> Round:
    """`play` for a described round (`share_scenario`, then the scenario's attack)."""
    return share_scenario(scenario, load, images=images).attack(scenario.attack, stop=stop,
                                                                lpips_every=lpips_every, steering=steering)
