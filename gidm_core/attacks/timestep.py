"""Recovering the client's private timesteps from the update itself.

The first linear layer of the time embedding sees the sinusoidal embedding e(t_b) of each sample's timestep, so its
weight gradient is sum_b u_b e(t_b)^T: every row lies in the span of the batch's embeddings. The top right singular
vectors of that gradient span the same space, and the true timesteps are the candidates whose embeddings lie in it
(zero residual, up to float error). No optimisation, no guess. A FedAvg delta is -lr times a sum of such gradients,
one per local step, so its rows lie in the span of every step's embeddings: with fresh noise the delta shows all
E x B timesteps the client drew, as a set (which step used which is not in this layer), as long as E x B stays
below the embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..client import SharedUpdate
from ..models import DiffusionModel

LAYER = "time_embedding.linear_1.weight"
# A candidate whose embedding leaves more than this fraction outside the gradient's row space is not trusted
# (exact recoveries measure ~1e-6; Gaussian noise defences push the true t's residual up).
CONFIDENT_RESIDUAL = 0.05


@dataclass(frozen=True)
class TimestepEstimate:
    t: torch.Tensor  # (B,) long
    residuals: torch.Tensor  # residual of every candidate t, for plots
    rank: int  # distinct timesteps the gradient shows
    confident: bool

    def describe(self) -> str:
        picked = self.residuals[self.t].max().item()
        return (f"t = {self.t.tolist()} from the time-embedding gradient (rank {self.rank}, worst residual "
                f"{picked:.1e}{'' if self.confident else ', not confident'})")


def recover_timesteps(model: DiffusionModel, update: SharedUpdate) -> TimestepEstimate | None:
    """The timesteps of every secret (one per image, or E x B with fresh noise) from the update, or None if the
    model has no time-embedding layer to read."""
    names = [name for name, _ in model.unet.named_parameters()]
    if LAYER not in names or not hasattr(model.unet, "time_proj"):
        return None
    grad = update.gradients[names.index(LAYER)].detach().double().cpu()
    if not torch.isfinite(grad).all() or grad.abs().max() == 0:
        return None
    batch = update.secrets
    singular = torch.linalg.svdvals(grad)
    rank = max(1, min(batch, int((singular > singular[0] * 1e-4).sum())))
    basis = torch.linalg.svd(grad, full_matrices=False).Vh[:rank]  # (rank, dim)
    with torch.no_grad():
        candidates = model.unet.time_proj(torch.arange(model.num_train_timesteps)).double().cpu()
    candidates = candidates / candidates.norm(dim=1, keepdim=True)
    residuals = (candidates - (candidates @ basis.T) @ basis).norm(dim=1)
    t = _pick(residuals, rank, batch)
    confident = bool(residuals[t].max() < CONFIDENT_RESIDUAL)
    return TimestepEstimate(t, residuals.float(), rank, confident)


def _pick(residuals: torch.Tensor, rank: int, batch: int) -> torch.Tensor:
    """The `rank` best local minima of the residual curve; repeated cyclically when the batch shares timesteps
    (the layer shows which timesteps occur, not how often)."""
    left = torch.cat([torch.tensor([float("inf")], dtype=residuals.dtype), residuals[:-1]])
    right = torch.cat([residuals[1:], torch.tensor([float("inf")], dtype=residuals.dtype)])
    minima = torch.nonzero((residuals <= left) & (residuals <= right)).flatten()
    order = minima[torch.argsort(residuals[minima])][:rank]
    picked = order.repeat((batch + len(order) - 1) // len(order))[:batch]
    return picked.sort().values.long()
