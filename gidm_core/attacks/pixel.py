"""Pixel-space gradient matching: the baselines DLG and Inverting Gradients, and GIDM's phase 2.

DLG (Zhu et al. 2019) and IG (Geiping et al. 2020) are the same search with different defaults (see
`methods.SPECS`): DLG matches squared L2 distance, IG cosine distance with a total-variation prior. Pixels
are kept inside the image range [-1, 1] after every step.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, replace

import torch

from .adam_delta import annealing, confidence, matcher_defence, smoothing
from .base import AttackContext
from .curriculum import batch_start, joint_damped_rows
from .events import Event, Guess, Objective
from .linearised import LINEARISED_SHARE, LINEARISED_TOLERANCE, linearisable, linearisation_error
from .matching import GradientMatcher, total_variation
from .per_sample import separated_matcher
from .secrets import noise_variable, resolve_timesteps
from .spectral import SpectralPixels, coarse_to_fine, damped, mixed_space


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


@dataclass(frozen=True)
class Stage:
    """One stretch of the pixel phase, from the last stretch's best guess: its share of the phase's iterations, the
    basis it searches (a damped Fourier basis's corner in cycles per image, `spectral.py`, or 0: raw pixels), the
    smoothing kappa of an Adam re-simulation (`adam_delta.annealing`) and whether an SGD client's steps are
    re-simulated at the broadcast weights (`linearised.py`)."""

    share: float
    corner: float = 0.0
    smoothing: float = 0.0
    linearised: bool = False

    @property
    def surrogate(self) -> tuple[float, bool]:
        """What the matcher re-simulates in this stage (its `smoothing`, `linearised`): losses compare within one."""
        return self.smoothing, self.linearised


def pixel_stages(ctx: AttackContext, matcher: GradientMatcher, t: torch.Tensor, start: torch.Tensor,
                 eps: torch.Tensor) -> tuple[Stage, ...]:
    """A low-noise step's pixels go coarse to fine (`spectral.coarse_to_fine`, where `spectral.damped` says), a
    smoothed Adam re-simulation through its kappa schedule; anything else is one stage. Several SGD steps spend
    the first `LINEARISED_SHARE` of that plan on the cheaper linearised re-simulation, the rest exact, where the
    linearisation is close at `start` (the phase's first guess, with `eps`)."""
    if damped(ctx.model, ctx.update, t, prior_start=ctx.config.uses_latent_phase):
        stages = tuple(Stage(share, corner, matcher.smoothing) for corner, share in coarse_to_fine())
    else:
        stages = tuple(Stage(share, 0.0, kappa) for kappa, share in annealing(matcher))
    training = ctx.update.training
    if not linearisable(training):
        return stages
    error = linearisation_error(ctx.model, start, eps, t, training, ctx.update.schedule)
    ctx.details["linearisation_error"] = error
    if not error <= LINEARISED_TOLERANCE:  # a NaN error (a guess the client's steps blow up on) keeps it exact too
        return stages
    first, last = stages[:-1], stages[-1]
    return (*(replace(stage, linearised=True) for stage in first),
            replace(last, share=last.share * LINEARISED_SHARE, linearised=True),
            replace(last, share=last.share * (1 - LINEARISED_SHARE)))


def pixel_phase(ctx: AttackContext, matcher: GradientMatcher, start: torch.Tensor, eps: torch.Tensor,
                extra: list[torch.Tensor], t: torch.Tensor, iterations: int | None = None,
                phase: str = "pixel", damped_rows: tuple[int, ...] = ()) -> Generator[Event, None, Guess]:
    """Optimise pixels (and eps, when it is among `extra`) from `start` against the shared update, in the stages
    `pixel_stages` plans (each restarts L-BFGS; a phase of fewer iterations than stages runs the last alone, whose
    loss picks the answer); the images of `damped_rows` in the damped basis (`spectral.mixed_space`)."""
    cfg = ctx.config
    steps = cfg.pixel_iterations if iterations is None else iterations
    stages = pixel_stages(ctx, matcher, t, start, eps)
    stages = stages if steps >= len(stages) else stages[-1:]
    guess, left, image = None, steps, start.detach().clamp(-1, 1)
    for number, stage in enumerate(stages):
        if guess is not None:
            image = guess.image.detach()
            if guess.eps is not None:
                with torch.no_grad():
                    eps.copy_(guess.eps)
        if stage.surrogate != (matcher.smoothing, matcher.linearised):
            matcher.smoothing, matcher.linearised = stage.surrogate
            ctx.restart_best()  # another surrogate: earlier losses no longer compare with its own
        forgotten = any(later.surrogate != stage.surrogate for later in stages[number + 1:])
        ctx.provisional = _answering_loss(matcher, stages[-1], eps, t) if forgotten else None
        if stage.corner:
            ctx.details["pixel_basis"] = "damped Fourier"
        later = len(stages) - 1 - number  # each later stage keeps at least one iteration
        share = left if not later else min(max(round(steps * stage.share), 1), left - later)
        left -= share
        variables, make_image, project = (_search_space(image, stage.corner) if stage.corner or not damped_rows
                                          else mixed_space(image, list(damped_rows)))
        objective = image_objective(ctx, matcher, make_image, eps, t, secret_eps=bool(extra))
        began = ctx.phase_starts.get(phase)
        guess = yield from ctx.optimise(phase, [*variables, *extra], objective, share, cfg.lr, project)
        if number:  # one phase to whoever plots it
            ctx.phase_starts[phase] = began
    ctx.provisional = None
    return guess


def _answering_loss(matcher: GradientMatcher, last: Stage, eps: torch.Tensor, t: torch.Tensor
                    ) -> Callable[[Guess], float]:
    """A guess's matching loss under the last stage's surrogate (or none), whose losses pick the answer."""

    def score(guess: Guess) -> float:
        mode = matcher.smoothing, matcher.linearised
        matcher.smoothing, matcher.linearised = last.surrogate
        try:
            return float(matcher(guess.image, eps if guess.eps is None else guess.eps, t, create_graph=False))
        finally:
            matcher.smoothing, matcher.linearised = mode

    return score


def _search_space(image: torch.Tensor, corner: float
                  ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor], Callable[[], torch.Tensor]]:
    """(the variables, the image they make, their projection onto [-1, 1]) for raw pixels or a damped basis."""
    if not corner:
        x = image.clone().requires_grad_(True)
        return [x], lambda: x, lambda: x.clamp_(-1, 1)
    basis = SpectralPixels(*image.shape[-2:], image.device, corner)
    z = basis.coefficients(image).requires_grad_(True)
    return [z], lambda: basis.image(z), lambda: z.copy_(basis.coefficients(basis.image(z).clamp(-1, 1)))


def pixel_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    """DLG / IG: start from seeded noise and match in pixel space (a separated batch: each image against its own
    parts first, `per_sample.py`)."""
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    matcher = yield from separated_matcher(ctx, matcher, t)
    eps, extra = noise_variable(ctx)
    start, iterations = yield from batch_start(ctx, matcher, ctx.randn() * 0.5, eps, extra, t,
                                               ctx.config.pixel_iterations)
    yield from pixel_phase(ctx, matcher, start, eps, extra, t, iterations,
                           damped_rows=joint_damped_rows(matcher, extra, t))
