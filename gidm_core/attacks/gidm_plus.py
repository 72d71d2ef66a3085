"""GIDM+: the client keeps eps and t private; recover the image, eps and t together.

1. t is read off the update exactly (`timestep.py`), or searched by matching loss where it cannot be.
2. The shared gradient is -(2/N) J(x_t)^T r, with x_t the noisy input and r = target - prediction the residual:
   for a fixed x_t it is linear in r. So the search runs over (x_t, r) rather than (x0, eps), where the naive joint
   search stalls; each step's objective needs a single UNet forward. Any prediction type maps (x_t, r) back to
   (x0, eps) exactly, since the target is r + prediction and x_t mixes x0 and eps with known weights.
3. A final phase refines (x0, eps) jointly from that answer, on the client's own loss.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from ..models import DiffusionModel
from .base import AttackContext, Event, Guess, Objective
from .pixel import matcher_for, pixel_phase
from .secrets import resolve_timesteps


def split_target(model: DiffusionModel, x_t: torch.Tensor, target: torch.Tensor,
                 t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) from the noisy input and the training target at it, for each prediction type."""
    abar = model.scheduler.alphas_cumprod.to(x_t.device, x_t.dtype)[t.long()].reshape(-1, 1, 1, 1)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    kind = model.prediction_type
    if kind == "epsilon":
        eps = target
        return (x_t - s * eps) / a, eps
    if kind == "sample":
        x0 = target
        return x0, (x_t - a * x0) / s.clamp_min(1e-8)
    x0 = a * x_t - s * target  # v = a eps - s x0 and x_t = a x0 + s eps, with a^2 + s^2 = 1
    return x0, s * x_t + a * target


def gidm_plus_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    cfg = ctx.config
    model = ctx.model
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    params = list(model.unet.parameters())
    elements = float(torch.tensor(ctx.shape).prod())
    x_t = (ctx.randn() * 0.5).requires_grad_(True)
    r = torch.zeros(ctx.shape, device=ctx.device).requires_grad_(True)

    def objective() -> Objective:
        prediction = model.unet(x_t, t).sample
        surrogate = -(2.0 / elements) * (r * prediction).sum()
        grads = torch.autograd.grad(surrogate, params, create_graph=True)
        matching = matcher.distance_to(grads)
        x0, eps = split_target(model, x_t.detach(), r.detach() + prediction.detach(), t)
        return Objective(matching, matching, {}, Guess(x0, eps, t))

    guess = yield from ctx.optimise("residual", [x_t, r], objective, cfg.iterations, cfg.lr)
    eps = guess.eps.clone().requires_grad_(True)
    yield from pixel_phase(ctx, matcher, guess.image, eps, [eps], t, cfg.refine_iterations,
                           phase="refine")

