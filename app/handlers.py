"""What the main view's controls do: Run and Stop, presets and method defaults, which controls show, gallery picks,
upload previews, the comparison and the export. Each handler takes and returns plain values in the order the
wiring (ui.py) lists its components."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from typing import Any

import gradio as gr
import torch
from PIL import Image

from gidm_core.config import attack_config

from .export import export_zip
from .images import show
from .model_cache import model_choices
from .presets import PRESETS
from .runner import stream
from .session import QueueFull, RunRecord, Session, queue_size
from .settings import (
    METHOD_FIELDS,
    PRESET_FIELDS,
    SETTING_FIELDS,
    Refusal,
    Settings,
    applies,
    as_typed,
    hints,
    number,
    parse,
)
from .victims import gallery_items, previews


def submit(session: Session, *values: Any) -> list:
    """Run's validator: it runs at submission, before the queue holds the run, so from now on Stop can cancel the
    run while it waits, and refused in one line when the queue is full. The values themselves are checked in `run`,
    which names the control and switches tab."""
    try:
        session.submit(queue_size())
    except QueueFull as full:
        raise gr.Error(str(full), title="Queue full") from None
    return [gr.validate(True, "")] * (1 + len(values))


def run(session: Session, *values: Any) -> Iterator[tuple]:
    """Stream one attack: status, original, reconstruction, difference, three plots, filmstrip, compare table,
    run pickers, export, (when a value is refused) the tab that holds it, the server's view of the update, and a
    batch's images beside their reconstructions."""
    skip = gr.skip()
    if session.cancelled_while_queued():
        yield ("**Stopped** before it started: Stop was pressed while this run waited in the queue.",
               *(skip,) * 14)
        return
    try:
        settings = parse(dict(zip(SETTING_FIELDS, values)))
    except Refusal as err:  # say where, show it, and clear the last run's results so they are not taken for these
        yield (err.status, None, None, None, None, None, None, [], skip, skip, skip, None, gr.Tabs(selected=err.tab),
               None, "")
        return
    sent_original = None  # the original does not change during a run: send it once (gradio rewrites the cached
    # file of an image each time it is sent, which can cut short a download of that same file)
    for frame in stream(session, settings):
        if frame.error:
            gr.Warning(frame.status.replace("**", ""))
        original = skip if frame.original is sent_original else frame.original
        sent_original = frame.original or sent_original
        images = tuple(skip if v is None else v for v in (
            original, frame.reconstruction, frame.difference, frame.loss_figure, frame.metrics_figure,
            frame.t_figure, frame.filmstrip))
        if frame.finished is not None:
            labels = [r.label for r in session.runs]
            previous = labels[-2] if len(labels) > 1 else labels[-1]
            tail = (session.table(), gr.update(choices=labels, value=previous),
                    gr.update(choices=labels, value=labels[-1]),
                    str(export_zip(frame.finished, session.workfolder())), skip)
        else:
            tail = (skip,) * 5
        yield (frame.status,) + images + tail + tuple(skip if v is None else v for v in (frame.server_figure,
                                                                                       frame.pairs))


# The API names run's parameters after the settings (gradio reads them from the signature).
run.__signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                       for name in ("session", *SETTING_FIELDS)])


def stop(session: Session) -> Any:
    """Stop this session's run (or sweep) within one step, and cancel its runs still waiting in the queue."""
    if session.running:
        session.stop()
        return "**Stopping** at the next step; the best guess so far is kept ..."
    return "**Stopped**: the queued run will not start." if session.stop() else gr.skip()


def apply_preset(name: str) -> tuple:
    """The preset's values for PRESET_FIELDS' controls (a field the preset leaves out gets the default)."""
    p = PRESETS[name]
    base = Settings()
    return tuple(as_typed(p.get(k, getattr(base, k))) for k in PRESET_FIELDS)


def method_defaults(method: str) -> tuple:
    """The method's own defaults for the controls it differs on (from the core's config)."""
    config = attack_config(method)
    return tuple(as_typed(getattr(config, name)) for name in METHOD_FIELDS)


def refresh(dependent: list[str], *values: Any) -> tuple:
    """Show the controls that apply, the t panel when t is private, and hints for this combination."""
    raw = dict(zip(SETTING_FIELDS, values))
    shown = applies(raw)
    try:
        notes = hints(parse(raw))
    except Refusal:
        notes = []
    return tuple(gr.update(visible=shown[name]) for name in dependent) + (
        gr.update(visible=raw.get("secrets") == "private"), "\n\n".join(f"*Note:* {n}" for n in notes))


def pick_gallery(current: list[str] | None, batch_size: Any, evt: gr.SelectData) -> tuple:
    """A click picks the image (batch size 1) or adds / removes it (larger batches)."""
    value = evt.value
    caption = value.get("caption") if isinstance(value, dict) else None
    names = [item.name for item in gallery_items()]
    name = caption if caption in names else (names[evt.index] if evt.index is not None and evt.index < len(names)
                                             else None)
    if name is None:
        return gr.skip(), gr.skip()
    try:
        batch = int(number(batch_size))
    except ValueError:
        batch = 1
    if batch <= 1:
        return [name], "Gallery"
    current = list(current or [])
    current = [n for n in current if n != name] if name in current else current + [name]
    return current or [name], "Gallery"


def upload_previews(paths: list[str] | None) -> list[tuple[Image.Image, str]]:
    """Thumbnails of the uploads (an unreadable file shows none, and the Run says why)."""
    return previews([(path, os.path.basename(path)) for path in paths or []])


def compare(session: Session, a: str | None, b: str | None) -> tuple:
    """The two picked runs (original above, reconstruction below) and a table of their scores."""
    ra, rb = session.find(a), session.find(b)
    rows = []
    for tag, r in (("A", ra), ("B", rb)):
        if r is None:
            continue
        m = r.metrics
        rows.append(f"| {tag} | {r.label} | {r.threat} | {r.iterations} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                    f"{m['lpips']:.3f} | {r.seconds:.1f} |")
    table = ("| | run | threat | iters | PSNR | SSIM | LPIPS | s |\n|---|---|---|---|---|---|---|---|\n"
             + "\n".join(rows)) if rows else ""

    def pair(r: RunRecord | None) -> Image.Image | None:
        # The whole batch: originals in the top row, each reconstruction (paired) below its original.
        return None if r is None else show(torch.cat([r.original, r.reconstruction]), columns=len(r.original))

    return pair(ra), pair(rb), table


def export_pick(session: Session, label: str | None) -> Any:
    """The zip of the run picked as A (else the latest run)."""
    record = session.find(label) or (session.runs[-1] if session.runs else None)
    if record is None:
        gr.Warning("No finished run to export yet.")
        return gr.skip()
    return str(export_zip(record, session.workfolder()))


def refresh_choices() -> tuple:
    """The model lists as this install has them when the page loads (a model trained since start-up shows)."""
    choices = model_choices()
    return gr.update(choices=choices), gr.update(choices=["attacked"] + choices)
