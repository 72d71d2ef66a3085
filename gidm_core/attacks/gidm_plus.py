"""GIDM+: the client keeps eps and t private; recover the image, eps and t together.

1. t is read off the update exactly (`timestep.py`), or searched by matching loss where it cannot be.
2. **Joint stage**: GIDM's own phases with eps as a variable beside the image (the prior's DDIM latent when
   `latent_iterations` > 0, then pixels and eps together), per-layer normalised L2. This is what finds the basin:
   the image converges first, eps follows.
3. **Residual stage**: from the joint stage's best guess, the search moves to (x_t, r), the UNet's noisy input and
   the residual r = target - prediction. The shared gradient is g = c J(x_t)^T r (c = -2/N, J the Jacobian of the
   UNet output w.r.t. the weights), linear in r for a fixed x_t, and (x_t, r) maps back to (x0, eps) exactly for
   every prediction type (`diffusion.split_target`). Near the answer this parameterisation converges fast where the
   (x0, eps) one crawls. r is searched as r = r_scale * u, with r_scale following the noise schedule
   (0.35 sqrt(abar_t / (1 - abar_t)), clipped to [0.03, 3]): a trained model's residual is small where abar_t is
   large.

Measured on the trained faces32 (face-17, client seed 0, t = 100, honest seeds): the joint stage alone reaches
37.5 dB (eps error 0.65) in 1000 evaluations; 300 residual evaluations from there reach 70.4 dB (eps error 0.018),
while 300 more joint ones reach 42.2 dB (0.42). The residual stage alone, from noise, stalls near 15 dB: started
far from the answer, the (x_t, r) landscape is bilinear and full of poor stationary points.
Started from the latent phase's answer instead, it converges 3-4x faster than the joint stage (face-05, client
seed 0: 37.0 dB after 150 residual evaluations, where the joint stage took 450 to reach 34 dB), so the joint stage
keeps only `1 - residual_share` = 10 % of the pixel budget: at 120 CPU-s that turned two of four near misses at
t = 100 into 67-81 dB passes (docs/starts.md).

FedAvg updates: the residual stage writes the FedSGD gradient as c J(x_t)^T r, which one SGD step maps exactly
(delta = -lr g), so it runs on FedSGD and one-step FedAvg updates. A delta after E > 1 steps is not linear in r at
any fixed x_t (each step moves the weights J is taken at), so there GIDM+ skips the residual stage and spends all
its iterations on the joint stage, which re-simulates the client's steps through the matcher.

Where it stops working: x0 = (x_t - sqrt(1-abar) eps)/sqrt(abar) amplifies any error in x_t and eps by
sqrt(1-abar_t)/sqrt(abar_t) (about 1 at t=250, 3.4 at t=500, 17 at t=750, 97 at t=950 for the linear DDPM
schedule); docs/gidm_plus.md has the measured table.
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import nullcontext

import torch

from ..diffusion import q_sample, split_target, training_target
from ..models import DiffusionModel
from .base import AttackContext
from .events import Event, Guess, Objective
from .gidm import image_phases
from .matching import GradientMatcher
from .per_sample import SeparatedMatcher, separated_matcher
from .pixel import matcher_for
from .secrets import noise_variable, resolve_timesteps

R_SCALE_FACTOR = 0.35
R_SCALE_RANGE = (0.03, 3.0)


def residual_scale(model: DiffusionModel, t: torch.Tensor) -> float:
    """How far r moves against x_t in the search: the trained model's residual shrinks where abar_t is large."""
    abar = model.scheduler.alphas_cumprod.to(torch.float64)[t.long().cpu()]
    return float((R_SCALE_FACTOR * (abar / (1 - abar)).sqrt()).mean().clamp(*R_SCALE_RANGE))


def gidm_plus_attack(ctx: AttackContext) -> Generator[Event, None, None]:
    cfg = ctx.config
    matcher = matcher_for(ctx)
    t = yield from resolve_timesteps(ctx, matcher)
    matcher = yield from separated_matcher(ctx, matcher, t)
    eps, extra = noise_variable(ctx)
    training = ctx.update.training
    # A revealed eps leaves nothing for the residual stage; several local steps, or Adam's elementwise
    # normalisation, leave it no linear model.
    residual = cfg.residual_iterations if extra and (training is None or training.is_one_sgd_step) else 0
    guess = yield from image_phases(ctx, matcher, eps, extra, t, cfg.pixel_iterations - residual)
    if residual > 0:
        yield from residual_phase(ctx, matcher, guess, t, residual)


def residual_phase(ctx: AttackContext, matcher: GradientMatcher, start: Guess, t: torch.Tensor,
                   iterations: int) -> Generator[Event, None, Guess]:
    """Search (x_t, r) from `start`'s image and eps, against the same matcher (so losses rank across stages)."""
    model = ctx.model
    params = list(model.unet.parameters())
    scale = -2.0 / float(torch.tensor(ctx.shape).prod())
    if ctx.update.training is not None:  # one SGD step: the delta is -lr times the gradient
        scale *= -ctx.update.training.lr
    r_scale = residual_scale(model, t)
    with torch.no_grad():
        x_t = q_sample(model, start.image, start.eps, t)
        u = (training_target(model, start.image, start.eps, t) - model.unet(x_t, t).sample) / r_scale
    x_t.requires_grad_(True)
    u.requires_grad_(True)

    separated = isinstance(matcher, SeparatedMatcher)

    def objective() -> Objective:
        with matcher.time_outputs() if separated else nullcontext([]) as outputs:
            prediction = model.unet(x_t, t).sample
        r = r_scale * u
        surrogate = scale * (r * prediction).sum()  # its gradient is the update itself
        if separated:
            matching = matcher.joint_distance(surrogate, outputs)
        else:
            matching = matcher.distance_to(torch.autograd.grad(surrogate, params, create_graph=True))
        x0, eps = split_target(model, x_t.detach(), (r + prediction).detach(), t)
        return Objective(matching, matching, {}, Guess(x0, eps, t))

    return (yield from ctx.optimise("residual", [x_t, u], objective, iterations, ctx.config.lr))
