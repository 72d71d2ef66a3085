"""The client side: a private batch, the model update it shares, and the defences applied before it leaves.

Only a `SharedUpdate` crosses to the server. It carries eps and t only when the threat model says the client
reveals them (the paper's setting); otherwise they stay in the `PrivateBatch`, which only the evaluator sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import ConfigError, DefenceConfig, ThreatModel
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
    """What the server receives. `kind` names what `gradients` holds; "fedsgd" (one gradient of the training loss)
    is the only kind there is, and nothing reads the field yet. A FedAvg weight delta (several local steps) would be
    another kind, and the attacks would then have to re-simulate those steps on their guesses."""

    gradients: tuple[torch.Tensor, ...]
    batch_size: int
    image_shape: tuple[int, int, int]
    eps: torch.Tensor | None = None
    t: torch.Tensor | None = None
    kind: str = "fedsgd"


def client_update(model: DiffusionModel, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                  create_graph: bool = False) -> tuple[torch.Tensor, ...]:
    """The update a client computes from (x0, eps, t): the gradient of its training loss w.r.t. every parameter.

    With `create_graph` the result stays differentiable w.r.t. x0 and eps, which is what gradient matching needs.
    """
    params = [p for p in model.unet.parameters()]
    loss = diffusion_loss(model, x0, eps, t)
    return tuple(torch.autograd.grad(loss, params, create_graph=create_graph))


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


def share(model: DiffusionModel, batch: PrivateBatch, threat: ThreatModel, seed: int = 0) -> SharedUpdate:
    """Run the client's training step on its private batch and return what leaves the device."""
    device = model.device
    grads = client_update(model, batch.x0.to(device), batch.eps.to(device), batch.t.to(device))
    generator = stream(seed, "defence")  # the defence's own noise, independent of eps and of the attacker
    grads = apply_defence(tuple(g.cpu() for g in grads), threat.defence, generator)
    return SharedUpdate(
        gradients=tuple(g.to(device) for g in grads),
        batch_size=batch.x0.shape[0],
        image_shape=tuple(batch.x0.shape[1:]),
        eps=batch.eps.clone() if threat.knows_eps else None,
        t=batch.t.clone() if threat.knows_t else None,
    )
