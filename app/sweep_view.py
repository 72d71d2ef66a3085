"""What the sweep view's controls do: run the grid into the heatmap and table, and load a clicked cell into the main
view's controls (the wiring then runs it)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import gradio as gr

from gidm_core.bench import ATTACKER_SEED_OFFSET, Cell
from gidm_core.config import LocalTraining
from gidm_core.models import ModelLoadError

from . import sweep
from .model_cache import get_model, run_device
from .session import Session
from .settings import (
    CELL_FIELDS,
    DEFENCES,
    RESOLUTIONS,
    SETTING_FIELDS,
    Refusal,
    Settings,
    as_typed,
    bounded_error,
    number,
    parse,
)
from .victims import gallery_items
from .zerogpu import fit_sweep_cell


def run_sweep(session: Session, x_axis: str, x_text: str, y_axis: str, y_text: str, cell_iterations: str,
              *values: Any) -> Iterator[tuple]:
    """Run the grid and fill the heatmap and table as cells finish; the main Stop button ends the running cell
    within one evaluation. Every value and every cell is checked before the first cell runs."""
    if session.cancelled_while_queued():
        yield gr.skip(), gr.skip(), "**Sweep stopped** before it started: Stop was pressed while it waited.", gr.skip()
        return
    try:
        if x_axis not in sweep.AXES or (y_axis != sweep.NONE and y_axis not in sweep.AXES):
            raise ValueError(f"axis: choose one of {', '.join(sweep.AXES)}")
        settings = parse(dict(zip(SETTING_FIELDS, values)))
        xs = sweep.values(x_text, x_axis)
        ys = sweep.values(y_text, y_axis) if y_axis != sweep.NONE else [""]
        error = bounded_error(cell_iterations, *sweep.CELL_ITERATIONS, integer=True)
        if error:
            raise ValueError(f"iterations per cell: {error}")
        if len(xs) * len(ys) > sweep.MAX_CELLS:
            raise ValueError(f"cells: {len(xs) * len(ys)} of them, at most {sweep.MAX_CELLS}")
        bundled = {item.name for item in gallery_items() if item.bundled}
        images = tuple(settings.gallery[:max(1, settings.batch_size)])
        if settings.source != "Gallery" or not images or not set(images) <= bundled:
            raise ValueError("victim: a sweep attacks bundled gallery images, pick them on the Victim tab")
        model = get_model(settings.model, run_device())
        size = model.image_size if settings.resolution == RESOLUTIONS[0] else int(settings.resolution)
        base = sweep.base_cell(settings, images, size, int(number(cell_iterations)))
        seconds, note = fit_sweep_cell(settings, len(xs) * len(ys), max(
            [int(number(x)) for x in xs] if x_axis == "iterations (total)" else [base.total_iterations]))
        grid = sweep.Grid(replace(base, seconds=seconds), x_axis, tuple(xs), y_axis, tuple(ys))
        grid.check(model)
    except (Refusal, ValueError, ModelLoadError) as err:
        yield gr.skip(), gr.skip(), f"**Sweep refused**: {err}", gr.skip()
        return
    stop = session.claim()
    if stop is None:
        yield gr.skip(), gr.skip(), "A run is already going in this session: press Stop first.", gr.skip()
        return
    headers = [y_axis if y_axis != sweep.NONE else ""] + [f"{x_axis} = {x}" for x in xs]
    try:
        for table, text in sweep.run(grid, stop):
            yield (sweep.heatmap(grid, table), gr.Dataframe(sweep.rows(grid, table), headers=headers), text + note,
                   grid)
    finally:
        session.release(stop)


def load_cell(grid: sweep.Grid | None, evt: gr.SelectData) -> tuple:
    """The picked cell's settings into the main controls (the attack config the benchmark ran); a run follows."""
    row, col = evt.index if isinstance(evt.index, (list, tuple)) else (0, 0)
    if grid is None or col < 1:
        return (gr.skip(),) * len(CELL_FIELDS) + ("Pick a PSNR cell of the sweep table.",)
    cell = grid.cell(row, col - 1)
    config = sweep.cell_config(cell)
    clip, sigma, keep = cell.defence
    defence = DEFENCES[2] if keep < 1 else DEFENCES[1] if clip > 0 or sigma > 0 else DEFENCES[0]
    chosen = {**{name: getattr(config, name) for name in CELL_FIELDS if hasattr(config, name)},
              "client_t": -1 if cell.t is None else cell.t, "client_seed": cell.client_seeds[0],
              "attack_seed": cell.client_seeds[0] + ATTACKER_SEED_OFFSET,  # the seed the benchmark's cell attacked with
              "defence": defence, "clip": clip, "sigma": sigma, "keep": keep,
              "secrets": "known" if cell.knows_eps else "private", "prior": cell.prior, "control": cell.control,
              **_client_controls(cell)}
    return tuple(as_typed(chosen[name]) for name in CELL_FIELDS) + (
        f"Loaded sweep cell ({grid.x_axis} = {grid.x_values[col - 1]}"
        + (f", {grid.y_axis} = {grid.y_values[row]}" if grid.y_axis != sweep.NONE else "") + "): running it ...",)


def _client_controls(cell: Cell) -> dict[str, object]:
    """The Threat tab's client-training controls for the cell's client (FedSGD: the controls' defaults)."""
    if not cell.client:
        defaults = Settings()
        return {"client_update": "fedsgd", **{name: getattr(defaults, name) for name in
                                             ("local_steps", "client_optimizer", "client_lr", "weight_decay",
                                              "noise_per_step")}}
    local = LocalTraining(**dict(cell.client))
    return {"client_update": "fedavg", "local_steps": local.steps, "client_optimizer": local.optimizer,
            "client_lr": local.lr, "weight_decay": local.weight_decay, "noise_per_step": local.noise}
