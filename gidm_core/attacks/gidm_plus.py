"""GIDM+: the client keeps eps and t private; recover the image, eps and t together.

1. t is read off the update exactly (`timestep.py`), or searched by matching loss where it cannot be.
2. The shared gradient is g = c J(x_t)^T r, with c = -2/N, J the Jacobian of the UNet output w.r.t. the weights at
   the noisy input x_t, and r = target - prediction the residual. Any prediction type maps (x_t, r) back to
   (x0, eps) exactly (`split_target`), so the search runs over (x_t, r) rather than (x0, eps), where joint Adam stalls.
3. Variable projection: for a fixed x_t, g is linear in r, so the best r is a linear least-squares problem. Each
   step solves it approximately with a few conjugate-gradient steps warm-started from the last r, and Adam searches
   x_t alone on the reduced objective (at the least-squares r, the partial derivative w.r.t. x_t is the reduced
   objective's gradient). Adam on r itself is a poorly conditioned solver for this quadratic: see docs/gidm_plus.md.
4. A refine phase restarts from the best (x_t, r) with more CG steps and a smaller learning rate. (Clamping x0 to
   [-1, 1] after every step was measured to hurt: it pulls x_t off the path the warm-started solver follows.)

Where it stops working: x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar) amplifies any error in x_t and eps by
sqrt(1-abar_t)/sqrt(abar_t) (about 1 at t=250, 3.4 at t=500, 17 at t=750, 97 at t=950 for the linear DDPM
schedule), so a matching loss that gives a sharp image at small t gives a rough one at large t
(measured: docs/gidm_plus.md).
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import torch

from ..diffusion import q_sample, training_target
from ..matching import GradientMatcher
from ..models import DiffusionModel
from .base import AttackContext, Event, Guess, Objective
from .pixel import matcher_for
from .secrets import resolve_timesteps

CG_STEPS = 2  # least-squares steps for r per residual-phase step (1 stalls at t=500)
REFINE_CG_STEPS = 4  # near the answer, eps is only as good as r: spend more on it
REFINE_LR_FACTOR = 0.1  # the refine phase restarts Adam; a full learning rate would throw x_t off the answer


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


def solve_residual(matcher: GradientMatcher, prediction: torch.Tensor, r: torch.Tensor, scale: float,
                   steps: int) -> torch.Tensor:
    """A few CGLS steps on min_r sum_l w_l ||scale J_l^T r - g*_l||^2 from `r`, with the prediction's graph held.

    J^T p is one backward pass; J u is the derivative of J^T v w.r.t. a dummy v (the double-backward trick).
    """
    params = list(matcher.model.unet.parameters())
    weights, targets = matcher.weights, matcher.targets
    dummy = torch.zeros_like(prediction, requires_grad=True)
    linear = torch.autograd.grad(prediction, params, grad_outputs=dummy, create_graph=True)

    def forward(p: torch.Tensor) -> list[torch.Tensor]:
        return [scale * g for g in torch.autograd.grad(prediction, params, grad_outputs=p, retain_graph=True)]

    def adjoint(e: list[torch.Tensor]) -> torch.Tensor:
        weighted = [w * x for w, x in zip(weights, e)]
        return scale * torch.autograd.grad(linear, dummy, grad_outputs=weighted, retain_graph=True)[0]

    def inner(u: list[torch.Tensor], v: list[torch.Tensor]) -> torch.Tensor:
        return sum((w * a * b).sum() for w, a, b in zip(weights, u, v))

    r = r.detach().clone()
    error = [g_star - g for g_star, g in zip(targets, forward(r))]
    descent = adjoint(error)
    direction, norm = descent.clone(), descent.pow(2).sum()
    for _ in range(steps):
        image = forward(direction)
        alpha = norm / inner(image, image).clamp_min(1e-30)
        r = r + alpha * direction
        error = [e - alpha * q for e, q in zip(error, image)]
        descent = adjoint(error)
        new_norm = descent.pow(2).sum()
        direction = descent + (new_norm / norm.clamp_min(1e-30)) * direction
        norm = new_norm
    return r.detach()


def gidm_plus_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    cfg = ctx.config
    model = ctx.model
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    params = list(model.unet.parameters())
    scale = -2.0 / float(torch.tensor(ctx.shape).prod())
    x_t = (ctx.randn() * 0.5).requires_grad_(True)
    residual = {"r": torch.zeros(ctx.shape, device=ctx.device)}

    def objective(cg_steps: int) -> Callable[[], Objective]:
        def evaluate() -> Objective:
            prediction = model.unet(x_t, t).sample
            r = residual["r"] = solve_residual(matcher, prediction, residual["r"], scale, cg_steps)
            grads = torch.autograd.grad(scale * (r * prediction).sum(), params, create_graph=True)
            matching = matcher.distance_to(grads)
            x0, eps = split_target(model, x_t.detach(), r + prediction.detach(), t)
            return Objective(matching, matching, {}, Guess(x0, eps, t))
        return evaluate

    best = yield from ctx.optimise("residual", [x_t], objective(CG_STEPS), cfg.iterations - cfg.refine_iterations,
                                   cfg.lr)
    if cfg.refine_iterations > 0:
        with torch.no_grad():  # restart from the best (x_t, r), which the best (x0, eps) pins down exactly
            x_t.copy_(q_sample(model, best.image, best.eps, t))
            residual["r"] = training_target(model, best.image, best.eps, t) - model.unet(x_t, t).sample
        yield from ctx.optimise("refine", [x_t], objective(REFINE_CG_STEPS), cfg.refine_iterations,
                                cfg.lr * REFINE_LR_FACTOR)
