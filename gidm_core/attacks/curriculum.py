"""A curriculum by timestep for separated batches: fit the images the update sees loudly first, then the rest.

The update sees image b only through x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps: at t = 964 on faces32 the
image is scaled by 0.009, at t = 7 by 0.999. Matched jointly from noise, the quiet (high-t) images are cheap
slack: moving their pixels far changes the update little, so the optimiser spends them on the loud images'
residuals and they drift to the clamp (docs/batches.md). The curriculum keeps them out until the loud ones fit.
The batch is split into groups of similar sqrt(abar_t); stage k frees groups 1..k, while the quieter images wait
at zero, where their contribution to the update is nearly right already (it depends on them through their small
sqrt(abar_t)). A waiting image's update is computed once and taken off the target, so a stage runs the UNet on
its free images only (the loud group's stage costs about half a B = 8 evaluation on this CPU). A last joint stage
matches all images together. Freezing the fitted groups instead of keeping them free was worse: the later
groups then absorbed the loud groups' leftover residual (9.3 vs 14.6 dB on faces32, B = 8, 150 CPU-s).

The loud group is searched in the damped Fourier basis (`spectral.py`) in its stage, and a low-noise image
(t = 7: its x_t is 0.04 noise) in every stage, from the attack's noise seen through the basis. In raw pixels from
noise, a loud image's wrong fine detail, which the update weighs heavily at a small t, puts a residual into the
summed update that its partners fit instead of their own (faces32, 300 CPU-s: B = 8 15.9 -> 21.6 dB mean, the
t = 7 face 25.3 -> 37.5; B = 16 18.6 -> 20.9; docs/batches.md). The joint stage keeps the low-noise images
damped (`joint_damped_rows`).

Its matching loss is the full joint loss in every stage (the waiting rows' per-sample distance is a constant), so
the run's answer is chosen on one scale as in every other phase.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator

import torch

from ..diffusion import diffusion_loss
from .base import AttackContext
from .events import Event, Guess, Objective
from .matching import GradientMatcher
from .per_sample import SeparatedMatcher, pixel_start
from .spectral import low_noise_rows, mixed_space, smoothed

# Images whose sqrt(abar_t) are within this factor of the group's loudest share a stage.
GROUP_RATIO = 3.0
# Share of the pixel iterations left for the final joint stage; the groups share the rest by their size.
JOINT_SHARE = 0.3
# Which images the stages search in the damped Fourier basis (`spectral.mixed_space`), from a start seen through
# it: "low-noise" (sqrt(1 - abar_t) < 0.1, every stage), "first-group" (the loud group, in its own stage), "loud"
# (both), or "off" (raw pixels).
DAMPED = "loud"
# Whether the joint stage after the curriculum keeps the low-noise images in the damped basis (B = 8, damping the
# low-noise image: 20.5 dB without, 22.1 with, docs/batches.md).
DAMPED_JOINT = True


def signal_groups(matcher: SeparatedMatcher, t: torch.Tensor) -> list[list[int]]:
    """The batch's slots grouped by sqrt(abar_t), loudest (smallest t) first: a group starts wherever an image
    is quieter than the current group's loudest by more than `GROUP_RATIO`."""
    loudness = matcher.model.scheduler.alphas_cumprod[t.cpu().long()].sqrt().tolist()
    order = sorted(range(len(loudness)), key=lambda b: -loudness[b])
    groups = [[order[0]]]
    for b in order[1:]:
        if loudness[groups[-1][0]] > GROUP_RATIO * loudness[b]:
            groups.append([b])
        else:
            groups[-1].append(b)
    return groups


class GroupMatcher:
    """The joint loss of a separated batch as a function of the images in `rows` alone, the others held at `x`.

    The held images' update is taken off the summed target once; their per-sample distances are a constant. The
    group's loss is scaled by its share of the batch, as the client's mean loss weighs it."""

    def __init__(self, matcher: SeparatedMatcher, rows: list[int], x: torch.Tensor, eps: torch.Tensor,
                 t: torch.Tensor) -> None:
        self.matcher = matcher
        self.rows = rows
        self.batch = x.shape[0]
        self.eps, self.t = eps[rows], t[rows]
        held = [b for b in range(self.batch) if b not in rows]
        target = copy.copy(matcher)  # same weights and distance; its targets and parts become the group's
        self.target = target
        self.held_distance = torch.zeros((), device=x.device)
        if held:
            grads = self._grads(x[held].detach(), eps[held], t[held], create_graph=False)
            split = len(matcher.params)
            target.targets = [g_star - g.detach() for g_star, g in zip(matcher.targets, grads[:split])]
            self.held_distance = self._per_sample(grads[split:], held).detach()
        target.parts = [p[rows] for p in matcher.parts]
        target.norms = [n[rows] for n in matcher.norms]

    def _grads(self, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, create_graph: bool
               ) -> tuple[torch.Tensor, ...]:
        m = self.matcher
        with m.time_outputs() as outputs:
            loss = m.step * diffusion_loss(m.model, x, eps, t) * (x.shape[0] / self.batch)
        return torch.autograd.grad(loss, m.params + outputs, create_graph=create_graph)

    def _per_sample(self, parts: tuple[torch.Tensor, ...], rows: list[int]) -> torch.Tensor:
        """Sum over `rows` of the per-sample distances, over the batch size (the joint loss's mean)."""
        m = self.matcher
        return sum(((d / m.step - p[rows]).pow(2).sum(1) / n[rows]).sum()
                   for d, p, n in zip(parts, m.parts, m.norms)) / self.batch

    def __call__(self, x_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed distance, per-sample distance) of the whole batch with `x_rows` in this group's slots."""
        grads = self._grads(x_rows, self.eps, self.t, create_graph=True)
        split = len(self.matcher.params)
        summed = self.target.distance_to(grads[:split])
        return summed, self._per_sample(grads[split:], self.rows) + self.held_distance


def curriculum(ctx: AttackContext, matcher: SeparatedMatcher, start: torch.Tensor, eps: torch.Tensor,
               t: torch.Tensor, iterations: int) -> Generator[Event, None, tuple[torch.Tensor, int]]:
    """Free the groups of `signal_groups` one by one from `start` (the quiet ones held at zero until their
    turn); returns (the start of the joint stage, the iterations left for it)."""
    groups = signal_groups(matcher, t)
    x = start.detach().clone().clamp(-1, 1)
    low = low_noise_rows(matcher.model, t) if DAMPED in ("low-noise", "loud") else []
    first = groups[0] if DAMPED in ("first-group", "loud") else []
    damped_slots = sorted({*low, *first}, key=lambda b: int(t[b]))
    if damped_slots:  # their start is seen through the basis (a raw start's fine noise would stay)
        x[damped_slots] = smoothed(start[damped_slots].detach()).clamp(-1, 1)
        ctx.details["damped_timesteps"] = ", ".join(str(int(t[b])) for b in damped_slots)
    for group in groups[1:]:
        x[group] = 0.0
    per_image = (1 - JOINT_SHARE) * iterations / x.shape[0]
    used = 0
    for k, rows in enumerate(groups):
        group = GroupMatcher(matcher, sorted(sum(groups[:k + 1], [])), x, eps, t)
        damped = [i for i, b in enumerate(group.rows) if b in low or (k == 0 and b in first)]
        variables, make_image, project = mixed_space(x[group.rows], damped)

        def objective(group: GroupMatcher = group, make_image: Callable[[], torch.Tensor] = make_image,
                      held: torch.Tensor = x) -> Objective:
            x_rows = make_image()
            summed, per_sample = group(x_rows)
            matching = summed + matcher.weight * per_sample
            image = held.clone()
            image[group.rows] = x_rows.detach()
            return Objective(matching, matching, {"summed": summed.detach(), "per_sample": per_sample.detach()},
                             Guess(image, None, t))

        steps = max(1, round(per_image * len(rows)))
        guess = yield from ctx.optimise(f"group {k + 1}/{len(groups)}", variables, objective, steps, ctx.config.lr,
                                        project=project)
        x = guess.image.detach().clone()
        used += steps
    return x, max(iterations - used, 1)


def applies(matcher: GradientMatcher, extra: list[torch.Tensor], t: torch.Tensor) -> bool:
    """Whether a batch takes the curriculum: a separated one-step update, eps known, more than one group."""
    training = matcher.training
    return (isinstance(matcher, SeparatedMatcher) and not extra and (training is None or training.is_one_sgd_step)
            and len(signal_groups(matcher, t)) > 1)


def batch_start(ctx: AttackContext, matcher: GradientMatcher, start: torch.Tensor, eps: torch.Tensor,
                extra: list[torch.Tensor], t: torch.Tensor, iterations: int
                ) -> Generator[Event, None, tuple[torch.Tensor, int]]:
    """The stages before the joint one for a batch: the curriculum where it applies (a separated one-step update,
    eps known, timesteps spread over more than one group, at least two iterations per group), else the per-sample
    start (`per_sample.pixel_start`)."""
    if applies(matcher, extra, t) and len(signal_groups(matcher, t)) <= (1 - JOINT_SHARE) * iterations / 2:
        return (yield from curriculum(ctx, matcher, start, eps, t, iterations))
    return (yield from pixel_start(ctx, matcher, start, eps, extra, t, iterations))


def joint_damped_rows(matcher: GradientMatcher, extra: list[torch.Tensor], t: torch.Tensor) -> tuple[int, ...]:
    """The images the joint stage after `batch_start` searches in the damped basis (`DAMPED_JOINT`)."""
    if not (DAMPED_JOINT and DAMPED in ("low-noise", "loud") and applies(matcher, extra, t)):
        return ()
    return tuple(low_noise_rows(matcher.model, t))
