"""Gradient distances: how far the update a guess would produce is from the update the server received."""

from __future__ import annotations

import torch

from .client import SharedUpdate, client_update
from .models import DiffusionModel


class GradientMatcher:
    """Distance between `client_update(guess)` and the shared update, differentiable w.r.t. the guess.

    - "l2": sum over tensors of w_l * ||g_l - g*_l||^2 (DLG, and the GIDM paper).
    - "cosine": 1 - <w g, g*> / (||w g|| ||w g*||) over the whole update (Inverting Gradients); blind to scale, so
      it suits updates whose norm was clipped.
    Layer weights: "uniform", or "normalized" (w_l = 1 / ||g*_l||^2, so that every tensor counts alike instead of
    the few with the largest gradients).
    """

    def __init__(self, model: DiffusionModel, update: SharedUpdate, distance: str = "l2",
                 layer_weights: str = "uniform") -> None:
        self.model = model
        self.distance = distance
        self.targets = [g.detach().to(model.device) for g in update.gradients]
        if layer_weights == "normalized":
            norms = [t.pow(2).sum() for t in self.targets]
            self.weights = [1.0 / n.clamp_min(1e-20) if n > 0 else torch.zeros(()) for n in norms]
        else:
            self.weights = [torch.ones(()) for _ in self.targets]
        self.weights = [w.to(model.device) for w in self.weights]
        if distance == "cosine":
            self._target_norm = torch.sqrt(sum((w * t.pow(2)).sum() for w, t in zip(self.weights, self.targets)))

    def __call__(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Distance of the update the client would send for (x0, eps, t)."""
        return self.distance_to(client_update(self.model, x0, eps, t, create_graph=True))

    def distance_to(self, grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Distance of any candidate update (e.g. one built from another parameterisation of the guess)."""
        if self.distance == "l2":
            return sum((w * (g - t_).pow(2)).sum() for w, g, t_ in zip(self.weights, grads, self.targets))
        dot = sum((w * g * t_).sum() for w, g, t_ in zip(self.weights, grads, self.targets))
        norm = torch.sqrt(sum((w * g.pow(2)).sum() for w, g in zip(self.weights, grads)))
        return 1 - dot / (norm * self._target_norm).clamp_min(1e-20)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels: small for natural images, large for noise."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
