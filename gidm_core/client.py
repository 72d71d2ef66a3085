"""The client side: a private batch, the model update it shares, and the defences applied before it leaves.

Only a `SharedUpdate` crosses to the server. It carries eps and t, and a FedAvg client's batch order and dropout
seeds, only when the threat model says the client reveals them (the paper's setting); otherwise they stay in the
`PrivateBatch`, which only the evaluator sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .config import ConfigError, DefenceConfig, LocalTraining, ThreatModel
from .diffusion import diffusion_loss
from .models import DiffusionModel
from .seeds import MAX_SEED, stream


@dataclass(frozen=True)
class LocalSchedule:
    """A FedAvg client's per-step draws besides eps and t: which of its N local images each step trains on, and the
    seed of each step's dropout masks. Drawn once with eps and t (`PrivateBatch.draw`), so the client, the evaluator
    and, where the threat model reveals them, the attacker all replay the same steps.

    `order` (E, B): the image indices of step k. `fresh`: eps and t hold E x B slots, step k using slots
    k*B .. k*B + B - 1 (new noise every step); otherwise one per image, reused at every step. `dropout_seeds`: one
    per step, or () where the masks are unknown (the attacker then runs the UNet in eval mode, dropout's mean)."""

    order: torch.Tensor
    fresh: bool = False
    dropout_seeds: tuple[int, ...] = ()

    @classmethod
    def draw(cls, training: LocalTraining, images: int, generator: torch.Generator) -> LocalSchedule:
        """The client's draw: an endless stream of shuffled epochs of its images, cut into E batches of B (diffusers'
        shuffled loader); with B = N every step trains on all images, whose order changes nothing."""
        batch = training.batch_size(images)
        steps = training.steps
        if batch == images:
            order = torch.arange(images).repeat(steps, 1)
        else:
            epochs = -(-steps * batch // images)
            order = torch.cat([torch.randperm(images, generator=generator) for _ in range(epochs)])
            order = order[:steps * batch].view(steps, batch)
        seeds = (tuple(torch.randint(0, 2**62, (steps,), generator=generator).tolist())
                 if training.dropout > 0 else ())
        return cls(order, training.noise == "fresh", seeds)

    @classmethod
    def public(cls, training: LocalTraining, images: int) -> LocalSchedule:
        """What an attacker without the client's draws can assume: unshuffled batches, no dropout masks."""
        return cls(_unshuffled(training.steps, training.batch_size(images), images), training.noise == "fresh")

    def revealed(self, images: int, order: bool, masks: bool) -> LocalSchedule:
        """The part of this schedule a threat model hands the attacker; the rest is `public`'s assumption."""
        return LocalSchedule(self.order if order else _unshuffled(*self.order.shape, images), self.fresh,
                             self.dropout_seeds if masks else ())

    def secrets(self, images: int) -> int:
        """How many eps and t the client drew: E x B with fresh noise, else one per image."""
        return self.order.numel() if self.fresh else images

    def inputs(self, step: int, x0: torch.Tensor, eps: torch.Tensor,
               t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, eps, t) of local step `step`, from the N images and the flat secrets."""
        index = self.order[step]
        batch = index.numel()
        slots = torch.arange(step * batch, (step + 1) * batch) if self.fresh else index
        whole = batch == x0.shape[0] and torch.equal(index, torch.arange(batch))
        images = x0 if whole else x0[index.to(x0.device)]
        if torch.equal(slots, torch.arange(eps.shape[0])):
            return images, eps, t
        slots = slots.to(eps.device)
        return images, eps[slots], t[slots]

    def dropout_seed(self, step: int) -> int | None:
        return self.dropout_seeds[step] if self.dropout_seeds else None


def _unshuffled(steps: int, batch: int, images: int) -> torch.Tensor:
    return torch.arange(steps * batch).remainder(images).view(steps, batch)


@dataclass(frozen=True)
class PrivateBatch:
    """Everything the client keeps: its N local images x0 in [-1, 1] (N, C, H, W), the noise eps and timesteps t it
    trained with (one per image, or with fresh noise one per slot of every local step), and for a FedAvg client
    the rest of its per-step draws (`schedule`)."""

    x0: torch.Tensor
    eps: torch.Tensor
    t: torch.Tensor
    schedule: LocalSchedule | None = None

    @classmethod
    def draw(cls, x0: torch.Tensor, num_train_timesteps: int, seed: int,
             t: list[int] | torch.Tensor | None = None, training: LocalTraining | None = None) -> PrivateBatch:
        """Draw the client's secret eps (and t, unless given) from its own stream of `seed`, as its training step
        would, then (with `training`) its batch order and dropout seeds. The stream is the client's alone
        (`seeds.stream`): an attacker seeded alike draws other numbers."""
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"client seed must be in [0, 2**63 - 1], got {seed}")
        images = x0.shape[0]
        fresh = training is not None and training.noise == "fresh"
        if fresh and t is not None:
            raise ConfigError("fresh noise draws a new t at every local step: a fixed t cannot be given")
        count = training.steps * training.batch_size(images) if fresh else images
        generator = stream(seed, "client")
        eps = torch.randn((count, *x0.shape[1:]), generator=generator)
        if t is None:
            t = torch.randint(0, num_train_timesteps, (count,), generator=generator)
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
        if t.numel() == 1 and images > 1:
            t = t.expand(images).clone()
        if t.numel() != count:
            raise ConfigError(f"{t.numel()} timesteps for a batch of {images} images")
        if t.min() < 0 or t.max() >= num_train_timesteps:
            raise ConfigError(f"timesteps must be in [0, {num_train_timesteps - 1}], got {t.tolist()}")
        schedule = None if training is None else LocalSchedule.draw(training, images, generator)
        return cls(x0.detach().cpu(), eps, t, schedule)


@dataclass(frozen=True)
class SharedUpdate:
    """What the server receives. `gradients` holds one tensor per UNet parameter: the gradient of the training loss
    for a FedSGD client (`training` None), or the weight delta theta_after - theta_before for a FedAvg client, whose
    local-training settings travel with it because the server set them. `schedule` is the FedAvg client's per-step
    draws as far as the threat model reveals them (the rest assumed: `LocalSchedule.revealed`)."""

    gradients: tuple[torch.Tensor, ...]
    batch_size: int
    image_shape: tuple[int, int, int]
    eps: torch.Tensor | None = None
    t: torch.Tensor | None = None
    training: LocalTraining | None = None
    schedule: LocalSchedule | None = None

    @property
    def kind(self) -> str:
        return "fedsgd" if self.training is None else "fedavg"

    @property
    def secrets(self) -> int:
        """How many (eps, t) pairs the update was computed with: one per image, or E x B with fresh noise."""
        return self.batch_size if self.schedule is None else self.schedule.secrets(self.batch_size)


def client_update(model: DiffusionModel, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                  create_graph: bool = False, training: LocalTraining | None = None,
                  schedule: LocalSchedule | None = None, smoothing: float = 0.0) -> tuple[torch.Tensor, ...]:
    """The update a client computes from its images x0 and secrets (eps, t): the gradient of its training loss
    w.r.t. every parameter (FedSGD), or with `training` the weight delta after its E local steps (FedAvg), each step
    on the images, eps, t and dropout masks `schedule` gives it (default: `LocalSchedule.public`).

    The one definition of the update: the attacked client (`share`) computes it, and every attack's matcher calls it
    on its guesses with `create_graph`, which keeps the result differentiable w.r.t. x0 and eps through every step.
    Its SGD, Adam and AdamW are torch's, step for step (tested against torch.optim in float64). `smoothing` > 0
    is the attacker's smoothed Adam (`LocalOptimizer.denominator`), never the client's.
    """
    params = dict(model.unet.named_parameters())
    if training is None:
        loss = diffusion_loss(model, x0, eps, t)
        return tuple(torch.autograd.grad(loss, list(params.values()), create_graph=create_graph))
    schedule = schedule or LocalSchedule.public(training, x0.shape[0])
    # The delta is accumulated from the steps rather than taken as a difference of weights: mathematically the
    # same, but float32 theta_after - theta_before would bury lr * gradient entries (1e-7 and below on faces32 at
    # lr 1e-3) in the rounding of the weights (~6e-2).
    delta = [torch.zeros_like(p) for p in params.values()]
    optimizer = LocalOptimizer(training, delta, smoothing)
    for step in range(training.steps):
        weights = {name: p + d for (name, p), d in zip(params.items(), delta)}
        images, noise, steps_t = schedule.inputs(step, x0, eps, t)
        with dropout_masks(model, training.dropout, schedule.dropout_seed(step)):
            loss = diffusion_loss(model, images, noise, steps_t, weights)
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=create_graph)
        if training.clip > 0:
            grads = clip_norm(grads, training.clip)
        delta = [d - s for d, s in zip(delta, optimizer.step(grads, list(weights.values())))]
    return tuple(delta)


def relative_distance(got: tuple[torch.Tensor, ...] | list[torch.Tensor],
                      want: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> float:
    """||got - want|| / ||want|| over a whole update (in float64, no graph): how far one update is from another."""
    error = sum((g.detach() - w.detach()).double().pow(2).sum() for g, w in zip(got, want, strict=True))
    return float(torch.sqrt(error) / torch.sqrt(sum(w.detach().double().pow(2).sum() for w in want)).clamp_min(1e-30))


def clip_norm(grads: tuple[torch.Tensor, ...], max_norm: float) -> tuple[torch.Tensor, ...]:
    """`torch.nn.utils.clip_grad_norm_` in plain (differentiable) tensor ops: the same formula, 1e-6 included."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    return tuple(g * scale for g in grads)


@contextmanager
def dropout_masks(model: DiffusionModel, rate: float, seed: int | None) -> Iterator[None]:
    """Run the UNet's ResNet dropout layers at `rate` in train mode, their masks drawn from `seed` (a private
    stream of its own, so the same seed gives the same masks to whoever replays the step). With no seed (an
    attacker without the masks) or rate 0 the UNet stays in eval mode: dropout's expectation."""
    if rate == 0:
        yield
        return
    layers = [m for name, m in model.unet.named_modules()
              if isinstance(m, torch.nn.Dropout) and ".resnets." in name]
    if not layers:
        raise ConfigError(f"model {model.name} has no dropout layers to train with", "dropout")
    if seed is None:
        yield
        return
    saved = [(m, m.p, m.training) for m in layers]
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for m in layers:
            m.p = rate
            m.train()
        try:
            yield
        finally:
            for m, p, training in saved:
                m.p = p
                m.train(training)


class LocalOptimizer:
    """torch.optim's SGD, Adam and AdamW (amsgrad and momentum off, a fresh state) in plain tensor ops, so the
    attacker can differentiate through them: the same operations in the same order as torch's single-tensor
    implementations. Adam: g (+ wd w for "adam"), m.lerp_(g, 1 - beta1), v * beta2 + (1 - beta2) g^2, then
    lr / (1 - beta1^k) * m / `denominator`; AdamW first decays the weights by lr * wd * w (decoupled).

    `denominator` is the one place Adam's elementwise normalisation happens: an attack that needs a smoother
    re-simulation (e.g. sqrt(v + tau^2)) overrides it there. sqrt sees v clamped at the smallest normal float,
    which changes no value next to eps but keeps an entry whose gradient is exactly 0 from sending 0 * inf = nan
    back through sqrt."""

    def __init__(self, training: LocalTraining, like: list[torch.Tensor], smoothing: float = 0.0) -> None:
        self.training = training
        self.smoothing = smoothing
        adam = training.optimizer in ("adam", "adamw")
        self.m = [torch.zeros_like(x) for x in like] if adam else []
        self.v = [torch.zeros_like(x) for x in like] if adam else []
        self.k = 0

    def step(self, grads: tuple[torch.Tensor, ...], weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """The amounts to subtract from the weights at this step, given its gradients at `weights`."""
        cfg, self.k = self.training, self.k + 1
        lr, wd = cfg.lr, cfg.weight_decay
        if wd and cfg.optimizer != "adamw":  # coupled decay: part of the gradient
            grads = tuple(g + wd * w for g, w in zip(grads, weights))
        if cfg.optimizer == "sgd":
            return [lr * g for g in grads]
        beta1, beta2 = cfg.betas
        self.m = [torch.lerp(m, g, 1 - beta1) for m, g in zip(self.m, grads)]
        self.v = [v * beta2 + (1 - beta2) * g * g for v, g in zip(self.v, grads)]
        step_size = lr / (1 - beta1 ** self.k)
        steps = [step_size * (m / self.denominator(v)) for m, v in zip(self.m, self.v)]
        if wd and cfg.optimizer == "adamw":
            steps = [s + lr * wd * w for s, w in zip(steps, weights)]
        return steps

    def denominator(self, v: torch.Tensor) -> torch.Tensor:
        """sqrt of the bias-corrected second moment, plus eps (torch's order: eps outside the correction). With
        `smoothing` kappa: sqrt(v_hat + tau^2), tau^2 = kappa^2 mean(v_hat) over the tensor (held constant), so
        that entries below tau stay linear in the gradient instead of snapping to +-1 (attacks/adam_delta.py)."""
        root = math.sqrt(1 - self.training.betas[1] ** self.k)
        if self.smoothing > 0:
            corrected = v / root**2
            return (corrected + self.smoothing**2 * corrected.detach().mean()).sqrt()
        return v.clamp_min(torch.finfo(v.dtype).tiny).sqrt() / root + self.training.adam_eps


Draw = Callable[[int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # local step -> (x0, eps, t)


@dataclass(frozen=True)
class LocalRun:
    """What `train_locally` did: the weight delta (one tensor per UNet parameter), each step's loss, and the
    optimiser's state for a client that keeps it across rounds."""

    delta: tuple[torch.Tensor, ...]
    losses: list[float]
    optimizer_state: dict


def train_locally(model: DiffusionModel, draw: Draw, steps: int,
                  optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer], grad_clip: float = 0.0,
                  optimizer_state: dict | None = None) -> LocalRun:
    """The FedAvg trainer's local training (`training/trainer.py`: torch's optimiser, a fresh batch per step, its state
    kept across rounds), which trains the bundled models.

    The optimiser steps the delta, not the weights: the loss is taken at weights + delta, as `client_update` does,
    so the delta keeps its small entries exactly instead of losing them to the rounding of the weights. With a
    fresh torch SGD or Adam, no clipping and `draw` returning one batch, this is `client_update(..., training)` up
    to float rounding (tested)."""
    params = {name: p.detach() for name, p in model.unet.named_parameters()}
    delta = [torch.zeros_like(p, requires_grad=True) for p in params.values()]
    opt = optimizer(delta)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    losses = []
    for step in range(steps):
        x0, eps, t = draw(step)
        weights = {name: p + d for (name, p), d in zip(params.items(), delta)}
        loss = diffusion_loss(model, x0, eps, t, weights)  # the same code path the attacked client runs
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(delta, grad_clip)
        opt.step()
        losses.append(loss.item())
    return LocalRun(tuple(d.detach() for d in delta), losses, opt.state_dict())


def apply_defence(gradients: tuple[torch.Tensor, ...], defence: DefenceConfig,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """Clip the whole update's L2 norm to `clip`, add Gaussian noise, then keep each tensor's top-k magnitudes."""
    grads = [g.detach().clone() for g in gradients]
    if defence.clip > 0:
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
        scale = min(1.0, defence.clip / max(norm, 1e-12))
        grads = [g * scale for g in grads]
    if defence.sigma > 0:
        std = defence.sigma * (defence.clip if defence.clip > 0 else 1.0)
        grads = [g + std * torch.randn(g.shape, generator=generator).to(g) for g in grads]
    if defence.keep < 1:
        grads = [_keep_top(g, defence.keep) for g in grads]
    return tuple(grads)


def _keep_top(g: torch.Tensor, keep: float) -> torch.Tensor:
    k = max(1, int(round(keep * g.numel())))
    if k >= g.numel():
        return g
    threshold = g.abs().flatten().kthvalue(g.numel() - k + 1).values
    return torch.where(g.abs() >= threshold, g, torch.zeros_like(g))


def share(model: DiffusionModel, batch: PrivateBatch, threat: ThreatModel, seed: int = 0,
          training: LocalTraining | None = None) -> SharedUpdate:
    """Run the client's training on its private batch (one gradient, or `training`'s local steps on the batch's
    per-step draws) and return what leaves the device: the defended update and what the threat model reveals."""
    device = model.device
    x0, eps, t = batch.x0.to(device), batch.eps.to(device), batch.t.to(device)
    images = batch.x0.shape[0]
    schedule = None
    if training is not None:
        schedule = batch.schedule or LocalSchedule.public(training, images)
        if batch.schedule is None and (training.batch_size(images) < images or training.noise == "fresh"
                                        or training.dropout > 0):
            raise ConfigError("this client's training draws per-step secrets: draw its batch with "
                              "PrivateBatch.draw(..., training=...)")
    grads = client_update(model, x0, eps, t, training=training, schedule=schedule)
    generator = stream(seed, "defence")  # the defence's own noise, independent of eps and of the attacker
    grads = apply_defence(tuple(g.cpu() for g in grads), threat.defence, generator)
    return SharedUpdate(
        gradients=tuple(g.to(device) for g in grads),
        batch_size=images,
        image_shape=tuple(batch.x0.shape[1:]),
        eps=batch.eps.clone() if threat.knows_eps else None,
        t=batch.t.clone() if threat.knows_t else None,
        training=training,
        schedule=None if schedule is None else schedule.revealed(images, threat.order_known, threat.masks_known),
    )
