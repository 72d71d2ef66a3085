"""Tensors in [-1, 1] as the pictures the UI shows: enlarged without blurring, so a 32 px face stays readable."""

from __future__ import annotations

import torch
from PIL import Image

from gidm_core.images import grid
from gidm_core.metrics import pair_images, to_unit

DISPLAY_PX = 224  # each image is enlarged to about this many pixels per side, nearest-neighbour


def enlarge(image: Image.Image, target: int = DISPLAY_PX) -> Image.Image:
    """`image` scaled up by a whole factor to about `target` pixels per side (nearest-neighbour: no invented detail)."""
    scale = max(1, round(target / max(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def show(batch: torch.Tensor) -> Image.Image:
    """A batch (B, C, H, W) as one enlarged grid."""
    return enlarge(grid(batch), DISPLAY_PX * min(batch.shape[0], 4))


def difference(recon: torch.Tensor, truth: torch.Tensor) -> Image.Image:
    """|reconstruction - original| per pixel, averaged over channels and amplified 4x, as a grey map."""
    diff = ((recon - truth).abs().mean(1, keepdim=True) * 2).clamp(0, 2) - 1  # [0, 1] error -> [-1, 1] display
    return show(diff.expand(-1, 3, -1, -1))


def paired(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The reconstructions reordered to sit beside the originals they recover (a batch comes back unordered)."""
    return recon[pair_images(to_unit(recon), to_unit(truth))]
