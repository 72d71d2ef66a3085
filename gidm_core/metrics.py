"""Image-similarity metrics the evaluator uses to score reconstructions against the private truth.

Convention: every function here takes image batches as float tensors of shape (B, C, H, W) with values in [0, 1]
and returns plain Python floats, so results can go straight into reports and JSON. The rest of the core works in
[-1, 1]; convert with `to_unit` first (`score` refuses inputs that are clearly outside [0, 1], because silently
scoring [-1, 1] images would give plausible-looking but wrong numbers).

Batch results are the mean of per-sample values (the usual convention in gradient-inversion papers), and `score`
first pairs each true image with its best reconstruction, because attacks recover a batch in arbitrary order.

LPIPS (AlexNet, v0.1) runs fully offline: the `lpips` package supplies the linear heads, and the AlexNet trunk, which
`lpips` would otherwise download from download.pytorch.org, comes from `assets/lpips/alexnet_features.safetensors`
(see assets/lpips/PROVENANCE.md and scripts/build_lpips_weights.py).
"""

from __future__ import annotations

import math
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["to_unit", "mse", "psnr", "ssim", "lpips_distance", "pair_images", "score", "LPIPS_WEIGHTS"]

LPIPS_WEIGHTS = Path(__file__).resolve().parent.parent / "assets" / "lpips" / "alexnet_features.safetensors"

# AlexNet's two 3x3/stride-2 max-pools leave nothing to pool below 31 px, so smaller images are upsampled to this.
_LPIPS_MIN_SIDE = 32
# torchvision alexnet().features index of each conv -> the lpips.pretrained_networks.alexnet slice that holds it.
_CONV_SLICE = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
# Slack for float error when checking the [0, 1] convention in `score`.
_RANGE_TOL = 1e-3

_LPIPS_CACHE: dict[torch.device, torch.nn.Module] = {}
_LPIPS_LOCK = threading.Lock()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Map the core's [-1, 1] images to the [0, 1] range the metrics expect (clamped, since samples overshoot)."""
    return ((x + 1) / 2).clamp(0, 1)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.dim() != 4 or a.shape != b.shape:
        raise ValueError(f"expected two (B, C, H, W) tensors of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.shape[0] == 0:
        raise ValueError("empty batch")


def _per_sample_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # float64 on CPU: the metrics are reported to several decimals and PSNR amplifies small-MSE rounding.
    a64, b64 = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    return (a64 - b64).pow(2).flatten(1).mean(1)


def _psnr_from_mse(m: torch.Tensor) -> torch.Tensor:
    # Peak value 1 on [0, 1]; identical images have no noise, hence infinite PSNR.
    return torch.where(m > 0, -10 * torch.log10(m), torch.full_like(m, math.inf))


def psnr_per_sample(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """PSNR in dB (peak 1) of each pair a[i], b[i]: a batch's table, image by image."""
    _check_pair(a, b)
    return [float(v) for v in _psnr_from_mse(_per_sample_mse(a, b))]


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared error over all pixels, averaged per sample then over the batch."""
    _check_pair(a, b)
    return float(_per_sample_mse(a, b).mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB (peak 1), per sample then averaged; inf if any sample is reproduced exactly.

    Averaging per-sample PSNR (not PSNR of the batch MSE) keeps one badly recovered image from hiding the others.
    """
    _check_pair(a, b)
    return float(_psnr_from_mse(_per_sample_mse(a, b)).mean())


def _ssim_per_sample(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    from skimage.metrics import structural_similarity

    _check_pair(a, b)
    _, c, h, w = a.shape
    side = min(h, w)
    if side < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {h}x{w}")
    # skimage's default 7x7 window must fit in the image and be odd; shrink it for tiny images instead of failing.
    win = min(7, side if side % 2 else side - 1)
    a_np = a.detach().to("cpu", torch.float64).numpy()
    b_np = b.detach().to("cpu", torch.float64).numpy()
    out = []
    for x, y in zip(a_np, b_np):
        if c == 1:  # grayscale: plain 2-D images, no channel axis
            out.append(float(structural_similarity(x[0], y[0], data_range=1.0, win_size=win)))
        else:
            out.append(float(structural_similarity(x, y, data_range=1.0, win_size=win, channel_axis=0)))
    return out


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Structural similarity (skimage, data_range 1, 7x7 window or smaller for tiny images), mean over the batch.

    SSIM rewards preserved structure where MSE only counts pixel error, so blurry-but-close reconstructions score
    lower than with PSNR.
    """
    return float(np.mean(_ssim_per_sample(a, b)))


def _build_lpips(device: torch.device) -> torch.nn.Module:
    import lpips
    from safetensors.torch import load_file

    if not LPIPS_WEIGHTS.is_file():
        raise FileNotFoundError(f"LPIPS AlexNet weights missing: {LPIPS_WEIGHTS} (rebuild with "
                                "scripts/build_lpips_weights.py)")
    with warnings.catch_warnings():
        # lpips passes torchvision's deprecated `pretrained=` argument; the warning is noise for users.
        warnings.simplefilter("ignore", UserWarning)
        # pnet_rand=True: random trunk instead of a download; pretrained=True: linear heads from the lpips wheel.
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    trunk = load_file(str(LPIPS_WEIGHTS))  # stored as float16 to keep the file small
    state = {f"slice{_CONV_SLICE[int(k.split('.')[0])]}.{k}": v.float() for k, v in trunk.items()}
    model.net.load_state_dict(state, strict=True)  # strict: a partial load would silently give wrong distances
    return model.to(device).eval().requires_grad_(False)


def _lpips_model(device: torch.device) -> torch.nn.Module:
    """The LPIPS network for `device`, built on first use and shared afterwards (one lock, so threads never race)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    model = _LPIPS_CACHE.get(device)
    if model is None:
        with _LPIPS_LOCK:
            model = _LPIPS_CACHE.get(device)
            if model is None:
                model = _LPIPS_CACHE[device] = _build_lpips(device)
    return model


def _lpips_per_sample(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    _check_pair(a, b)
    model = _lpips_model(a.device)
    x, y = a.detach().float(), b.detach().float()
    if x.shape[1] == 1:  # AlexNet wants RGB; a gray image is the same value in every channel
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"LPIPS needs 1- or 3-channel images, got {x.shape[1]} channels")
    h, w = x.shape[-2:]
    if min(h, w) < _LPIPS_MIN_SIDE:
        scale = _LPIPS_MIN_SIDE / min(h, w)
        size = (max(_LPIPS_MIN_SIDE, round(h * scale)), max(_LPIPS_MIN_SIDE, round(w * scale)))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        d = model(x * 2 - 1, y * 2 - 1)  # LPIPS expects [-1, 1]
    return d.flatten().to("cpu", torch.float64)


def lpips_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """LPIPS v0.1 (AlexNet) distance, mean over the batch; lower is more similar. Runs on `a`'s device, offline.

    LPIPS tracks human judgements of similarity better than PSNR/SSIM, which is what "did the attack recover the
    image" is really asking. Images under 32 px are upsampled (bilinear) to 32 px on the short side, since AlexNet's
    pooling needs at least 31 px; 1-channel images are repeated to RGB.
    """
    return float(_lpips_per_sample(a, b).mean())


def pair_images(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Permutation `perm` (LongTensor) such that `recon[perm[i]]` is the reconstruction assigned to `truth[i]`.

    Attacks return a batch in arbitrary order, so it must be matched before scoring. The assignment is one-to-one
    and minimises the total pixel MSE (Hungarian algorithm), which a greedy nearest match does not guarantee.
    """
    _check_pair(recon, truth)
    n = truth.shape[0]
    if n == 1:
        return torch.zeros(1, dtype=torch.long)
    from scipy.optimize import linear_sum_assignment

    t = truth.detach().to("cpu", torch.float64).flatten(1)
    r = recon.detach().to("cpu", torch.float64).flatten(1)
    # ||t - r||^2 expanded, so memory is B x B rather than B x B x pixels.
    cost = (t.pow(2).sum(1)[:, None] + r.pow(2).sum(1)[None, :] - 2 * t @ r.T).clamp_min(0) / t.shape[1]
    rows, cols = linear_sum_assignment(cost.numpy())
    perm = torch.empty(n, dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.long)
    return perm


def _check_unit_range(name: str, x: torch.Tensor) -> torch.Tensor:
    lo, hi = float(x.min()), float(x.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(f"{name} has values in [{lo:.3f}, {hi:.3f}]; score() expects [0, 1] images "
                         "(convert [-1, 1] images with to_unit)")
    return x.clamp(0, 1)


def score(recon: torch.Tensor, truth: torch.Tensor, lpips: bool = True,
          order: torch.Tensor | None = None) -> dict[str, float]:
    """Score a reconstructed batch against the true one: {"mse", "psnr", "ssim", "lpips"}, per-sample means.

    Both inputs are (B, C, H, W) in [0, 1] (use `to_unit` on the core's [-1, 1] tensors). Reconstructions are first
    paired with the truth by `pair_images`, so the result does not depend on the order the attack produced them in;
    a caller that needs the pairing itself (to reorder estimated t and eps too) passes it as `order`, so a batch is
    paired once. With `lpips=False` the "lpips" key is left out (it is the only metric that needs a network).
    """
    _check_pair(recon, truth)
    recon = _check_unit_range("recon", recon)
    truth = _check_unit_range("truth", truth)
    recon = recon[(pair_images(recon, truth) if order is None else order).to(recon.device)]
    m = _per_sample_mse(recon, truth)
    result = {
        "mse": float(m.mean()),
        "psnr": float(_psnr_from_mse(m).mean()),
        "ssim": float(np.mean(_ssim_per_sample(recon, truth))),
    }
    if lpips:
        result["lpips"] = float(_lpips_per_sample(recon, truth).mean())
    return result
