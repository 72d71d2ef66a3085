"""Hugging Face ZeroGPU: how long each call may hold the GPU, computed from the run's own settings.

ZeroGPU lends a GPU per call for the `duration` a `spaces.GPU(duration=...)` decorator asks; anonymous visitors get
at most `MAX_GPU_S` per call, so a fixed 300 s request refused them all. The duration callable receives the same
arguments as the event handler (`spaces` calls it first), estimates the run's time and asks for that, capped; a run
whose estimate does not fit gets a time budget that does, and says so (`fit_run`). Outside ZeroGPU nothing here
changes a run: `active()` is False, and `spaces.GPU` returns the function as it is.

The per-evaluation costs are estimates for a ZeroGPU slice (not measured here: no GPU was lent when this was
written); a run that overruns them is still cut by its time budget only when it did not fit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gidm_core.config import AttackConfig

from .settings import RESOLUTIONS, SETTING_FIELDS, Refusal, Settings, parse

MAX_GPU_S = 120  # ZeroGPU's longest call for an anonymous visitor
SETUP_S = 15  # model load, the client's update, CUDA warm-up: before the attack's clock starts
EVALUATION_S = 0.03  # one matching-loss evaluation with its double backward, 32 px, batch 1 (an estimate)
REFUSED_S = 10  # a call whose settings are refused ends before any GPU work


def active() -> bool:
    """True on a ZeroGPU Space (the `spaces` package installed and its ZeroGPU switch on)."""
    try:
        from spaces.config import Config
    except ImportError:
        return False
    return bool(Config.zero_gpu)


def gpu(fn: Callable, duration: Callable[..., int]) -> Callable:
    """`fn` on the GPU for `duration(*its arguments)` seconds on ZeroGPU; `fn` itself everywhere else."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=duration)(fn)


def _size(settings: Settings) -> int:
    """The run's image size before its model loads: the chosen resolution, else the size in the model's name
    (faces32, random:tiny-64), else 64."""
    if settings.resolution != RESOLUTIONS[0]:
        return int(settings.resolution)
    digits = [int(d) for d in re.findall(r"\d+", settings.model.split("@")[0])]
    return digits[-1] if digits and 8 <= digits[-1] <= 128 else 64


def attack_seconds(settings: Settings, iterations: int | None = None) -> float:
    """Estimated attack seconds of a run (`iterations` overrides its pixel budget, for a sweep's cells): each
    evaluation costs EVALUATION_S scaled by pixels and batch; a latent evaluation runs the K-step sampler too."""
    scale = (_size(settings) / 32) ** 2 * max(1, settings.batch_size)
    if settings.client_update == "fedavg":  # every evaluation replays the client's local steps
        scale *= settings.local_steps
    latent = settings.latent_iterations if settings.method in ("gidm", "gidm-latent", "gidm-plus") else 0
    pixel = settings.pixel_iterations if iterations is None else iterations
    return EVALUATION_S * scale * (pixel + latent * (1 + settings.ddim_steps))


def _parsed(values: tuple[Any, ...]) -> Settings | None:
    try:
        return parse(dict(zip(SETTING_FIELDS, values)))
    except (Refusal, ValueError):
        return None


def run_duration(session: Any, *values: Any) -> int:
    """The GPU seconds a Run asks for (the run handler's arguments): its estimate plus set-up, at most MAX_GPU_S."""
    settings = _parsed(values)
    if settings is None:
        return REFUSED_S
    return min(MAX_GPU_S, math.ceil(SETUP_S + attack_seconds(settings)))


def sweep_duration(session: Any, x_axis: str, x_text: str, y_axis: str, y_text: str, cell_iterations: Any,
                   *values: Any) -> int:
    """The GPU seconds a sweep asks for: every cell's estimate (at the largest typed budget) plus set-up, capped."""
    settings = _parsed(values)
    if settings is None:
        return REFUSED_S
    count = max(1, len(str(x_text or "").split())) * max(1, len(str(y_text or "").split()))
    try:
        budget = int(float(cell_iterations))
    except ValueError:
        return REFUSED_S
    return min(MAX_GPU_S, math.ceil(SETUP_S + count * attack_seconds(settings, iterations=budget)))


def fit_run(config: AttackConfig, settings: Settings) -> tuple[AttackConfig, str]:
    """On ZeroGPU, a run whose estimate exceeds its call gets a time budget that fits, and a note that says so;
    anything else is returned as it is."""
    if not active():
        return config, ""
    budget = MAX_GPU_S - SETUP_S
    needed = attack_seconds(settings)
    if needed <= budget or 0 < config.seconds <= budget:
        return config, ""
    return replace(config, seconds=float(budget)), (
        f"ZeroGPU lends a call at most {MAX_GPU_S} s: this run stops after {budget} s of attack (its "
        f"{config.total_iterations} iterations would need about {needed:.0f} s).")


def fit_sweep_cell(settings: Settings, cells: int, iterations: int) -> tuple[float, str]:
    """On ZeroGPU, (each cell's time budget, a note) when the sweep's estimate does not fit one call; (0, "")
    otherwise (the cells then run their iterations)."""
    budget = MAX_GPU_S - SETUP_S
    needed = cells * attack_seconds(settings, iterations=iterations)
    if not active() or needed <= budget:
        return 0.0, ""
    return budget / cells, (f"  \n*Note:* ZeroGPU lends a call at most {MAX_GPU_S} s: each of the {cells} cells "
                            f"gets {budget / cells:.0f} s of attack (the sweep would need about {needed:.0f} s).")
