"""The sweep view: a grid of one or two hyperparameters, each cell a short run through the benchmark's own cell
function (`gidm_core.bench.run_cell`, a pure function of its `Cell`, so a Ray or remote runner can take it over),
shown as a PSNR heatmap that fills as cells finish. A picked cell becomes the main view's settings.

Every typed axis value obeys the rule of the main view's control that holds the same setting (`settings.number_error`),
and every cell is built into the attack config it will run before the first one starts, so a bad value is refused
in one line ("Sweep refused: <axis>: <reason>") and never reaches a cell. A cell runs on the core's stop channel:
Stop ends it within one evaluation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import plotly.graph_objects as go

from gidm_core.bench import Cell, run_cell
from gidm_core.config import AttackConfig, ConfigError, DefenceConfig, attack_config
from gidm_core.models import DiffusionModel

from .settings import CHOICES, Settings, bounded_error, number, number_error, training

CELL_ITERATIONS = (1, 5000)  # a cell's budget, whether typed per cell or swept


def _no_rule(raw: str) -> str | None:
    return None


# Each axis: the Cell field it sets, the rule a typed value obeys (the main view's control that holds the same
# setting, or the cell's own bound where the main view has no such control) and how the value becomes the field.
AXES: dict[str, tuple[str, Callable[[str], str | None], Callable[[str], Any]]] = {
    "method": ("method", _no_rule, str),
    "iterations (total)": ("total_iterations", lambda v: bounded_error(v, *CELL_ITERATIONS, integer=True),
                           lambda v: int(number(v))),
    "GIDM latent share": ("latent_share", lambda v: bounded_error(v, 0.0, 0.99, integer=False), number),
    "DDIM steps K": ("ddim_steps", lambda v: number_error("ddim_steps", v), lambda v: int(number(v))),
    "client t": ("t", lambda v: number_error("client_t", v), lambda v: None if number(v) < 0 else int(number(v))),
    "client seed": ("client_seeds", lambda v: number_error("client_seed", v), lambda v: (int(number(v)),)),
    "noise sigma (clip 1)": ("defence", lambda v: number_error("sigma", v), lambda v: (1.0, number(v), 1.0)),
    "top-k fraction kept": ("defence", lambda v: number_error("keep", v), lambda v: (0.0, 0.0, number(v))),
    "optimizer": ("optimizer", _no_rule, str),
}
_AXIS_CHOICES = {"method": CHOICES["method"], "optimizer": CHOICES["optimizer"]}
NONE = "(none)"
MAX_CELLS = 16


class SweepRefusal(ValueError):
    """A typed value or a cell that cannot run: "<axis>: <reason>"."""

    def __init__(self, axis: str, reason: str) -> None:
        super().__init__(f"{axis}: {reason}")


def values(text: str, axis: str) -> list[str]:
    """The values typed for an axis, separated by spaces or semicolons (a comma is a decimal mistake here too),
    each checked by its control's rule."""
    raw = [v for v in str(text or "").replace(";", " ").split() if v]
    if not raw:
        raise SweepRefusal(axis, "type at least one value")
    for v in raw:
        allowed = _AXIS_CHOICES.get(axis)
        error = (f"{v!r} is not one of {', '.join(allowed)}" if allowed and v not in allowed else AXES[axis][1](v))
        if error:
            raise SweepRefusal(axis, error)
    return raw


def cell_config(cell: Cell) -> AttackConfig:
    """The attack config a cell runs (less its seed and clock, which `run_cell` sets): what a loaded cell runs."""
    return attack_config(cell.method, ddim_steps=cell.ddim_steps, optimizer=cell.optimizer,
                         report_every=cell.report_every, **cell.budget_split())


@dataclass(frozen=True)
class Grid:
    base: Cell
    x_axis: str
    x_values: tuple[str, ...]
    y_axis: str
    y_values: tuple[str, ...]  # ("",) when there is no second axis

    def cell(self, row: int, col: int) -> Cell:
        cell = self.base
        for axis, value in ((self.x_axis, self.x_values[col]), (self.y_axis, self.y_values[row])):
            if axis != NONE:
                name, _, convert = AXES[axis]
                cell = replace(cell, **{name: convert(value)})
        return cell

    def check(self, model: DiffusionModel) -> None:
        """Build every cell's attack config and defence, and check its t and K against `model`, before any runs:
        a cell that could not run is refused now, named by its axis values."""
        for row in range(len(self.y_values)):
            for col in range(len(self.x_values)):
                cell = self.cell(row, col)
                where = f"{self.x_axis} = {self.x_values[col]}" + (
                    f", {self.y_axis} = {self.y_values[row]}" if self.y_axis != NONE else "")
                try:
                    config = cell_config(cell)
                    DefenceConfig(*cell.defence)
                    steps = model.num_train_timesteps
                    if cell.t is not None and cell.t >= steps:
                        raise ConfigError(f"client t must be below {steps} for {model.name}, got {cell.t}")
                    if config.uses_latent_phase and config.ddim_steps > steps:
                        raise ConfigError(f"DDIM steps K must be at most {steps} for {model.name}")
                except ConfigError as err:
                    raise SweepRefusal(where, str(err)) from None


def base_cell(settings: Settings, images: tuple[str, ...], size: int, iterations: int) -> Cell:
    """The main view's settings as a benchmark cell (bundled victim images only: a cell names its images)."""
    defence = {"clip + Gaussian noise": (settings.clip, settings.sigma, 1.0),
               "top-k pruning": (0.0, 0.0, settings.keep)}.get(settings.defence, (0.0, 0.0, 1.0))
    private = settings.secrets == "private"
    total = max(1, settings.latent_iterations + settings.pixel_iterations)
    return Cell(method=settings.method, model=settings.model, images=images, client_seeds=(settings.client_seed,),
                size=size,
                batch=len(images), knows_eps=not private, knows_t=not private, prior=settings.prior,
                defence=defence, total_iterations=iterations, latent_share=settings.latent_iterations / total,
                ddim_steps=settings.ddim_steps, t=settings.client_t if settings.client_t >= 0 else None,
                optimizer=settings.optimizer, report_every=5, control=settings.control,
                client=tuple(sorted(asdict(local).items())) if (local := training(settings)) else ())


def run(grid: Grid, stop: threading.Event) -> Iterator[tuple[list[list[Any]], str]]:
    """Run the grid cell by cell; after each, yield the PSNR table (rows: y values) and a status line. `stop` is
    the running cell's stop channel too, so Stop ends it within one evaluation."""
    table: list[list[Any]] = [[None] * len(grid.x_values) for _ in grid.y_values]
    count = len(grid.x_values) * len(grid.y_values)
    done = 0
    for row in range(len(grid.y_values)):
        for col in range(len(grid.x_values)):
            if stop.is_set():
                yield table, f"**Sweep stopped** after {done} of {count} cells."
                return
            result = run_cell(grid.cell(row, col), stop=stop)
            if stop.is_set():  # the cell ended at the stop: its numbers are of a cut-short run, not shown
                yield table, f"**Sweep stopped** after {done} of {count} cells (the running cell was cut short)."
                return
            summary = result["summary"]
            table[row][col] = {"psnr": summary["psnr"]["mean"], "to30": summary["seconds_to_30db"]["mean"],
                               "seconds": result["cell_seconds"]}
            done += 1
            yield [list(r) for r in table], f"Sweep: {done} of {count} cells done."
    yield table, f"**Sweep finished**: {count} cells. Click a cell of the table to load it into the main view."


def heatmap(grid: Grid, table: list[list[Any]]) -> go.Figure:
    """PSNR per cell; unfinished cells blank; each cell's text also gives its time to 30 dB."""
    z = [[None if c is None else c["psnr"] for c in row] for row in table]
    text = [["..." if c is None else f"{c['psnr']:.1f} dB" + (f"<br>30 dB at {c['to30']:.0f} s"
                                                              if c["to30"] is not None else "")
             for c in row] for row in table]
    fig = go.Figure(go.Heatmap(z=z, x=list(grid.x_values), y=list(grid.y_values) if grid.y_axis != NONE else [""],
                               text=text, texttemplate="%{text}", colorscale="Viridis", zmin=5, zmax=50,
                               colorbar=dict(title=dict(text="PSNR dB"))))
    fig.update_xaxes(title_text=grid.x_axis, type="category")
    fig.update_yaxes(title_text="" if grid.y_axis == NONE else grid.y_axis, type="category")
    fig.update_layout(title=dict(text="PSNR per cell (the benchmark's cell function)", font=dict(size=13)),
                      height=320, template="plotly_white", margin=dict(l=60, r=20, t=40, b=50))
    return fig


def rows(grid: Grid, table: list[list[Any]]) -> list[list[Any]]:
    """The table as the UI shows it: the y value, then one PSNR per x value."""
    return [[y or "-"] + ["" if c is None else round(c["psnr"], 1) for c in row]
            for y, row in zip(grid.y_values, table)]
