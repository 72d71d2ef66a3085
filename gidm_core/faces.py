"""Training data for the bundled models, built only from what ships offline, with every image's hash on record.

The bundled models learn faces: scikit-image's `lfw_subset` holds 100 grayscale 25x25 face crops from Labeled
Faces in the Wild (and 100 non-face crops, unused here). Faces are the paper's own setting and the most telling
privacy case. A fixed set of faces (`HELD_OUT_FACES`) never enters any training set: they are the bundled victims.

Identity of an image = sha256 of its uint8 pixel array (C order, no header): `pixel_hash`. A model's training set is
recorded as the list of these hashes (see `training_record`), and the tests check that no victim's hash is in it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .images import to_tensor

LFW_FACES = 100  # lfw_subset: the first 100 images are faces, the next 100 non-faces
# Every 12th face from index 5: held out of every training set, shipped as victims in assets/images/.
HELD_OUT_FACES: tuple[int, ...] = (5, 17, 29, 41, 53, 65, 77, 89)
# scikit-image sample photos that ship inside its wheel (others need a download): the victims to fall back on when
# no bundled image is installed, in the order they are picked.
SKIMAGE_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")


def pixel_hash(array: np.ndarray) -> str:
    """sha256 of a uint8 image array's bytes (C order): the identity used to prove a victim was never trained on."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"pixel_hash needs a uint8 array, got {array.dtype}")
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def lfw_faces() -> np.ndarray:
    """The 100 lfw_subset faces as a (100, 25, 25) uint8 array (scikit-image stores them as floats k/255)."""
    from skimage import data as skdata

    faces = skdata.lfw_subset()[:LFW_FACES]
    return np.clip(np.round(faces * 255.0), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class ImageSet:
    """Named uint8 images (N, H, W) or (N, H, W, C) with where they came from."""

    name: str
    images: np.ndarray
    indices: tuple[int, ...]
    source: str

    def __len__(self) -> int:
        return len(self.images)

    def hashes(self) -> list[str]:
        return [pixel_hash(image) for image in self.images]

    def tensors(self, size: int, channels: int = 3) -> torch.Tensor:
        """All images as (N, C, size, size) in [-1, 1], through the same resize the victims go through."""
        return torch.cat([to_tensor(Image.fromarray(image), size, channels) for image in self.images])


def _lfw_split(held_out: bool) -> ImageSet:
    faces = lfw_faces()
    keep = [i for i in range(LFW_FACES) if (i in HELD_OUT_FACES) == held_out]
    name = "lfw-faces-heldout" if held_out else "lfw-faces"
    return ImageSet(name, faces[keep], tuple(keep), "scikit-image data.lfw_subset() faces (first 100), "
                    "from Labeled Faces in the Wild (Huang et al. 2007)")


def held_out_faces() -> ImageSet:
    return _lfw_split(held_out=True)


DATASETS = {
    "lfw-faces": lambda: _lfw_split(held_out=False),  # the 92 faces not in HELD_OUT_FACES
}


def load_dataset(name: str) -> ImageSet:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]()


def training_record(dataset: ImageSet) -> dict:
    """What a model card records about its training set: source, indices and the pixel hash of every image."""
    return {"dataset": dataset.name, "source": dataset.source, "count": len(dataset),
            "hash": "sha256 of each uint8 pixel array (C order)", "indices": list(dataset.indices),
            "sha256": dataset.hashes()}


class Augmenter:
    """Random horizontal flip, zoom in [1, 1 + zoom] and shift up to `shift` of the side, from a seeded generator.

    Applied on the fly to (B, C, H, W) batches in [-1, 1]; border pixels are replicated, never black.
    """

    def __init__(self, flip: bool = True, zoom: float = 0.12, shift: float = 0.06) -> None:
        self.flip, self.zoom, self.shift = flip, zoom, shift

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        u = torch.rand(b, 4, generator=generator)
        scale = 1.0 / (1.0 + self.zoom * u[:, 0])  # <1: sample a smaller window, i.e. zoom in
        sign = torch.where(u[:, 1] < 0.5, -1.0, 1.0) if self.flip else torch.ones(b)
        tx = (u[:, 2] * 2 - 1) * self.shift * 2  # affine_grid coordinates span 2 per side
        ty = (u[:, 3] * 2 - 1) * self.shift * 2
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = scale * sign
        theta[:, 1, 1] = scale
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
