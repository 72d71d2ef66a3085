"""Sample sweeps: a separated batch matched one image at a time, each with its own L-BFGS.

The batch's matching loss couples its images only through the summed update, and at distinct timesteps their
gradients lie in nearly unrelated directions of a million-dimensional space, at scales four orders of magnitude
apart (the held-out faces, t = 7 ... 964). One L-BFGS over the whole batch shares a line search and curvature
pairs between them and crawls (~13 dB at B = 8). Here every image keeps its own L-BFGS state; the sweep visits each
image in turn for a few iterations, with the other images' gradients and per-sample parts held fixed (cached), so
each visit is a one-image problem at one-image cost, against the exact joint loss: the summed update's distance
plus the per-sample terms (`per_sample.py`), which anchor each image to its own separated parts whatever the others'
errors.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator

import torch

from ..diffusion import diffusion_loss
from .base import AttackContext, Event, Guess, Objective, _BudgetSpent, _lbfgs_steps, _PhaseTracker
from .per_sample import SeparatedMatcher

VISIT_ITERATIONS = 4  # L-BFGS iterations on one image before the sweep moves to the next


class _Cache:
    """Each image's current contribution to the batch's update (its FedSGD gradient share, times the step) and
    its per-sample parts, detached: what a visit to another image holds fixed."""

    def __init__(self, matcher: SeparatedMatcher, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> None:
        self.matcher = matcher
        self.batch = x0.shape[0]
        self.grads: list[tuple[torch.Tensor, ...]] = []
        self.parts: list[list[torch.Tensor]] = []
        for b in range(self.batch):
            grads, parts = self.contribution(x0[b:b + 1], eps[b:b + 1], t[b:b + 1], create_graph=False)
            self.grads.append(tuple(g.detach() for g in grads))
            self.parts.append([p.detach() for p in parts])
        self.total = [sum(g) for g in zip(*self.grads)]

    def contribution(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, create_graph: bool = True
                     ) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
        """One image's share of the batch update (its loss is 1/B of the batch's mean) and its parts d_b(x)."""
        m = self.matcher
        with m.time_outputs() as outputs:
            loss = m.step * diffusion_loss(m.model, x, eps, t) / self.batch
        grads = torch.autograd.grad(loss, m.params + outputs, create_graph=create_graph)
        split = len(m.params)
        return grads[:split], [g / m.step for g in grads[split:]]

    def replace(self, b: int, grads: tuple[torch.Tensor, ...], parts: list[torch.Tensor]) -> None:
        self.total = [total - old + new.detach() for total, old, new in zip(self.total, self.grads[b], grads)]
        self.grads[b] = tuple(g.detach() for g in grads)
        self.parts[b] = [p.detach() for p in parts]

    def joint(self, b: int, grads: tuple[torch.Tensor, ...], parts: list[torch.Tensor]
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed, per-sample) distances of the batch with image b's contribution replaced by (grads, parts)."""
        m = self.matcher
        summed = m.distance_to(tuple(total - old + new for total, old, new in zip(self.total, self.grads[b], grads)))
        rows = [torch.cat([*(self.parts[c][i] for c in range(b)), part,
                           *(self.parts[c][i] for c in range(b + 1, self.batch))]) for i, part in enumerate(parts)]
        return summed, m.per_sample_distance(rows)


class _Visit(_PhaseTracker):
    """A tracker that hands control back to the sweep after `VISIT_ITERATIONS` L-BFGS iterations."""

    pause = object()

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.iterations_left = VISIT_ITERATIONS

    def flush(self) -> Iterator[Event]:
        events = list(super().flush())
        self.iterations_left -= 1
        if self.iterations_left < 0:
            self.iterations_left = VISIT_ITERATIONS
            events.append(self.pause)  # type: ignore[arg-type]
        return iter(events)


def sweeps_apply(ctx: AttackContext, matcher: object, extra: list[torch.Tensor]) -> bool:
    """Sweeps need per-sample parts, a known eps and an update that is one gradient (FedSGD or one SGD step)."""
    training = ctx.update.training
    return (isinstance(matcher, SeparatedMatcher) and not extra and ctx.config.optimizer == "lbfgs"
            and (training is None or training.is_one_sgd_step))


def sample_sweeps(ctx: AttackContext, matcher: SeparatedMatcher, start: torch.Tensor, eps: torch.Tensor,
                  t: torch.Tensor, iterations: int) -> Generator[Event, None, Guess]:
    """Match the batch image by image from `start` (eps known) for `iterations` evaluations or their share of the
    time; returns the best batch seen."""
    phase = "sweeps"
    ctx.phase_starts[phase] = ctx.iteration
    end, deadline = ctx._phase_budget(iterations)
    batch = ctx.shape[0]
    images = start.detach().clone().clamp(-1, 1)
    cache = _Cache(matcher, images, eps, t)
    variables = [images[b:b + 1].clone().requires_grad_(True) for b in range(batch)]

    def objective_for(b: int):
        x = variables[b]

        def objective() -> Objective:
            grads, parts = cache.contribution(x, eps[b:b + 1], t[b:b + 1])
            summed, per_sample = cache.joint(b, grads, parts)
            total = summed + matcher.weight * per_sample
            batch_image = torch.cat([images[:b], x, images[b + 1:]])
            terms = {"summed": summed.detach(), "per_sample": per_sample.detach()}
            return Objective(total, total, terms, Guess(batch_image, None, t))

        return objective

    def project(b: int):
        return lambda: variables[b].clamp_(-1, 1)

    trackers = [_Visit(ctx, phase, [variables[b]], objective_for(b), end, deadline) for b in range(batch)]
    for tracker in trackers[1:]:
        tracker.first = False  # one "phase starts" event for the stage
    steps = {b: _lbfgs_steps(trackers[b], [variables[b]], project(b)) for b in range(batch)}
    # The loudest images first: their errors are the others' largest disturbance.
    order = sorted(range(batch), key=lambda b: -float(sum(p[b].pow(2).sum() for p in matcher.parts)))
    while steps:
        for b in order:
            if b not in steps:
                continue
            try:
                for event in steps[b]:
                    if event is _Visit.pause:
                        break
                    yield event
            except _BudgetSpent:
                del steps[b]
            with torch.no_grad():
                variables[b].clamp_(-1, 1)
                images[b:b + 1] = variables[b].detach()
            grads, parts = cache.contribution(variables[b].detach(), eps[b:b + 1], t[b:b + 1], create_graph=False)
            cache.replace(b, grads, parts)
            if ctx.iteration >= end:
                steps.clear()
    best = [tracker.best for tracker in trackers if tracker.best is not None]
    if not best:
        raise ValueError(f"{phase} phase has no iterations")
    guess = min(best, key=lambda pair: pair[0])[1]
    ctx.snapshots[phase] = guess.image.detach().cpu()
    return guess
