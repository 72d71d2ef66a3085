"""Matching a batch with per-sample targets: each image against its own separated parts (`separation.py`).

The batch's summed update couples its B images into one badly conditioned problem (L-BFGS on the eight held-out
faces of faces32 stalls near 11 dB). The per-sample parts d_b of the time-conditioned layers depend on image b
alone (GroupNorm and attention act per sample), so matching them is B independent small problems: the attack first
fits every image to its own parts (the per-sample start), then matches the summed update with the per-sample terms
kept beside it (the joint stage). Sample b's d_b(x) on a guess is the gradient of the guess's loss w.r.t. that
layer's output row b (a forward hook), so both come out of the one backward pass the summed update needs. A
delta of several local steps is re-simulated; its parts are read off that delta through the least-squares map
that split the target (`Separation.solvers`), so they cost nothing beyond the re-simulation.

What it buys is measured in docs/batches.md: the parts are few (864 numbers per image on faces32 against 3072
pixels), so the start alone does not find the images, and the gain over the summed update is small. Where the
timesteps spread (the usual case), `curriculum.py` replaces the per-sample start and gains more.

Each slot b keeps the client's timestep t_b, so the reconstruction in slot b is sample b's: the t's fix the
pairing, with no assignment step.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager, contextmanager

import torch

from ..client import SharedUpdate
from ..config import DefenceConfig
from ..diffusion import diffusion_loss
from ..models import DiffusionModel
from .base import AttackContext
from .events import Event, Guess, Objective
from .matching import GradientMatcher
from .separation import Separation, separate
from .spectral import low_noise

# Weight of the per-sample terms beside the summed update's normalised L2 in the joint stage (on faces32 at B = 8,
# 1 and 10 gave the same PSNR in the first measurement, shared/NOTES.md).
PER_SAMPLE_WEIGHT = 1.0
# Share of the pixel iterations spent on the per-sample start before the joint stage (methods with no latent phase).
START_SHARE = 0.3


@contextmanager
def _outputs_of(modules: list[torch.nn.Module]) -> Iterator[list[torch.Tensor | None]]:
    """The outputs of `modules` during the forward passes run inside the block, one slot per module."""
    outputs: list[torch.Tensor | None] = [None] * len(modules)
    handles = []
    for i, module in enumerate(modules):
        def hook(_module, _args, output, i=i):
            outputs[i] = output
        handles.append(module.register_forward_hook(hook))
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class SeparatedMatcher(GradientMatcher):
    """The summed update's distance plus `weight` times the per-sample distance: for each sample b and each
    separated layer, ||d_b(x) - d_b*||^2 / ||d_b*||^2, averaged over the batch and summed over the layers."""

    def __init__(self, model: DiffusionModel, update: SharedUpdate, separation: Separation, distance: str,
                 layer_weights: str, defence: DefenceConfig | None, weight: float = PER_SAMPLE_WEIGHT,
                 slots: torch.Tensor | None = None) -> None:
        super().__init__(model, update, distance, layer_weights, defence)
        self.modules = [model.unet.get_submodule(name) for name in separation.names]
        self.parts = separation.parts
        self.norms = [p.pow(2).sum(1).clamp_min(1e-30) for p in self.parts]
        # Each part's weight in the per-sample mean (`slot_weights`): all 1 but for a single image's low-noise steps.
        count = self.parts[0].shape[0]
        self.slots = (torch.ones(count) if slots is None else slots).to(model.device)
        self.weight = weight
        self.params = list(model.unet.parameters())
        # One SGD step shares -lr times the gradient (the parts were divided by it at separation).
        self.step = 1.0 if self.training is None else -self.training.lr
        # Several steps: a guess's parts are its re-simulated delta through the target's own least-squares map.
        self.entries, self.solvers = separation.entries, separation.solvers
        # Several images make B independent problems worth a start on their parts alone; one image split by its
        # steps is one problem, whose parts only rebalance the steps beside the summed update.
        self.apart = update.batch_size > 1
        self.last: dict[str, torch.Tensor] = {}  # the terms of the latest call, for the loss history

    def time_outputs(self) -> AbstractContextManager[list[torch.Tensor | None]]:
        """Inside it, forward passes record the separated layers' outputs (whose gradients are the d_b(x))."""
        return _outputs_of(self.modules)

    def parts_of(self, update: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """The per-sample (or per-slot) parts of an update of the shared update's kind, e.g. a guess's re-simulated
        delta, through the map that split the target: exact where the update has the target's structure, and no
        pass beyond the re-simulation (a separate pass over the slots at the start weights cost ~30 % more per
        evaluation on faces32 at E = 4)."""
        return [solver @ torch.cat([update[weight], update[bias][:, None]], 1).T
                for solver, (weight, bias) in zip(self.solvers, self.entries)]

    def steps_terms(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, create_graph: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed distance, per-sample distance) of the guess's re-simulated local steps."""
        delta = self.simulate(x0, eps, t, create_graph)
        summed, per_sample = self.distance_to(delta), self.per_sample_distance(self.parts_of(delta))
        self.last = {"summed": summed.detach(), "per_sample": per_sample.detach()}
        return summed, per_sample

    def per_sample_distance(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return sum(((d - target).pow(2).sum(1) / norm * self.slots).mean()
                   for d, target, norm in zip(parts, self.parts, self.norms))

    def joint_distance(self, loss: torch.Tensor, outputs: list[torch.Tensor], create_graph: bool = True
                       ) -> torch.Tensor:
        """Distance of the update whose FedSGD-style gradient is that of `loss` (already times the step), taken
        with `outputs` recorded by `time_outputs`."""
        summed, per_sample = self.terms(loss, outputs, create_graph)
        return summed + self.weight * per_sample

    def terms(self, loss: torch.Tensor, outputs: list[torch.Tensor], create_graph: bool = True,
              descend_summed: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed distance, per-sample distance) of `loss`'s update; without `descend_summed` the summed one is
        a detached score (the per-sample start descends the per-sample term alone)."""
        grads = torch.autograd.grad(loss, self.params + outputs, create_graph=create_graph)
        split = len(self.params)
        summed_grads = grads[:split] if descend_summed else tuple(g.detach() for g in grads[:split])
        summed = self.distance_to(summed_grads)
        per_sample = self.per_sample_distance([g / self.step for g in grads[split:]])
        self.last = {"summed": summed.detach(), "per_sample": per_sample.detach()}
        return summed, per_sample

    def __call__(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, create_graph: bool = True
                 ) -> torch.Tensor:
        training = self.training
        if training is not None and not training.is_one_sgd_step:
            summed, per_sample = self.steps_terms(x0, eps, t, create_graph)
            return summed + self.weight * per_sample
        with self.time_outputs() as outputs:
            loss = self.step * diffusion_loss(self.model, x0, eps, t)
        return self.joint_distance(loss, outputs, create_graph)


def start_objective(matcher: SeparatedMatcher, make_image: Callable[[], torch.Tensor], eps: torch.Tensor,
                    t: torch.Tensor, secret_eps: bool) -> Callable[[], Objective]:
    """Descend the per-sample distance alone (B independent problems), but rank guesses by the joint matching
    loss, as every other phase does, so that the run's answer is chosen on one scale."""

    def objective() -> Objective:
        image = make_image()
        if matcher.training is not None and not matcher.training.is_one_sgd_step:
            summed, per_sample = matcher.steps_terms(image, eps, t)
        else:
            with matcher.time_outputs() as outputs:
                loss = matcher.step * diffusion_loss(matcher.model, image, eps, t)
            summed, per_sample = matcher.terms(loss, outputs, descend_summed=False)
        terms = {"summed": summed.detach(), "per_sample": per_sample.detach()}
        return Objective(per_sample, terms["summed"] + matcher.weight * terms["per_sample"], terms,
                         Guess(image, eps if secret_eps else None, t))

    return objective


def separated_matcher(ctx: AttackContext, matcher: GradientMatcher, t: torch.Tensor
                      ) -> Generator[Event, None, GradientMatcher]:
    """`matcher` with per-sample terms when the batch separates (`config.separation` "auto"), else `matcher`
    itself; either way one event says what happened, and the context's `details` keep the residual."""
    cfg = ctx.config
    if ctx.update.secrets < 2:
        return matcher
    if cfg.separation == "off":
        ctx.details["separation"] = "off"
        yield ctx.event("phase", "separation", {}, torch.zeros(ctx.shape), "separation off: matching the "
                        "batch's summed update only")
        return matcher
    result = separate(ctx.model, ctx.update, t, ctx.threat)
    ctx.details["separation"] = "separated" if result.ok else "not separated"
    if result.residual == result.residual:  # a fit was made (not NaN)
        ctx.details["separation_residual"] = result.residual
    yield ctx.event("phase", "separation", {}, torch.zeros(ctx.shape), result.message)
    if not result.ok:
        return matcher
    return SeparatedMatcher(ctx.model, ctx.update, result, cfg.distance, cfg.layer_weights, ctx.threat.defence,
                            PER_SAMPLE_WEIGHT, slot_weights(ctx.model, ctx.update, t))


def slot_weights(model: DiffusionModel, update: SharedUpdate, t: torch.Tensor) -> torch.Tensor:
    """The parts' weights in the per-sample distance (mean 1), from the public schedule alone. One image over
    several SGD steps: a low-noise step's part (t < ~20, `spectral.low_noise`) gets none, the others share its
    weight. Its gradient already dominates the delta (5x a t = 332 step's on faces32) and is the hard, rugged
    target; the parts are there to give the other steps their say. Measured (faces32, face-05, E = 4 fresh, t 332,
    68, 904, 5, 120 CPU-s): docs/realistic_clients.md. Anything else: all 1."""
    ones = torch.ones(len(t))
    training = update.training
    if training is None or training.is_one_sgd_step or update.batch_size > 1:
        return ones
    keep = ~low_noise(model, t.cpu())
    if keep.all() or not keep.any():
        return ones
    return keep.float() * len(t) / keep.sum()


def pixel_start(ctx: AttackContext, matcher: GradientMatcher, start: torch.Tensor, eps: torch.Tensor,
                extra: list[torch.Tensor], t: torch.Tensor, iterations: int
                ) -> Generator[Event, None, tuple[torch.Tensor, int]]:
    """With a separated batch, spend `START_SHARE` of the pixel iterations fitting each image to its own parts
    from `start`; returns (the start of the joint stage, the iterations left for it)."""
    steps = round(START_SHARE * iterations)
    if not isinstance(matcher, SeparatedMatcher) or not matcher.apart or steps < 1 or iterations - steps < 1:
        return start, iterations
    x = start.detach().clone().clamp(-1, 1).requires_grad_(True)
    objective = start_objective(matcher, lambda: x, eps, t, secret_eps=bool(extra))
    guess = yield from ctx.optimise("per-sample", [x, *extra], objective, steps, ctx.config.lr,
                                    project=lambda: x.clamp_(-1, 1))
    if guess.eps is not None:
        with torch.no_grad():
            eps.copy_(guess.eps)
    return guess.image, iterations - steps
