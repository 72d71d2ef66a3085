"""Tensors in [-1, 1] as the pictures the UI shows: enlarged without blurring, so a 32 px face stays readable."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from gidm_core.evaluation import pairing_by_t
from gidm_core.images import grid
from gidm_core.metrics import pair_images, to_unit

DISPLAY_PX = 224  # each image is enlarged to about this many pixels per side, nearest-neighbour


def enlarge(image: Image.Image, target: int = DISPLAY_PX) -> Image.Image:
    """`image` scaled up by a whole factor to about `target` pixels per side (nearest-neighbour: no invented detail)."""
    scale = max(1, round(target / max(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def show(batch: torch.Tensor, columns: int | None = None) -> Image.Image:
    """A batch (B, C, H, W) as one enlarged grid (one row, unless `columns` says how many a row)."""
    return enlarge(grid(batch, columns), DISPLAY_PX * min(columns or batch.shape[0], 4))


def difference(recon: torch.Tensor, truth: torch.Tensor) -> Image.Image:
    """|reconstruction - original| per pixel, averaged over channels and amplified 4x, as a grey map."""
    diff = ((recon - truth).abs().mean(1, keepdim=True) * 2).clamp(0, 2) - 1  # [0, 1] error -> [-1, 1] display
    return show(diff.expand(-1, 3, -1, -1))


def pairing(recon: torch.Tensor, truth: torch.Tensor, t_estimate: Sequence[int] | None = None,
            t_true: Sequence[int] | None = None) -> tuple[torch.Tensor, bool]:
    """For each original, the slot holding its reconstruction, and whether the timesteps gave it: the attack's own
    pairing where its slots' timesteps tell the samples apart (slot b was fitted at t_estimate[b]), else the
    evaluator's Hungarian pairing by likeness (equal timesteps leave the slots interchangeable; fresh noise at every
    local step gives each step's slots their own t, which say nothing of the images)."""
    per_image = t_true is not None and len(t_true) == len(truth)
    by_t = pairing_by_t(t_estimate, list(t_true)) if per_image else None
    if by_t is not None:
        return torch.tensor(by_t), True
    return pair_images(to_unit(recon), to_unit(truth)), False


def paired(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The reconstructions reordered to sit beside the originals they recover, by likeness (`pairing`)."""
    return recon[pairing(recon, truth)[0]]
