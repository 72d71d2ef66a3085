"""GIDM: the diffusion model is its own image prior.

Phase 1 searches the start latent x_T of the prior's deterministic DDIM sampler (K steps, differentiated end to end)
so that the generated image's update matches the shared one: the answer stays on the model's image manifold, which
is what it learned from the clients' data. Phase 2 starts from phase 1's best image and fine-tunes pixels against
the same update (same model, eps, t and target), to reach details the manifold cannot. GIDM-latent is phase 1 alone.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from ..diffusion import DDIMSampler
from ..models import DiffusionModel, ModelLoadError
from .base import AttackContext
from .curriculum import batch_start
from .events import Event, Guess
from .matching import GradientMatcher
from .per_sample import SeparatedMatcher, separated_matcher, start_objective
from .pixel import image_objective, matcher_for, pixel_phase
from .secrets import noise_variable, resolve_timesteps
from .starts import batched_matching


def latent_phase(ctx: AttackContext, matcher: GradientMatcher, eps: torch.Tensor, extra: list[torch.Tensor],
                 t: torch.Tensor) -> Generator[Event, None, Guess]:
    """Optimise x_T of the prior's DDIM sampler. With `restarts` > 1, the best of that many seeded latents (by
    matching loss) is the start: one sampler pass each, far cheaper than full restarts."""
    cfg = ctx.config
    prior = ctx.prior
    # The UNet is fully convolutional: the sampler draws images of the update's size, whatever size it trained on.
    check_prior(prior, ctx.shape[1], ctx.shape[2])
    sampler = DDIMSampler(prior, cfg.ddim_steps)
    z = _best_start(ctx, sampler, matcher, eps, t).requires_grad_(True)
    if isinstance(matcher, SeparatedMatcher) and matcher.apart:  # one latent per image, against its own parts
        objective = start_objective(matcher, lambda: sampler(z), eps, t, secret_eps=bool(extra))
    else:
        objective = image_objective(ctx, matcher, lambda: sampler(z), eps, t, secret_eps=bool(extra))
    return (yield from ctx.optimise("latent", [z, *extra], objective, cfg.latent_iterations, cfg.latent_lr))


def check_prior(prior: DiffusionModel, channels: int, size: int) -> None:
    """Refuse a prior that cannot draw images of this shape (raises `ModelLoadError`, one line)."""
    if prior.channels != channels:
        raise ModelLoadError(f"prior {prior.name} makes {prior.channels}-channel images, the victims have {channels}")
    prior.check_size(size)


def _best_start(ctx: AttackContext, sampler: DDIMSampler, matcher: GradientMatcher, eps: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor:
    candidates = torch.stack([ctx.randn() for _ in range(ctx.config.restarts)])
    if len(candidates) == 1:
        return candidates[0]
    with torch.no_grad():  # one sampler pass and one vectorised scoring for all candidates
        images = sampler(candidates.flatten(0, 1)).view_as(candidates)
    return candidates[int(batched_matching(matcher, images, eps.detach(), t).argmin())]


def gidm_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    matcher = yield from separated_matcher(ctx, matcher, t)
    eps, extra = noise_variable(ctx)
    yield from image_phases(ctx, matcher, eps, extra, t, ctx.config.pixel_iterations)


def image_phases(ctx: AttackContext, matcher: GradientMatcher, eps: torch.Tensor, extra: list[torch.Tensor],
                 t: torch.Tensor, pixel_iterations: int) -> Generator[Event, None, Guess]:
    """GIDM's phases (latent, then pixels from its best image) over the image and, when private, eps; returns the
    best guess of the last phase run (GIDM+ starts its residual stage from it)."""
    cfg = ctx.config
    guess = None
    if cfg.uses_latent_phase:
        guess = yield from latent_phase(ctx, matcher, eps, extra, t)
        start = guess.image
        if guess.eps is not None:
            with torch.no_grad():
                eps.copy_(guess.eps)
    else:
        start, pixel_iterations = yield from batch_start(ctx, matcher, ctx.randn() * 0.5, eps, extra, t,
                                                         pixel_iterations)
    if cfg.uses_pixel_phase and pixel_iterations > 0:
        guess = yield from pixel_phase(ctx, matcher, start, eps, extra, t, pixel_iterations)
    return guess
