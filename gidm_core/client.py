"""The client side: a private batch, the model update it shares, and the defences applied before it leaves.

Only a `SharedUpdate` crosses to the server. It carries eps and t only when the threat model says the client
reveals them (the paper's setting); otherwise they stay in the `PrivateBatch`, which only the evaluator sees.
"""

from __future__ import annotations

from collections.abc import Callable
import math
from dataclasses import dataclass

import torch

from .config import ConfigError, DefenceConfig, LocalTraining, ThreatModel
from .diffusion import diffusion_loss
from .models import DiffusionModel
from .seeds import MAX_SEED, stream


@dataclass(frozen=True)
class PrivateBatch:
    """Everything the client keeps: images x0 in [-1, 1] (B, C, H, W), per-sample noise eps and timesteps t."""

    x0: torch.Tensor
    eps: torch.Tensor
    t: torch.Tensor

    @classmethod
    def draw(cls, x0: torch.Tensor, num_train_timesteps: int, seed: int,
             t: list[int] | torch.Tensor | None = None) -> PrivateBatch:
        """Draw the client's secret eps (and t, unless given) from its own stream of `seed`, as its training step
        would. The stream is the client's alone (`seeds.stream`): an attacker seeded alike draws other numbers."""
        if not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"client seed must be in [0, 2**63 - 1], got {seed}")
        generator = stream(seed, "client")
        eps = torch.randn(x0.shape, generator=generator)
        if t is None:
            t = torch.randint(0, num_train_timesteps, (x0.shape[0],), generator=generator)
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
        if t.numel() == 1 and x0.shape[0] > 1:
            t = t.expand(x0.shape[0]).clone()
        if t.numel() != x0.shape[0]:
            raise ConfigError(f"{t.numel()} timesteps for a batch of {x0.shape[0]} images")
        if t.min() < 0 or t.max() >= num_train_timesteps:
            raise ConfigError(f"timesteps must be in [0, {num_train_timesteps - 1}], got {t.tolist()}")
        return cls(x0.detach().cpu(), eps, t)


@dataclass(frozen=True)
class SharedUpdate:
    """What the server receives. `gradients` holds one tensor per UNet parameter: the gradient of the training loss
    for a FedSGD client (`training` None), or the weight delta theta_after - theta_before for a FedAvg client, whose
    local-training settings (E steps, lr) travel with it because the server set them."""

    gradients: tuple[torch.Tensor, ...]
    batch_size: int
    image_shape: tuple[int, int, int]
    eps: torch.Tensor | None = None
    t: torch.Tensor | None = None
    training: LocalTraining | None = None

    @property
    def kind(self) -> str:
        return "fedsgd" if self.training is None else "fedavg"


ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, spelled out so both sides use the same


def client_update(model: DiffusionModel, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                  create_graph: bool = False, training: LocalTraining | None = None) -> tuple[torch.Tensor, ...]:
    """The update a client computes from (x0, eps, t): the gradient of its training loss w.r.t. every parameter
    (FedSGD), or with `training` the weight delta after its local SGD or Adam steps (FedAvg).

    Every attack's matcher calls it on its guesses (the client itself runs `train_locally` with `local_optimizer`,
    which gives the same delta up to float rounding: tested). With `create_graph` the result stays differentiable
    w.r.t. x0 and eps, through every local step, which is what gradient matching needs.
    """
    params = dict(model.unet.named_parameters())
    if training is None:
        loss = diffusion_loss(model, x0, eps, t)
        return tuple(torch.autograd.grad(loss, list(params.values()), create_graph=create_graph))
    # The delta is accumulated from the steps rather than taken as a difference of weights: mathematically the
    # same, but float32 theta_after - theta_before would bury lr * gradient entries (1e-7 and below on faces32 at
    # lr 1e-3) in the rounding of the weights (~6e-2).
    delta = [torch.zeros_like(p) for p in params.values()]
    adam = _AdamSteps(delta) if training.optimizer == "adam" else None
    for _ in range(training.steps):
        weights = {name: p + d for (name, p), d in zip(params.items(), delta)}
        loss = diffusion_loss(model, x0, eps, t, weights)
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=create_graph)
        steps = adam.step(grads, training.lr) if adam else [training.lr * g for g in grads]
        delta = [d - s for d, s in zip(delta, steps)]
    return tuple(delta)


class _AdamSteps:
    """torch.optim.Adam's update (default hyperparameters, no weight decay, no amsgrad, fresh state) in plain
    tensor ops, so it stays differentiable: the same operations in the same order as torch's single-tensor Adam,
    m.lerp_(g, 1 - beta1), v * beta2 + (1 - beta2) g^2, then lr / (1 - beta1^k) * m / (sqrt(v) / sqrt(1 - beta2^k)
    + eps). sqrt sees v clamped at the smallest normal float, which changes no value next to eps but keeps an entry
    whose gradient is exactly 0 from sending 0 * inf = nan back through sqrt."""

    def __init__(self, like: list[torch.Tensor]) -> None:
        self.m = [torch.zeros_like(x) for x in like]
        self.v = [torch.zeros_like(x) for x in like]
        self.k = 0

    def step(self, grads: tuple[torch.Tensor, ...], lr: float) -> list[torch.Tensor]:
        """The amounts to subtract from the weights at this step."""
        (beta1, beta2), self.k = ADAM_BETAS, self.k + 1
        self.m = [torch.lerp(m, g, 1 - beta1) for m, g in zip(self.m, grads)]
        self.v = [v * beta2 + (1 - beta2) * g * g for v, g in zip(self.v, grads)]
        step_size = lr / (1 - beta1 ** self.k)
        root = math.sqrt(1 - beta2 ** self.k)
        return [step_size * (m / (v.clamp_min(torch.finfo(v.dtype).tiny).sqrt() / root + ADAM_EPS))
                for m, v in zip(self.m, self.v)]


def local_optimizer(training: LocalTraining) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    """The torch optimiser a client runs for `training` (`train_locally`'s `optimizer`), fresh each time it is
    called: the steps `client_update` re-simulates."""
    if training.optimizer == "adam":
        return lambda params: torch.optim.Adam(params, lr=training.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    return lambda params: torch.optim.SGD(params, lr=training.lr)


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
    """A federated client's local training, the one loop the FedAvg trainer (`federated.py`, Adam, a fresh batch
    per step), the Flower ClientApp (`federation/`) and the attacked client of `share` run (those two: SGD or
    Adam, `local_optimizer`, on one private batch).

    The optimiser steps the delta, not the weights: the loss is taken at weights + delta, as `client_update` does,
    so the delta keeps its small entries exactly instead of losing them to the rounding of the weights. With
    `local_optimizer(training)`, no clipping and `draw` returning one batch, this is `client_update(...,
    training)` up to float rounding (tested): the update the attacker re-simulates."""
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
    """Run the client's local training on its private batch (one gradient, or `training`'s SGD or Adam steps in
    `train_locally` with a real torch optimiser) and return what leaves the device."""
    device = model.device
    x0, eps, t = batch.x0.to(device), batch.eps.to(device), batch.t.to(device)
    if training is None:
        grads = client_update(model, x0, eps, t)
    else:
        grads = train_locally(model, lambda _: (x0, eps, t), training.steps, local_optimizer(training)).delta
    generator = stream(seed, "defence")  # the defence's own noise, independent of eps and of the attacker
    grads = apply_defence(tuple(g.cpu() for g in grads), threat.defence, generator)
    return SharedUpdate(
        gradients=tuple(g.to(device) for g in grads),
        batch_size=batch.x0.shape[0],
        image_shape=tuple(batch.x0.shape[1:]),
        eps=batch.eps.clone() if threat.knows_eps else None,
        t=batch.t.clone() if threat.knows_t else None,
        training=training,
    )
