"""Running one cell: a pure function from its frozen config to a JSON dict. It loads its own model and images from
their specs, runs every (image group, seed) of the cell and shares no state with any other cell.

An attack's seconds exclude the evaluator's scoring of events (the run's own clock leaves it out). On a CPU with one
torch thread (the benchmark's default) they are the process's CPU seconds, so a budget buys the same work however
busy the machine is; otherwise wall seconds (`budget_clock`). The
reference forward+backward is timed around every run, so step ratios compare times taken under the same load.
"""

from __future__ import annotations

import functools
import math
import statistics
import threading
import time
from dataclasses import asdict
from typing import Any

import torch

from ..methods import PEER_METHODS
from .jobs import ATTACKER_SEED_OFFSET, BENCH_VERSION, THRESHOLDS_DB, Cell
from .machine import PeakMemory, budget_clock, device_name, now, time_forward_backward


def _threat(cell: Cell):
    from ..config import DefenceConfig, ThreatModel

    clip, sigma, keep = cell.defence
    return ThreatModel(knows_eps=cell.knows_eps, knows_t=cell.knows_t, prior=cell.prior,
                       defence=DefenceConfig(clip=clip, sigma=sigma, keep=keep), control=cell.control)


def cell_scenario(cell: Cell, names: tuple[str, ...], client_seed: int, device: str):
    """The round one (image group, client seed) of the cell plays."""
    from ..config import LocalTraining, attack_config
    from ..scenario import Scenario

    config = attack_config(cell.method, ddim_steps=max(1, cell.ddim_steps), report_every=cell.report_every,
                           attack_seed=client_seed + ATTACKER_SEED_OFFSET, optimizer=cell.optimizer,
                           seconds=cell.seconds, clock=budget_clock(device), **cell.budget_split())
    training = LocalTraining(**dict(cell.client)) if cell.client else None
    fixed_t = None if cell.t is None or (training and training.noise == "fresh") else (cell.t,)
    return Scenario(model=cell.model, images=names, size=cell.size, client_seed=client_seed, t=fixed_t,
                    training=training, threat=_threat(cell), attack=config)


def _run_peer_group(cell: Cell, load, names: tuple[str, ...], client_seed: int, device: str) -> dict[str, Any]:
    """A peer's run (`attacks/peer.py`): the round DLG's cell shares (same images, client secrets, update and
    attacker seed), attacked by breaching for the cell's budget, scored by the same evaluator. Its curve is its
    final answer only: breaching reports no images while it runs."""
    from dataclasses import replace

    from ..attacks.peer import breaching_attack
    from ..evaluation import Evaluator
    from ..protocol import share_scenario

    scenario = cell_scenario(replace(cell, method="dlg"), names, client_seed, device)
    shared = share_scenario(scenario, load)
    result = breaching_attack(shared.model, shared.update, cell.method, cell.seconds, scenario.attack.attack_seed,
                              clock=functools.partial(now, device))
    scores = Evaluator(shared.batch).metrics(result.reconstruction)
    point = [result.evaluations, round(result.seconds, 4), round(scores["psnr"], 3), round(scores["ssim"], 4),
             round(scores["lpips"], 4)]
    reach = {f"{kind}_to_{db:g}db": None if scores["psnr"] < db else value
             for db in THRESHOLDS_DB for kind, value in (("seconds", result.seconds), ("iterations",
                                                                                      result.evaluations))}
    return {"images": list(names), "client_seed": client_seed, "attack_seed": scenario.attack.attack_seed,
            "clock": scenario.attack.clock, "status": "done", "message": "", "t_true": shared.batch.t.tolist(),
            "t_estimate": None, "mse": scores["mse"], "psnr": scores["psnr"], "ssim": scores["ssim"],
            "lpips": scores["lpips"], "t_accuracy": None, "eps_error": None, "iterations": result.evaluations,
            "seconds": result.seconds, "iterations_per_second": result.evaluations / max(result.seconds, 1e-9),
            "step_seconds": result.seconds / max(result.evaluations, 1), "phase_step_seconds": {},
            "matching_loss": result.objective, **reach, "curve": [point], "messages": [],
            "peer": {"config": result.config, "max_iterations": result.max_iterations}}


def _run_group(cell: Cell, load, names: tuple[str, ...], client_seed: int, device: str,
               stop: threading.Event | None = None) -> dict[str, Any]:
    from ..protocol import play_scenario

    if cell.method in PEER_METHODS:
        return _run_peer_group(cell, load, names, client_seed, device)
    scenario = cell_scenario(cell, names, client_seed, device)
    config = scenario.attack
    played = play_scenario(scenario, load, stop=stop)
    batch, run, evaluator = played.batch, played.run, played.evaluator
    curve: list[list[float]] = []  # [iteration, attack seconds, PSNR, SSIM, LPIPS]
    phases: dict[str, list[float]] = {}  # phase -> [first iteration, attack seconds at its start]
    messages = []
    for event in run:
        attack_seconds = event.elapsed  # the run's own clock leaves out the time spent scoring here
        if event.kind == "phase" and event.phase not in phases:
            phases[event.phase] = [event.iteration, attack_seconds]
            if event.message:
                messages.append(event.message)
        if not event.losses or event.kind in ("done", "stopped", "error"):
            continue
        scores = evaluator.metrics(event.reconstruction)
        curve.append([event.iteration, round(attack_seconds, 4), round(scores["psnr"], 3), round(scores["ssim"], 4),
                      round(scores["lpips"], 4)])
    result = run.result
    if result is None:
        return {"images": list(names), "client_seed": client_seed, "status": "error",
                "message": messages[-1:] or "no result"}
    seconds = result.seconds
    metrics = evaluator.score_result(result)
    reach = {}
    for db in THRESHOLDS_DB:
        hit = next((point for point in curve if point[2] >= db), None)
        reach[f"seconds_to_{db:g}db"] = None if hit is None else hit[1]
        reach[f"iterations_to_{db:g}db"] = None if hit is None else hit[0]
    phase_steps = {}
    ordered = sorted(phases.items(), key=lambda item: item[1][0])
    for i, (name, (first, began)) in enumerate(ordered):
        last, ended = (ordered[i + 1][1] if i + 1 < len(ordered) else (result.iterations, seconds))
        if last > first:
            phase_steps[name] = (ended - began) / (last - first)
    return {
        "images": list(names), "client_seed": client_seed, "attack_seed": config.attack_seed, "clock": config.clock,
        "status": result.status, "message": result.message,
        "t_true": batch.t.tolist(), "t_estimate": list(result.t_estimate) if result.t_estimate else None,
        "mse": metrics["mse"], "psnr": metrics["psnr"], "ssim": metrics["ssim"], "lpips": metrics["lpips"],
        "t_accuracy": None if cell.knows_t else metrics.get("t_accuracy"),
        "eps_error": None if cell.knows_eps else metrics.get("eps_error"),
        "iterations": result.iterations, "seconds": seconds,
        "iterations_per_second": result.iterations / max(seconds, 1e-9),
        "step_seconds": seconds / max(result.iterations, 1), "phase_step_seconds": phase_steps,
        "matching_loss": result.matching_loss, **reach, "curve": curve, "messages": messages,
    }


def _spread(values: list[float | None]) -> dict[str, float | None]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def run_cell(cell: Cell, stop: threading.Event | None = None) -> dict[str, Any]:
    """The cell's JSON: its config, per-run results and their mean/spread. Depends on nothing but `cell`.
    `stop` (set from another thread, e.g. the app's Stop) ends the running attack within one evaluation and skips
    the cell's remaining runs."""
    from ..models import load_model, resolve_device

    device = resolve_device(cell.device)
    started, cpu_started = time.perf_counter(), time.process_time()
    with PeakMemory(device) as memory:
        load = functools.cache(lambda spec: load_model(spec, device))  # each model once for all the cell's runs
        model = load(cell.model)
        model.check_size(cell.size)
        # The reference forward+backward is timed before every run and after the last, so that the ratio compares
        # times taken under the same machine load (others' jobs come and go on a shared CPU).
        references = [time_forward_backward(model, cell.batch, cell.size, device)]
        runs = []
        for names, client_seed in cell.groups():
            if stop is not None and stop.is_set():
                break
            runs.append(_run_group(cell, load, names, client_seed, device, stop))
            references.append(time_forward_backward(model, cell.batch, cell.size, device, reps=3))
        fwd_bwd = statistics.median(references)
    ok = [r for r in runs if r.get("status") in ("done", "stopped")]
    summary = {key: _spread([r.get(key) for r in ok]) for key in (
        "psnr", "ssim", "lpips", "mse", "t_accuracy", "eps_error", "iterations", "seconds", "iterations_per_second",
        "step_seconds", "seconds_to_25db", "seconds_to_30db")}
    for db in THRESHOLDS_DB:
        summary[f"reached_{db:g}db"] = sum(r.get(f"seconds_to_{db:g}db") is not None for r in ok)
    step = summary["step_seconds"]["mean"]
    phase_ratio: dict[str, float] = {}
    for phase in {p for r in ok for p in r["phase_step_seconds"]}:
        phase_ratio[phase] = statistics.fmean(r["phase_step_seconds"][phase] for r in ok
                                              if phase in r["phase_step_seconds"]) / fwd_bwd
    return {
        "id": cell.id, "bench_version": BENCH_VERSION, "config": asdict(cell), "model_name": model.name,
        "threat": _threat(cell).describe(), "device": device, "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(), "clock": budget_clock(device), "fwd_bwd_seconds": fwd_bwd,
        "step_ratio": None if step is None else step / fwd_bwd, "phase_step_ratio": phase_ratio,
        "peak_memory_mb": memory.peak_mb, "base_memory_mb": memory.base_mb,
        "memory_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "process RSS",
        "runs": runs, "failed_runs": len(runs) - len(ok), "summary": summary,
        "cell_seconds": time.perf_counter() - started, "cell_cpu_seconds": time.process_time() - cpu_started,
    }
