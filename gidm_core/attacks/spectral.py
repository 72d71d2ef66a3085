"""Pixels in a damped Fourier basis: the preconditioner a low-noise step needs.

A step at small t (the UNet sees x_t = ~x0 + sigma_t eps with sigma_t ~ 0.02 at t = 5 on a linear schedule)
predicts eps from the image's finest detail, so its gradient moves ~1 / sigma_t times faster along high spatial
frequencies of the image than along low ones; in an SGD delta, being the largest of the steps (on faces32 5x a
t = 332 step's norm), it sets the delta's curvature. L-BFGS from a few hundred evaluations cannot learn a
3072-dimensional spectrum, so the pixel phase searches coefficients z with x = irfft2(w * z),
w(f) = 1 / (1 + f / CORNER)^POWER (f in cycles per image): the same images, with the steep directions' steps shrunk.
Measured on faces32: an SGD delta (face-05, E = 4 fresh, t 332, 68, 904, 5; docs/realistic_clients.md) and one
image's FedSGD gradient at t = 10 (docs/small_t.md). Adam deltas (each step moves every entry by ~lr, whatever its
curvature) and updates without a low-noise step are left as they are. A FedSGD batch's curriculum (`curriculum.py`)
searches its loud group and its low-noise images in the basis (`mixed_space`), from a start seen through it
(`smoothed`): docs/batches.md.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..client import SharedUpdate
from ..models import DiffusionModel

LOW_NOISE = 0.1  # sqrt(1 - alpha_bar_t) below which a step counts as low-noise (t < ~20 on a linear schedule)
CORNER = 2.0  # cycles per image at which a coefficient's step is halved
POWER = 1.0
# The pixel phase's stages on such a delta: (corner, share of its iterations), 0 = raw pixels. One damped stage:
# ending in raw pixels (0.6 / 0.4) was measured worse, 25.8 vs 27.6 dB (docs/realistic_clients.md).
COARSE_TO_FINE = ((CORNER, 1.0),)


def coarse_to_fine() -> tuple[tuple[float, float], ...]:
    return COARSE_TO_FINE


def damped(model: DiffusionModel, update: SharedUpdate, t: torch.Tensor, prior_start: bool) -> bool:
    """Whether the pixel phase should search the damped basis: an SGD delta with at least one low-noise step, or one
    image's FedSGD gradient at a low-noise t when the phase starts from the prior's image (`prior_start`). From
    noise the basis is slow to clear the start's fine grain: DLG at t = 10 lost 1.9 dB at 15 CPU-s (n = 8) for
    +1.7 dB at 60 CPU-s (one run), against GIDM's +7 to +11 dB at 60 CPU-s (docs/small_t.md)."""
    training = update.training
    if training is not None and training.optimizer != "sgd":
        return False
    if training is None and (update.secrets > 1 or not prior_start):
        return False
    return bool(low_noise(model, t).any())


def low_noise(model: DiffusionModel, t: torch.Tensor) -> torch.Tensor:
    """Which of the timesteps `t` see the image under little noise (sqrt(1 - alpha_bar_t) < LOW_NOISE)."""
    alpha_bar = model.scheduler.alphas_cumprod.to(t.device)[t.long()]
    return (1 - alpha_bar).sqrt() < LOW_NOISE


class SpectralPixels:
    """The map between images (N, C, H, W) and their damped Fourier coefficients (real view, float)."""

    def __init__(self, height: int, width: int, device: torch.device, corner: float = CORNER,
                 norm: str = "backward") -> None:
        fy = torch.fft.fftfreq(height).abs().view(-1, 1) * height
        fx = torch.fft.rfftfreq(width).view(1, -1) * width
        self.weight = (1 / (1 + (fy**2 + fx**2).sqrt() / corner) ** POWER).to(device)
        self.size = (height, width)
        self.norm = norm  # "ortho": a coefficient step moves the image as far as a pixel step (at weight 1)

    def image(self, z: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.view_as_complex(z) * self.weight, s=self.size, norm=self.norm)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(torch.fft.rfft2(x, norm=self.norm) / self.weight).contiguous()


def smoothed(x: torch.Tensor, corner: float = CORNER) -> torch.Tensor:
    """`x` seen through the damped basis: each spatial frequency scaled by its weight (a start for a damped search,
    whose fine detail it would otherwise shed only slowly)."""
    return SpectralPixels(*x.shape[-2:], x.device, corner).image(torch.view_as_real(torch.fft.rfft2(x)).contiguous())


def low_noise_rows(model: DiffusionModel, t: torch.Tensor) -> list[int]:
    """The batch slots whose step is low-noise (`low_noise`)."""
    return low_noise(model, t).nonzero().flatten().tolist()


def mixed_space(image: torch.Tensor, rows: list[int], corner: float = CORNER
                ) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor], Callable[[], None]]:
    """(variables, the image they make, their projection onto [-1, 1]) for a batch searched in raw pixels except
    `rows`, searched in the damped basis with an orthonormal FFT, so that one L-BFGS sees both on one scale (a
    coefficient at weight 1, the image's mean, steps as a pixel does)."""
    rest = [b for b in range(image.shape[0]) if b not in rows]
    if not rows:
        x = image.detach().clone().requires_grad_(True)
        return [x], lambda: x, lambda: x.data.clamp_(-1, 1)
    basis = SpectralPixels(*image.shape[-2:], image.device, corner, norm="ortho")
    x = image[rest].detach().clone().requires_grad_(True)
    z = basis.coefficients(image[rows].detach()).requires_grad_(True)
    index = torch.tensor(rest + rows, device=image.device).argsort()

    def make_image() -> torch.Tensor:
        return torch.cat([x, basis.image(z)])[index]

    def project() -> None:
        with torch.no_grad():
            x.clamp_(-1, 1)
            z.copy_(basis.coefficients(basis.image(z).clamp(-1, 1)))

    return ([x, z] if rest else [z]), make_image, project
