"""Adam-kind FedAvg deltas, turned back into what gradient matching can use.

One Adam (or AdamW) step from a fresh state sends delta = -lr * g / (|g| + eps) per entry (bias correction cancels
at step 1). Read as a sign pattern it gives plain L2 matching almost no slope. But the map is strictly monotone,
and float32 keeps 1 - |s| (s = -delta / lr) to about 1e-7 absolute while 1 - |s| = eps / (|g| + eps) is ~1e-4 for a
typical |g| ~ 1e-4: the delta holds the gradient itself, g = eps * s / (1 - |s|), to ~1e-4 relative for all but the
largest entries (measured on faces32: median relative error 7.5e-5, 99th percentile 0.5 %). So the attacker decodes
the delta into a FedSGD gradient and runs any gradient attack on it unchanged. AdamW's decoupled decay adds
-lr * weight_decay * theta, a term of the public weights alone, which is subtracted first.

The decoding error grows as g^2 (about ROUNDING * g^2 / eps: measured 9-23 x g^2 at eps 1e-8), so each entry is
weighed by its confidence 1 / (1 + (g / knee)^4), knee the |g| at which the relative error reaches KNEE_ERROR (an
inverse-variance weight: no large entry's rounding counts more than a knee entry's). Measured (faces32, face-05,
t 100, DLG, 60 CPU-s): unweighted 35.3 dB (stuck there at 120 s), weighted 38.3 dB (FedSGD's gradient: 38.5).

Several Adam steps do not decode entry by entry (each step's normalisation mixes the steps' gradients). There
the matcher re-simulates the steps with a smoothed Adam, sqrt(v_hat + tau^2) with tau^2 = SMOOTHING^2 mean(v_hat)
per tensor: entries below tau stay linear in the gradient, so the match has a slope where the exact steps are a
sign pattern. A surrogate: its minimum sits near, not at, the true image. At E = 4 on faces32 the answer's loss is
still above the truth's after 120 CPU-s (the search, not the bias, limits it), so the pixel phase anneals from above:
kappa 0.3 (smoother, better conditioned for L-BFGS) for half its budget, then 0.1 (measured: face-17 30.5 vs 29.8 dB,
astronaut 26.6 vs 20.1; annealing down to 0.01 lost: docs/adam_deltas.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..client import SharedUpdate
from ..config import DefenceConfig
from ..models import DiffusionModel
from .matching import GradientMatcher

ADAM_KINDS = ("adam", "adamw")
ROUNDING = 1.6e-7  # the decoded |g|'s error is about ROUNDING * g^2 / eps (float32 rounding of s near 1, measured)
KNEE_ERROR = 1e-2  # relative decoding error at which an entry's confidence is one half
SMOOTHING = 0.1  # kappa of the smoothed re-simulation of E > 1 Adam steps (measured: docs/adam_deltas.md)
# The pixel phase's kappa stages: (kappa / SMOOTHING, share of its iterations), each from the last stage's best guess.
ANNEALING = ((3.0, 0.5), (1.0, 0.5))


@dataclass(frozen=True)
class DecodedUpdate(SharedUpdate):
    """A FedSGD gradient read out of an Adam delta, with each entry's confidence in [0, 1] and the norm the client
    clipped its gradient to (0: none)."""

    confidence: tuple[torch.Tensor, ...] = ()
    clip: float = 0.0


def confidence(update: SharedUpdate) -> tuple[torch.Tensor, ...] | None:
    """Per-entry confidence of the update's values: only a decoded update's are uneven."""
    return update.confidence if isinstance(update, DecodedUpdate) else None


def smoothing(update: SharedUpdate) -> float:
    """The smoothing the matcher's re-simulation needs: SMOOTHING for Adam steps left undecoded, else none."""
    return SMOOTHING if is_adam_delta(update) else 0.0


def annealing(matcher: GradientMatcher) -> tuple[tuple[float, float], ...]:
    """The pixel phase's stages (kappa, share of its iterations) for this matcher: a smoothed re-simulation starts
    broader than its own kappa, where L-BFGS progresses faster, and ends at it; anything else is one stage."""
    kappa = matcher.smoothing
    return tuple((kappa * factor, share) for factor, share in ANNEALING) if kappa > 0 else ((0.0, 1.0),)


def matcher_defence(update: SharedUpdate, defence: DefenceConfig) -> DefenceConfig:
    """The defence the matcher replays on its guesses: a decoded update's gradient was clipped by the client."""
    if isinstance(update, DecodedUpdate) and update.clip > 0:
        return replace(defence, clip=update.clip)
    return defence


def is_adam_delta(update: SharedUpdate) -> bool:
    return update.training is not None and update.training.optimizer in ADAM_KINDS


def decodable(update: SharedUpdate, defence: DefenceConfig) -> bool:
    """One Adam step on all the client's images, with no dropout, whose values reached the server as computed: norm
    clipping rescales by an unknown factor and noise swamps the 1e-4 margins, so those deltas stay deltas (top-k
    pruning only zeroes entries, which decode to zero and stay masked out of the match). Dropout masks and a
    mini-batch are per-step draws a FedSGD matcher cannot replay: those deltas stay deltas too."""
    training = update.training
    return (is_adam_delta(update) and training.steps == 1 and training.dropout == 0
            and training.batch_size(update.batch_size) == update.batch_size
            and defence.clip == 0 and defence.sigma == 0)


def readable(model: DiffusionModel, update: SharedUpdate, defence: DefenceConfig) -> SharedUpdate:
    """The update in the form the attacks match best: a decodable Adam delta as its gradient, else as sent."""
    return decode_one_step(model, update) if decodable(update, defence) else update


def decode_one_step(model: DiffusionModel, update: SharedUpdate) -> DecodedUpdate:
    """The FedSGD update equivalent to a one-step Adam(W) delta: the gradient estimate g = eps s / (1 - |s|).
    An entry that rounded to |s| = 1 (|g| above ~0.1; none on the bundled models) has lost its magnitude: it is
    left out of the match (confidence 0), as are pruned entries (delta 0). Weight decay is a term of the public
    weights: AdamW's is taken off the delta, Adam's (coupled, inside the gradient) off the decoded gradient. The
    client's clipping inside the step scales the gradient it normalised: the matcher clips its guesses alike."""
    training = update.training
    lr, wd, eps = training.lr, training.weight_decay, training.adam_eps
    decoupled = wd if training.optimizer == "adamw" else 0.0
    knee = KNEE_ERROR * eps / ROUNDING
    gradients, weights = [], []
    for delta, theta in zip(update.gradients, model.unet.parameters()):
        theta = theta.detach().double()
        s = -(delta.double() + lr * decoupled * theta) / lr
        margin = 1 - s.abs()
        known = (margin > 0) & (delta != 0)
        g = torch.where(known, eps * s / margin.clamp_min(1e-300), 0.0)
        weights.append(torch.where(known, 1 / (1 + (g / knee).square().square()), 0.0).to(delta.dtype))
        if wd and not decoupled:
            g = torch.where(known, g - wd * theta, 0.0)
        gradients.append(g.to(delta.dtype))
    fields = {name: getattr(update, name) for name in ("batch_size", "image_shape", "eps", "t")}
    return DecodedUpdate(tuple(gradients), **fields, training=None, confidence=tuple(weights), clip=training.clip)
