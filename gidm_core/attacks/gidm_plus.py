"""GIDM+: the client keeps eps and t private; recover the image, eps and t together.

1. t is read off the update exactly (`timestep.py`), or searched by matching loss where it cannot be.
2. The search runs over (x_t, r), the UNet's noisy input and the residual r = target - prediction, not over
   (x0, eps): the shared gradient is g = c J(x_t)^T r (c = -2/N, J the Jacobian of the UNet output w.r.t. the
   weights), bilinear in (J(x_t), r), and (x_t, r) maps back to (x0, eps) exactly for every prediction type
   (`split_target`). r is searched as r = r_scale * u: r_scale sets how far L-BFGS moves r against x_t. A trained
   model's residual is small where abar_t is large (its loss is ~0.02), so r_scale follows the noise schedule:
   0.35 sqrt(abar_t / (1 - abar_t)), clipped to [0.03, 3] (about 1 at t = 100, 0.17 at t = 400; being 3-10x off
   cost 10-15 dB in our measurements on faces32).
3. Joint L-BFGS on (x_t, u) with plain L2 matching. (Variable projection, a CG least-squares solve for r at every
   step, stalled near 17.5 dB: at the true x_t, 50 CG steps still leave 22 % error in r, so its reduced objective
   is inaccurate and not a fixed function of x_t.)
   It starts from x_t = 0.5 N(0, I) of the attacker's own stream and r = 0. (Scouting three starts on half the
   budget and continuing the best by matching loss was tried: it left too few evaluations for the search, which
   needs ~1000 to converge, and did not rescue the starts that stall.)

Where it stops working: x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar) amplifies any error in x_t and eps by
sqrt(1-abar_t)/sqrt(abar_t) (about 1 at t=250, 3.4 at t=500, 17 at t=750, 97 at t=950 for the linear DDPM
schedule), and at small t eps hardly shows in x_t (docs/gidm_plus.md has the measured table).
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from ..models import DiffusionModel
from .base import AttackContext, Event, Guess, Objective
from .pixel import matcher_for
from .secrets import resolve_timesteps

R_SCALE_FACTOR = 0.35
R_SCALE_RANGE = (0.03, 3.0)


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


def residual_scale(model: DiffusionModel, t: torch.Tensor) -> float:
    """How far r moves against x_t in the search: the trained model's residual shrinks where abar_t is large."""
    abar = model.scheduler.alphas_cumprod.to(torch.float64)[t.long().cpu()]
    return float((R_SCALE_FACTOR * (abar / (1 - abar)).sqrt()).mean().clamp(*R_SCALE_RANGE))


def gidm_plus_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    cfg = ctx.config
    model = ctx.model
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    params = list(model.unet.parameters())
    scale = -2.0 / float(torch.tensor(ctx.shape).prod())
    r_scale = residual_scale(model, t)
    x_t = torch.zeros(ctx.shape, device=ctx.device, requires_grad=True)
    u = torch.zeros(ctx.shape, device=ctx.device, requires_grad=True)

    def objective() -> Objective:
        prediction = model.unet(x_t, t).sample
        r = r_scale * u
        grads = torch.autograd.grad(scale * (r * prediction).sum(), params, create_graph=True)
        matching = matcher.distance_to(grads)
        x0, eps = split_target(model, x_t.detach(), (r + prediction).detach(), t)
        return Objective(matching, matching, {}, Guess(x0, eps, t))

    with torch.no_grad():
        x_t.copy_(ctx.randn() * 0.5)
    yield from ctx.optimise("search", [x_t, u], objective, cfg.iterations, cfg.lr)
