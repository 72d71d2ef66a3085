"""A cheaper re-simulation of an SGD client's local steps, for the first stretch of the pixel phase.

An SGD client with a small learning rate barely moves its weights over its E local steps, so its delta is close to
-lr times the sum of every step's gradient taken at the broadcast weights: one batched forward and backward pass over
all E x B slots instead of E sequential ones, each differentiated through the weights the steps before it produced.
On faces32 (E = 4, fresh noise, lr 1e-3) that costs 0.38-0.42 CPU-s per matching evaluation against 0.71-0.75 for
the exact re-simulation, and is 0.94 % off the true delta at the truth (normalised matching loss 1.2e-3 there, a
level the exact search reaches only past ~40 dB). So the pixel phase searches this surrogate first and hands its
best guess to a last, exact stage, whose matching loss alone picks the answer (docs/realistic_clients.md).

Only where the steps are separable: plain SGD (its coupled weight decay taken at the broadcast weights too), with no
clipping inside a step (it needs each step's own gradient norm) and no dropout (its masks are drawn per step); and
only where the weights do barely move: the attacker measures the surrogate against the exact re-simulation at its
own starting guess (public information only) and keeps the exact one beyond `LINEARISED_TOLERANCE`. A client lr of
0.1 on the tiny test UNet puts the surrogate ~50 % off, and a search on it lands far from the image.
"""

from __future__ import annotations

import torch

from ..client import LocalSchedule, client_update, relative_distance
from ..config import LocalTraining
from ..diffusion import diffusion_loss
from ..models import DiffusionModel

# Share of the pixel phase spent on the surrogate before the exact stage (0.9 beat 0.75 on faces32, E = 4: face-05
# 40.9 against 36.5 dB, face-17 18.3 against 16.8 at 120 CPU-s; the surrogate's bias sits far below both).
LINEARISED_SHARE = 0.9
# Largest relative L2 error of the surrogate at the starting guess for which it is used (faces32, lr 1e-3: ~0.01).
LINEARISED_TOLERANCE = 0.03


def linearisable(training: LocalTraining | None) -> bool:
    """Whether `linearised_delta` approximates this client's delta: several plain SGD steps, unclipped, no dropout."""
    return (training is not None and training.steps > 1 and training.optimizer == "sgd" and training.clip == 0
            and training.dropout == 0)


def linearised_delta(model: DiffusionModel, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                     training: LocalTraining, schedule: LocalSchedule | None, create_graph: bool = True
                     ) -> tuple[torch.Tensor, ...]:
    """-lr times the sum over the E steps of each step's gradient (plus coupled weight decay) at the broadcast
    weights, all steps' slots in one batch; every step trains on the same number of slots, so the sum of the steps'
    mean losses is E times the mean over the whole batch."""
    schedule = schedule or LocalSchedule.public(training, x0.shape[0])
    inputs = [schedule.inputs(step, x0, eps, t) for step in range(training.steps)]
    images, noise, steps_t = (torch.cat(parts) for parts in zip(*inputs))
    loss = training.steps * diffusion_loss(model, images, noise, steps_t)
    params = list(model.unet.parameters())
    grads = torch.autograd.grad(loss, params, create_graph=create_graph)
    decay = training.steps * training.weight_decay
    return tuple(-training.lr * (g + decay * p.detach()) if decay else -training.lr * g for g, p in zip(grads, params))


def linearisation_error(model: DiffusionModel, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                        training: LocalTraining, schedule: LocalSchedule | None) -> float:
    """Relative L2 distance between the surrogate and the exact delta for a guess (one evaluation of each, no graph
    kept): how far the client's weights move over its steps, which the guess hardly changes."""
    x0, eps = x0.detach(), eps.detach()
    exact = client_update(model, x0, eps, t, False, training, schedule)
    return relative_distance(linearised_delta(model, x0, eps, t, training, schedule, False), exact)
