"""Pixel-space gradient matching: the baselines DLG and Inverting Gradients, and GIDM's phase 2.

DLG (Zhu et al. 2019) and IG (Geiping et al. 2020) are the same search with different defaults (see
`methods.SPECS`): DLG matches squared L2 distance, IG cosine distance with a total-variation prior. Pixels
are kept inside the image range [-1, 1] after every step.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import torch

from .adam_delta import confidence, matcher_defence, smoothing
from .base import AttackContext
from .curriculum import batch_start
from .events import Event, Guess, Objective
from .matching import GradientMatcher, total_variation
from .per_sample import separated_matcher
from .secrets import noise_variable, resolve_timesteps
from .spectral import SpectralPixels, damped


def matcher_for(ctx: AttackContext) -> GradientMatcher:
    update = ctx.update
    return GradientMatcher(ctx.model, update, ctx.config.distance, ctx.config.layer_weights,
                           matcher_defence(update, ctx.threat.defence), confidence(update), smoothing(update))


def image_objective(ctx: AttackContext, matcher: GradientMatcher, make_image: Callable[[], torch.Tensor],
                    eps: torch.Tensor, t: torch.Tensor, secret_eps: bool) -> Callable[[], Objective]:
    """Matching loss of the image `make_image()` returns (pixels, or a sampler's output), plus the TV prior."""
    tv_weight = ctx.config.tv_weight

    def objective() -> Objective:
        image = make_image()
        matching = matcher(image, eps, t)
        terms: dict[str, torch.Tensor] = dict(getattr(matcher, "last", {}))  # a separated batch's two terms
        total = matching
        if tv_weight > 0:
            terms["tv"] = total_variation(image)
            total = total + tv_weight * terms["tv"]
        return Objective(total, matching, terms, Guess(image, eps if secret_eps else None, t))

    return objective


def pixel_phase(ctx: AttackContext, matcher: GradientMatcher, start: torch.Tensor, eps: torch.Tensor,
                extra: list[torch.Tensor], t: torch.Tensor, iterations: int | None = None,
                phase: str = "pixel") -> Generator[Event, None, Guess]:
    """Optimise pixels (and eps, when it is among `extra`) from `start` against the shared update; an SGD delta
    with a low-noise step searches them in a damped Fourier basis (`spectral.py`)."""
    cfg = ctx.config
    steps = cfg.pixel_iterations if iterations is None else iterations
    start = start.detach().clamp(-1, 1)
    if damped(ctx.model, ctx.update, t):
        ctx.details["pixel_basis"] = "damped Fourier"
        basis = SpectralPixels(*start.shape[-2:], start.device)
        z = basis.coefficients(start).requires_grad_(True)
        objective = image_objective(ctx, matcher, lambda: basis.image(z), eps, t, secret_eps=bool(extra))
        return (yield from ctx.optimise(phase, [z, *extra], objective, steps, cfg.lr,
                                        project=lambda: z.copy_(basis.coefficients(basis.image(z).clamp(-1, 1)))))
    x = start.clone().requires_grad_(True)
    objective = image_objective(ctx, matcher, lambda: x, eps, t, secret_eps=bool(extra))
    return (yield from ctx.optimise(phase, [x, *extra], objective, steps, cfg.lr,
                                    project=lambda: x.clamp_(-1, 1)))


def pixel_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    """DLG / IG: start from seeded noise and match in pixel space (a separated batch: each image against its own
    parts first, `per_sample.py`)."""
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    matcher = yield from separated_matcher(ctx, matcher, t)
    eps, extra = noise_variable(ctx)
    start, iterations = yield from batch_start(ctx, matcher, ctx.randn() * 0.5, eps, extra, t,
                                               ctx.config.pixel_iterations)
    yield from pixel_phase(ctx, matcher, start, eps, extra, t, iterations)
