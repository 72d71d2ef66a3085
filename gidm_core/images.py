"""Victim images: the bundled held-out ones, uploads, files and arrays, all turned into tensors in [-1, 1].

Anything a user can hand the app (a corrupt file, a huge photo, grayscale, RGBA, a palette GIF) either becomes a
clean (1, C, H, W) tensor or raises `ImageLoadError` with one line that says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import UserError
from .models import ASSETS

IMAGES_DIR = ASSETS / "images"
MANIFEST = IMAGES_DIR / "manifest.json"
MAX_PIXELS = 40_000_000  # refuse decompression bombs before decoding them


class ImageLoadError(UserError):
    """An image that cannot be used; the message is one line meant for the user."""


@dataclass(frozen=True)
class Victim:
    """A bundled held-out image and where it came from."""

    name: str
    path: Path
    kind: str
    source: str
    licence: str


def victims() -> list[Victim]:
    """The bundled held-out images listed in assets/images/manifest.json."""
    if not MANIFEST.is_file():
        return []
    entries = json.loads(MANIFEST.read_text())["images"]
    return [Victim(e["name"], IMAGES_DIR / e["file"], e["kind"], e["source"], e["licence"]) for e in entries]


def victim(name: str) -> Victim:
    for v in victims():
        if v.name == name:
            return v
    raise ImageLoadError(f"no bundled image {name!r}: choose one of {', '.join(v.name for v in victims())}")


def control_names(names: list[str]) -> list[str]:
    """For each victim, an unrelated bundled image of the same kind (the next one in the manifest, cyclically, that
    is not in the batch): the stand-ins of an "other-image" control run (`control.py`). An image outside the bundle
    (an upload, a file) counts as a face, what the bundled models learn."""
    bundled = victims()
    kinds = {v.name: v.kind for v in bundled}
    picked: list[str] = []
    for name in names:
        kind = kinds.get(name, "face")
        pool = [v.name for v in bundled if v.kind == kind]
        start = pool.index(name) + 1 if name in pool else 0
        ring = pool[start:] + pool[:start]
        choice = next((n for n in ring if n not in names and n not in picked), None)
        if choice is None:
            raise ImageLoadError(f"no bundled {kind} image left to stand in for {name} in a control run")
        picked.append(choice)
    return picked


def open_image(source: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """A PIL image from a path, a bundled image's name, an array (H, W[, C], uint8 or float in [0, 1]) or PIL."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        array = source
        if array.dtype != np.uint8:
            array = (np.clip(array.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
        if array.ndim not in (2, 3):
            raise ImageLoadError(f"an image array must be (H, W) or (H, W, C), got shape {array.shape}")
        return Image.fromarray(array)
    path = Path(source)
    if not path.exists() and str(source) in {v.name for v in victims()}:
        path = victim(str(source)).path
    if not path.is_file():
        raise ImageLoadError(f"image not found: {source}")
    too_large = ImageLoadError(f"{path.name} is too large (over {MAX_PIXELS // 1_000_000} megapixels)")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # Pillow only warns up to twice this, hence the check before load()
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise too_large
            image.load()
            return image.copy()
    except Image.DecompressionBombError:
        raise too_large from None
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageLoadError(f"{path.name} is not a readable image file") from None


def to_tensor(image: Image.Image, size: int, channels: int = 3) -> torch.Tensor:
    """Centre-crop to a square, resize to `size` (antialiased), match `channels`; (1, C, size, size) in [-1, 1]."""
    if image.width < 1 or image.height < 1:
        raise ImageLoadError("the image is empty")
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_depth_to_8bit(image)
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparent pixels become white, not black
    image = image.convert("L" if channels == 1 else "RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if channels == 1 else tensor.permute(2, 0, 1)
    return tensor[None].clamp(-1, 1)


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """A 16/32-bit integer or float grayscale image as 8-bit "L", scaled by its bit depth (Pillow's own convert
    clips 16-bit values at 255, turning a 16-bit PNG almost white). Integer modes are taken as 16-bit (PNG's and
    most TIFFs' depth), floats as [0, 1]."""
    scale = 1.0 if image.mode == "F" else 65535.0
    array = np.clip(np.asarray(image, dtype=np.float64) / scale, 0, 1)
    return Image.fromarray((array * 255).round().astype(np.uint8), "L")


def load_image(source: str | Path | Image.Image | np.ndarray, size: int, channels: int = 3) -> torch.Tensor:
    """`open_image` then `to_tensor`: the one entry point for turning user input into a victim tensor."""
    return to_tensor(open_image(source), size, channels)


def load_named_images(names: Iterable[str], size: int, channels: int = 3) -> torch.Tensor:
    """A batch (B, C, size, size) from bundled victim names or `skimage:<photo>` names (the benchmark's victims)."""
    images = []
    for name in names:
        if name.startswith("skimage:"):
            from skimage import data as skdata

            images.append(load_image(getattr(skdata, name.split(":", 1)[1])(), size, channels))
        else:
            images.append(load_image(name, size, channels))
    return torch.cat(images)


def to_pil(image: torch.Tensor) -> Image.Image:
    """One (C, H, W) tensor in [-1, 1] as a PIL image, for saving and display."""
    array = ((image.detach().cpu().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(1, 2, 0).numpy()
    return Image.fromarray(array[..., 0] if array.shape[2] == 1 else array)


def grid(images: torch.Tensor, columns: int | None = None) -> Image.Image:
    """A batch (B, C, H, W) in [-1, 1] tiled into one image, row-major."""
    count, channels, height, width = images.shape
    columns = columns or count
    rows = (count + columns - 1) // columns
    canvas = torch.ones(channels, rows * height, columns * width)
    for i in range(count):
        r, c = divmod(i, columns)
        canvas[:, r * height:(r + 1) * height, c * width:(c + 1) * width] = images[i].detach().cpu()
    return to_pil(canvas)
