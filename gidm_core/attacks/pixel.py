"""Pixel-space gradient matching: the baselines DLG and Inverting Gradients, and GIDM's phase 2.

DLG (Zhu et al. 2019) and IG (Geiping et al. 2020) are the same search with different defaults (see
`config.METHOD_DEFAULTS`): DLG matches squared L2 distance, IG cosine distance with a total-variation prior. Pixels
are kept inside the image range [-1, 1] after every step.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from ..matching import GradientMatcher, total_variation
from .base import AttackContext, Event, Guess, Objective
from .secrets import noise_variable, resolve_timesteps


def matcher_for(ctx: AttackContext) -> GradientMatcher:
    return GradientMatcher(ctx.model, ctx.update, ctx.config.distance, ctx.config.layer_weights, ctx.threat.defence)


def pixel_phase(ctx: AttackContext, matcher: GradientMatcher, start: torch.Tensor, eps: torch.Tensor,
                extra: list[torch.Tensor], t: torch.Tensor, iterations: int | None = None,
                phase: str = "pixel") -> Generator[Event, None, Guess]:
    """Optimise pixels (and eps, when it is among `extra`) from `start` against the shared update."""
    cfg = ctx.config
    x = start.detach().clone().clamp(-1, 1).requires_grad_(True)
    secret_eps = bool(extra)

    def objective() -> Objective:
        matching = matcher(x, eps, t)
        terms: dict[str, torch.Tensor] = {}
        total = matching
        if cfg.tv_weight > 0:
            terms["tv"] = total_variation(x)
            total = total + cfg.tv_weight * terms["tv"]
        return Objective(total, matching, terms, Guess(x, eps if secret_eps else None, t))

    steps = cfg.iterations if iterations is None else iterations
    return (yield from ctx.optimise(phase, [x, *extra], objective, steps, cfg.lr,
                                    project=lambda: x.clamp_(-1, 1)))


def pixel_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    """DLG / IG: start from seeded noise and match in pixel space."""
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    eps, extra = noise_variable(ctx)
    yield from pixel_phase(ctx, matcher, ctx.randn() * 0.5, eps, extra, t)
