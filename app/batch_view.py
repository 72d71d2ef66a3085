"""The batch view: each private image beside its reconstruction, captioned with its timestep and PSNR, in a grid that
reflows with the screen (two pairs a row on a phone, more on a desktop).

The images go into the page at their own size (a 32 px PNG is a few KB) and the browser enlarges them without
smoothing (CSS in texts.py), so one frame of a 16-image batch stays near 0.1 MB. This is the
teacher's panel: it holds the truth (the private images and their scores); the status line keeps to what the
attacker knows.
"""

from __future__ import annotations

import base64
import io
import weakref
from collections.abc import Sequence

import torch

from gidm_core.images import to_pil
from gidm_core.metrics import psnr_per_sample, to_unit

# The narrowest a pair may get on a desktop (CSS px): 32 px images shown at least ~2.4x; larger images get room for
# about their own size. A phone's rule (texts.py) narrows it to two pairs a row.
MIN_PAIR_PX = 160
MAX_PAIR_PX = 300


# Up to this size a picture goes as an exact PNG (a few KB); larger ones as WebP at quality 90, about 4x smaller and
# faster to encode (a 128 px reconstruction: ~11 KB against ~48 KB), which keeps a frame of 8 of them near 0.1 MB.
EXACT_PX = 32
_ORIGINALS: dict[int, tuple[weakref.ref, list[str]]] = {}  # id(truth) -> (the tensor, its images' data URLs)


def _data_url(image: torch.Tensor) -> str:
    buffer = io.BytesIO()
    if image.shape[-1] <= EXACT_PX:
        to_pil(image).save(buffer, format="PNG")
        kind = "png"
    else:
        to_pil(image).save(buffer, format="WEBP", quality=90, method=0)
        kind = "webp"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _originals(truth: torch.Tensor) -> list[str]:
    """The private images' data URLs, encoded once per run (every frame shows the same ones)."""
    held = _ORIGINALS.get(id(truth))
    if held is None or held[0]() is not truth:
        for key in [k for k, (ref, _) in _ORIGINALS.items() if ref() is None]:  # runs that have ended
            del _ORIGINALS[key]
        held = _ORIGINALS[id(truth)] = (weakref.ref(truth), [_data_url(image) for image in truth])
    return held[1]


def pairs_html(recon: torch.Tensor, truth: torch.Tensor, t_true: Sequence[int], by_t: bool) -> str:
    """The batch as HTML: original i beside `recon[i]` (already paired), each captioned 't 302 · 18.2 dB'; above
    them, how the pairing was made."""
    psnr = psnr_per_sample(to_unit(recon), to_unit(truth))
    how = ("paired by timestep: the attack's own pairing" if by_t else
           "paired by likeness (the evaluator's Hungarian pairing): the attack's slots do not say which is which")
    width = min(MAX_PAIR_PX, max(MIN_PAIR_PX, 2 * truth.shape[-1] + 12))
    cells = []
    for i, (original, guess) in enumerate(zip(_originals(truth), recon, strict=True)):
        t = t_true[i] if len(t_true) == len(truth) else None  # fresh noise: t per step, not per image
        caption = (f"t {t} · " if t is not None else "") + f"{psnr[i]:.1f} dB"
        cells.append(f'<figure class="pair" title="image {i + 1}: private (left), reconstruction (right), {caption}">'
                     f'<div class="pair-images"><img src="{original}" alt="private image {i + 1}">'
                     f'<img src="{_data_url(guess)}" alt="reconstruction {i + 1}"></div>'
                     f"<figcaption>{caption}</figcaption></figure>")
    return (f'<div class="pairs-note">{len(cells)} private images (left) and their reconstructions (right), '
            f'{how}</div><div class="pairs" style="--pair: {width}px">{"".join(cells)}</div>')
