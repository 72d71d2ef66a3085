"""The live view's frames: what the UI shows at each update (images, three figures, a status line in words).

Built only from the core's `Event`s and the finished run's record, so the UI never reads attack internals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from gidm_core.attacks.events import Event

from . import figures
from .batch_view import pairs_html
from .images import difference, pairing, show
from .session import RunRecord

# What a viewer sees at a given PSNR (dB, on [0, 1] images), judged on the bundled 32 px faces: below 15 the
# reconstruction is noise; by 20 a face-shaped blur; by 25 the face is recognisable; by 35 it is a close copy with
# faint speckle; from 45 the difference map is black (near-exact).
VERDICTS = ((45.0, "near-exact"), (35.0, "a close copy"), (25.0, "recognisable"), (20.0, "a rough likeness"),
            (15.0, "a blur"), (float("-inf"), "noise"))


@dataclass
class Frame:
    """One UI update; None leaves that output as it is."""

    status: str
    original: Image.Image | None = None
    reconstruction: Image.Image | None = None
    difference: Image.Image | None = None
    loss_figure: Any = None
    metrics_figure: Any = None
    t_figure: Any = None
    filmstrip: list[tuple[Image.Image, str]] | None = None
    server_figure: Any = None  # what the server received (server_view.py), once per run
    pairs: str | None = None  # a batch's images beside their reconstructions (batch_view.py); "" clears it
    finished: RunRecord | None = None
    error: bool = False


def verdict(psnr: float | None) -> str:
    """The PSNR band in words, e.g. 'recognisable'."""
    if psnr is None or not math.isfinite(psnr):
        return "near-exact" if psnr == float("inf") else ""
    return next(words for floor, words in VERDICTS if psnr >= floor)


def live_frame(event: Event, truth: torch.Tensor, original_img: Image.Image, trace: list[dict], curve: list[dict],
               phase_starts: dict[str, int], t_true: list[int], knows_t: bool, total_iterations: int,
               notes: str, steered: list[dict] | None = None) -> Frame:
    """A snapshot while the attack runs: its current guess, the loss so far, the metrics and t traces."""
    order, by_t = pairing(event.reconstruction, truth, event.t_estimate, t_true)
    recon = event.reconstruction[order]
    it, total = event.iteration, max(event.total_iterations, 1)
    rate = _rate(trace)
    eta = (total - it) / rate if rate > 0 else float("nan")
    m = event.metrics
    parts = [f"**Iteration {it}/{total}**", f"phase **{event.phase}**",
             f"{rate:.1f} it/s" if rate > 0 else "", f"ETA {eta:.0f} s" if math.isfinite(eta) else "",
             f"**{verdict(m['psnr'])}**, PSNR {m['psnr']:.1f} dB" if "psnr" in m else "",
             f"SSIM {m['ssim']:.3f}" if "ssim" in m else "",
             event.message if event.message.startswith("start ") else ""]  # several starts: which one leads
    return Frame(" · ".join(p for p in parts if p) + notes, original_img, show(recon), difference(recon, truth),
                 figures.loss_figure(curve, phase_starts, total if steered else total_iterations, steered),
                 figures.metrics_figure(trace), figures.t_figure(trace, t_true, knows_t),
                 pairs=batch_pairs(recon, truth, t_true, by_t))


def batch_pairs(recon: torch.Tensor, truth: torch.Tensor, t_true: list[int], by_t: bool) -> str | None:
    """The batch view for a batch (None for one image: the three pictures above already pair it)."""
    return pairs_html(recon, truth, t_true, by_t) if truth.shape[0] > 1 else None


def final_frame(record: RunRecord, original_img: Image.Image, knows_t: bool, total_iterations: int) -> Frame:
    """The finished run: its scores in words and numbers, the final figures and the filmstrip."""
    metrics = record.metrics
    verb = {"done": "Finished", "stopped": "Stopped", "error": "Ended early"}.get(record.status, record.status)
    text = (f"**{verb}** after {record.iterations} iterations in {record.seconds:.1f} s: "
            f"**{verdict(metrics['psnr'])}**, PSNR {metrics['psnr']:.2f} dB · SSIM {metrics['ssim']:.3f} · "
            f"LPIPS {metrics['lpips']:.3f}"
            + (f" · t {record.t_estimate} (true {record.t_true})" if not knows_t else "")
            + (f" · eps error {metrics['eps_error']:.3f}" if "eps_error" in metrics else "")
            + (f"  \n{record.message}" if record.message not in ("", "finished") else "")  # e.g. converged
            + (f"  \nFirst image after {record.first_image_s:.1f} s" if record.first_image_s is not None else "")
            + (f"; 30 dB after {record.time_to_30db_s:.1f} s." if record.time_to_30db_s is not None else ".")
            + separation_line(record.separation))
    recon, truth = record.reconstruction, record.original
    return Frame(text, original_img, show(recon), difference(recon, truth),
                 figures.loss_figure(record.history, record.phase_starts,
                                     record.iterations if record.steering else total_iterations, record.steering),
                 figures.metrics_figure(record.trace), figures.t_figure(record.trace, record.t_true, knows_t),
                 [(show(img[:4]), caption) for img, caption in record.filmstrip], finished=record,
                 pairs=batch_pairs(recon, truth, record.t_true, record.paired_by_t))


def separation_line(message: str) -> str:
    """The status line's words on the batch's separation, as the attack said them (its residual, or why it
    refused): what the server learnt from the update alone, no truth in it."""
    return f"  \n*Batch:* {message}" if message else ""


def thin(items: list, count: int) -> list:
    """At most `count` of `items`, evenly spaced, first and last kept: the filmstrip's snapshots."""
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def _rate(trace: list[dict], window: int = 6) -> float:
    """Recent iterations per second, from the events' iteration numbers and the attack's own clock."""
    points = [(row["elapsed"], row["iteration"]) for row in trace if "elapsed" in row][-window:]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return 0.0
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
