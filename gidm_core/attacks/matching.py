"""Gradient distances: how far the update a guess would produce is from the update the server received."""

from __future__ import annotations

import torch

from ..client import SharedUpdate, client_update
from ..config import DefenceConfig
from ..models import DiffusionModel
from .linearised import linearised_delta

# "normalized" weights are 1 / max(||g*_l||^2, WEIGHT_FLOOR * max_l ||g*_l||^2): no tensor counts more than 100x
# the largest. Measured with L-BFGS: floors of 1e-8 / 1e-4 / 1e-2 gave DLG on a random-init tiny UNet 21.7 / 28.0 /
# 42.1 dB (150 iterations), while GIDM on the trained faces32 reached 109 dB (exact) with 1e-2.
WEIGHT_FLOOR = 1e-2


class GradientMatcher:
    """Distance between `client_update(guess)` and the shared update, differentiable w.r.t. the guess. The guess's
    update is of the shared update's kind: for a FedAvg delta the client's E local steps are re-simulated on it, each
    on the images, eps, t and dropout masks of the update's `schedule` (what the threat model revealed of the
    client's per-step draws, the rest assumed). The guess is all N local images; eps and t have one entry per
    secret the client drew (one per image, or with fresh noise one per slot of every step).

    - "l2": sum over tensors of w_l * ||g_l - g*_l||^2 (DLG, and the GIDM paper).
    - "cosine": 1 - <w g, g*> / (||w g|| ||w g*||) over the whole update (Inverting Gradients); blind to scale, so
      it suits updates whose norm was clipped.
    Layer weights: "uniform", or "normalized" (w_l = 1 / ||g*_l||^2, so that every tensor counts alike instead of
    the few with the largest gradients; floored so that small, noisy tensors do not dominate the distance).

    The defence is public (Kerckhoffs): the server clips its candidate updates to the same norm as the client did,
    and compares only the entries that top-k pruning left, rather than fighting a transform it knows.

    `confidence` (one tensor per parameter, in [0, 1]) weighs each entry of the target by how exactly it is known,
    as for a gradient decoded from an Adam delta (`attacks/adam_delta.py`); both sides are scaled by its root, so
    every distance and layer weighting applies unchanged. `smoothing` > 0 replays an Adam client with that smoothed
    denominator (`client.LocalOptimizer`), so a multi-step Adam delta has a slope to follow.
    """

    def __init__(self, model: DiffusionModel, update: SharedUpdate, distance: str = "l2",
                 layer_weights: str = "uniform", defence: DefenceConfig | None = None,
                 confidence: tuple[torch.Tensor, ...] | None = None, smoothing: float = 0.0) -> None:
        self.model = model
        self.distance = distance
        self.training = update.training
        self.schedule = update.schedule
        self.smoothing = smoothing  # kappa of the re-simulated Adam's smoothed denominator (attacks/adam_delta.py)
        self.linearised = False  # re-simulate an SGD client's steps at the broadcast weights (attacks/linearised.py)
        self.scales = None if confidence is None else [c.detach().to(model.device).sqrt() for c in confidence]
        self.targets = [g.detach().to(model.device) for g in update.gradients]
        if self.scales is not None:
            self.targets = [g * c for g, c in zip(self.targets, self.scales)]
        self.clip = defence.clip if defence is not None else 0.0
        self.masks = ([(t != 0).to(t.dtype) for t in self.targets]
                      if defence is not None and defence.keep < 1 else None)
        if layer_weights == "normalized":
            norms = torch.stack([t.pow(2).sum() for t in self.targets])
            floor = norms.max().clamp_min(1e-30) * WEIGHT_FLOOR
            self.weights = list(1.0 / norms.clamp_min(floor))
        else:
            self.weights = [torch.ones(()) for _ in self.targets]
        self.weights = [w.to(model.device) for w in self.weights]
        if distance == "cosine":
            self._target_norm = torch.sqrt(sum((w * t.pow(2)).sum() for w, t in zip(self.weights, self.targets)))

    def __call__(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
        """Distance of the update the client would send for (x0, eps, t); `create_graph=False` only scores it."""
        return self.distance_to(self.simulate(x0, eps, t, create_graph))

    def simulate(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, create_graph: bool = True
                 ) -> tuple[torch.Tensor, ...]:
        """The update the client would send for (x0, eps, t), or the matcher's surrogate of it when one is on."""
        if self.linearised:
            return linearised_delta(self.model, x0, eps, t, self.training, self.schedule, create_graph)
        return client_update(self.model, x0, eps, t, create_graph, self.training, self.schedule, self.smoothing)

    def distance_to(self, grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Distance of any candidate update (e.g. one built from another parameterisation of the guess)."""
        if self.clip > 0:
            norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
            scale = (self.clip / norm.clamp_min(1e-30)).clamp(max=1.0)
            grads = tuple(g * scale for g in grads)
        if self.masks is not None:
            grads = tuple(g * m for g, m in zip(grads, self.masks))
        if self.scales is not None:
            grads = tuple(g * c for g, c in zip(grads, self.scales))
        if self.distance == "l2":
            return sum((w * (g - t_).pow(2)).sum() for w, g, t_ in zip(self.weights, grads, self.targets))
        dot = sum((w * g * t_).sum() for w, g, t_ in zip(self.weights, grads, self.targets))
        norm = torch.sqrt(sum((w * g.pow(2)).sum() for w, g in zip(self.weights, grads)))
        return 1 - dot / (norm * self._target_norm).clamp_min(1e-20)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels: small for natural images, large for noise."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
