"""Victim images: the bundled held-out faces and photos, then scikit-image's sample photos; their thumbnails; the
batch a run attacks. Checked when called, not at import, so the app starts with whatever this install ships."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gidm_core.faces import SKIMAGE_PHOTOS
from gidm_core.images import ImageLoadError, grid, load_image, victims
from gidm_core.models import DiffusionModel, check_image_size

from .images import enlarge
from .settings import APP_MAX_SIZE, RESOLUTIONS, Refusal, Settings, batch_error


@dataclass(frozen=True)
class GalleryItem:
    name: str
    source: Any  # a Path, or an ndarray for a scikit-image photo
    bundled: bool  # True if the CLI can name it with --image <name>
    caption: str


def gallery_items() -> list[GalleryItem]:
    """The gallery: bundled faces first, then other bundled victims, then scikit-image's sample photos that are not
    bundled already (named `skimage:<photo>`, which the CLI reads too), so that a batch of 16 fills from it."""
    items = []
    bundled = victims()
    faces = [v for v in bundled if "face" in v.kind.lower()]
    for v in faces + [v for v in bundled if v not in faces]:
        if v.path.is_file():
            items.append(GalleryItem(v.name, v.path, True, f"{v.name} ({v.kind})"))
    shipped = " ".join(v.source for v in bundled)  # a bundled photo cut from a scikit-image one is not offered twice
    return items + [item for item in _photos() if f"data.{item.name.split(':', 1)[1]}()" not in shipped]


# scikit-image's photos that ship in its wheel: the core's fallback victims and two more, so that with the bundled
# images (three of them cut from these) the gallery holds 16 distinct pictures.
PHOTOS = (*SKIMAGE_PHOTOS, "hubble_deep_field", "retina")


@lru_cache(maxsize=1)
def _photos() -> tuple[GalleryItem, ...]:
    """scikit-image's sample photos this install can read (one that needs a download is left out)."""
    from skimage import data as skdata

    items = []
    for name in PHOTOS:
        try:
            array = getattr(skdata, name)()
        except Exception:  # noqa: BLE001  (a scikit-image photo that needs a download is simply left out)
            continue
        items.append(GalleryItem(f"skimage:{name}", array, True, f"{name}: scikit-image sample photo"))
    return tuple(items)


def previews(sources: list[tuple[Any, str]]) -> list[tuple[Image.Image, str]]:
    """(thumbnail, caption) for each readable (image source, caption); unreadable ones are left out."""
    out = []
    for source, caption in sources:
        try:
            out.append((enlarge(grid(load_image(source, 64)), 128), caption))
        except ImageLoadError:
            continue
    return out


def gallery_previews(items: list[GalleryItem]) -> list[tuple[Image.Image, str]]:
    """The gallery's thumbnails, captioned with the names the picked-images control holds."""
    return previews([(item.source, item.name) for item in items])


def run_size(settings: Settings, model: DiffusionModel) -> int:
    """The image size a run attacks at: the model's own or the chosen resolution, within the app's bound, one the
    model's UNet can take, and small enough for the batch (each refusal a one-line message)."""
    size = model.image_size if settings.resolution == RESOLUTIONS[0] else int(settings.resolution)
    check_image_size(size, APP_MAX_SIZE)
    model.check_size(size)
    if (error := batch_error(settings.batch_size, size)) is not None:  # the model's own size is known only now
        raise Refusal("batch_size", error)
    return size


def pick_victims(settings: Settings, size: int, channels: int) -> list[tuple[str, torch.Tensor, bool]]:
    """The batch as (name, tensor, bundled?) triples, padded from the gallery up to the batch size."""
    chosen: list[tuple[str, torch.Tensor, bool]] = []
    items = gallery_items()
    if settings.source == "Upload":
        for path in settings.uploads:
            chosen.append((Path(path).name, load_image(path, size, channels), False))
    elif settings.source == "Webcam":
        if settings.webcam is None:
            raise ImageLoadError("no webcam picture yet")
        array = np.asarray(settings.webcam)
        chosen.append(("webcam", load_image(array, size, channels), False))
    else:
        by_name = {item.name: item for item in items}
        for name in settings.gallery:
            if name not in by_name:
                raise ImageLoadError(f"no gallery image {name!r}")
            item = by_name[name]
            chosen.append((item.name, load_image(item.source, size, channels), item.bundled))
    chosen = chosen[:settings.batch_size]
    for item in items:  # pad with further gallery images
        if len(chosen) >= settings.batch_size:
            break
        if item.name not in {c[0] for c in chosen}:
            chosen.append((item.name, load_image(item.source, size, channels), item.bundled))
    if not chosen:
        raise ImageLoadError("no victim image: pick one from the gallery or upload one")
    if len(chosen) < settings.batch_size:
        raise ImageLoadError(f"only {len(chosen)} images available for a batch of {settings.batch_size}")
    return chosen
