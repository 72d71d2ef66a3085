"""What an attack does about the secrets the client kept: the timesteps t and the noise eps.

t is read off the update (see `timestep.py`); where that layer is missing or unreadable (a heavy noise defence),
candidate timesteps are ranked by the matching loss a short pixel search reaches with each. Unknown eps becomes one
more variable that baseline attacks optimise jointly with the image; GIDM+ has its own parameterisation instead.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from .base import AttackContext
from .events import Event
from .matching import GradientMatcher
from .timestep import recover_timesteps

SEARCH_CANDIDATES = 12
SEARCH_STEPS = 15


def resolve_timesteps(ctx: AttackContext, matcher: GradientMatcher) -> Generator[Event, None, torch.Tensor]:
    """The timesteps the attack will use: the revealed ones, else recovered from the update, else searched."""
    if ctx.update.t is not None:
        return ctx.update.t.to(ctx.device)
    estimate = recover_timesteps(ctx.model, ctx.update)
    if estimate is not None and estimate.confident:
        ctx.t_estimate = tuple(estimate.t.tolist())
        yield ctx.event("phase", "timestep", {}, torch.zeros(ctx.shape), estimate.describe())
        return estimate.t.to(ctx.device)
    t = _search(ctx, matcher, [] if estimate is None else estimate.t.tolist())
    ctx.t_estimate = tuple(t.tolist())
    reason = "no time-embedding layer" if estimate is None else "time-embedding gradient not confident"
    yield ctx.event("phase", "timestep", {}, torch.zeros(ctx.shape),
                    f"t = {t.tolist()} by matching-loss search ({reason})")
    return t


def _search(ctx: AttackContext, matcher: GradientMatcher, hints: list[int]) -> torch.Tensor:
    """Best shared timestep for every secret by the matching loss of a short, identical pixel search per candidate."""
    T = ctx.model.num_train_timesteps
    grid = torch.linspace(0, T - 1, SEARCH_CANDIDATES).round().long().tolist()
    start = ctx.randn() * 0.5
    eps_start = ctx.update.eps.to(ctx.device) if ctx.update.eps is not None else ctx.randn(secret_shape(ctx))
    best_t, best_loss = grid[0], float("inf")
    for candidate in sorted(set(grid + hints)):
        t = torch.full((ctx.update.secrets,), candidate, dtype=torch.long, device=ctx.device)
        x = start.clone().requires_grad_(True)
        eps = eps_start.clone().requires_grad_(ctx.update.eps is None)
        variables = [x] + ([eps] if eps.requires_grad else [])
        optimizer = torch.optim.Adam(variables, lr=ctx.config.lr)
        lowest = float("inf")
        for _ in range(SEARCH_STEPS):
            ctx.check_stop()
            loss = matcher(x, eps, t)
            lowest = min(lowest, float(loss.detach()))
            for variable, grad in zip(variables, torch.autograd.grad(loss, variables)):
                variable.grad = grad
            optimizer.step()
        if lowest < best_loss:
            best_t, best_loss = candidate, lowest
    return torch.full((ctx.update.secrets,), best_t, dtype=torch.long, device=ctx.device)


def noise_variable(ctx: AttackContext) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The eps to match with, and the extra variables to optimise (none when the client revealed eps)."""
    if ctx.update.eps is not None:
        return ctx.update.eps.to(ctx.device), []
    eps = ctx.randn(secret_shape(ctx)).requires_grad_(True)
    return eps, [eps]


def secret_shape(ctx: AttackContext) -> tuple[int, ...]:
    """The shape of the client's eps: one per image, or with fresh noise one per slot of every local step."""
    return (ctx.update.secrets, *ctx.update.image_shape)
