"""Benchmark: `python -m gidm_core bench --suite {quick,full} --out DIR`.

Every number the README states comes from here. The grid is a list of `Cell`s; each cell is a pure function from
its frozen config to a JSON dict (`run_cell`): it loads its own model and images from their specs, runs every
(image group, seed) of the cell, and shares no state with any other cell, so cells can run in any order, in
parallel worker processes, or on a cluster. A cell's file is `DIR/cells/<id>.json`, the id a stable hash of its
config; a rerun skips cells whose file already exists. `aggregate` then writes results.json, results.md and plots.

Timing: an attack's wall seconds exclude the evaluator's scoring of events (measured and subtracted), and every
cell times one forward+backward (a plain training-step gradient) of the same UNet in the same process, so step
times are reported as ratios that survive a noisy, shared machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

BENCH_VERSION = 1
METHOD_ORDER = ("dlg", "ig", "gidm-latent", "gidm", "gidm-plus")
METHOD_LABELS = {"dlg": "DLG", "ig": "IG", "gidm-latent": "GIDM-latent", "gidm": "GIDM", "gidm-plus": "GIDM+"}
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")
THRESHOLDS_DB = (25.0, 30.0)
SUITES = ("quick", "full", "tiny")


# ----------------------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One benchmark cell: one method against one setting, over several image groups and seeds.

    `images` are bundled victim names or `skimage:<name>`; with `batch` B they are attacked in consecutive groups of
    B. `iterations` is the total budget, split by `budget_split` so that every method in a row gets the same total.
    `t` fixes the client's timestep (None: drawn from the seed). `defence` is (clip, sigma, keep).
    """

    method: str
    model: str
    images: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    size: int = 32
    batch: int = 1
    knows_eps: bool = True
    knows_t: bool = True
    prior: str = "attacked"
    defence: tuple[float, float, float] = (0.0, 0.0, 1.0)
    iterations: int = 100
    latent_share: float = 0.3
    ddim_steps: int = 2
    t: int | None = 100
    report_every: int = 5
    optimizer: str = "lbfgs"
    device: str = "auto"

    @property
    def id(self) -> str:
        payload = json.dumps({"v": BENCH_VERSION, **asdict(self)}, sort_keys=True)
        return f"{self.method}-{self.size}px-" + hashlib.sha1(payload.encode()).hexdigest()[:12]

    def budget_split(self) -> dict[str, int]:
        """AttackConfig iteration fields giving this method a total of `iterations` (GIDM+ within one)."""
        n = self.iterations
        if self.method == "gidm-latent":
            return dict(latent_iterations=n, iterations=0)
        if self.method == "gidm":
            latent = max(1, round(n * self.latent_share))
            return dict(latent_iterations=latent, iterations=n - latent)
        return dict(iterations=n, latent_iterations=0)

    def groups(self) -> list[tuple[tuple[str, ...], int]]:
        """(image group, seed) pairs this cell runs."""
        groups = [self.images[i:i + self.batch] for i in range(0, len(self.images) - self.batch + 1, self.batch)]
        return [(g, s) for g in groups for s in self.seeds]

    def cost(self) -> float:
        """Rough relative cost, for ordering work (largest first)."""
        split = self.budget_split()
        units = split.get("iterations", 0) + split.get("latent_iterations", 0) * (self.ddim_steps + 1.5)
        if self.method == "gidm-plus":
            units *= 1.5
        return units * (self.size / 32) ** 2 * self.batch * len(self.groups())

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        for key in ("images", "seeds", "defence"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


def resolve_device(device: str) -> str:
    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def load_victims(names: Iterable[str], size: int, channels: int) -> torch.Tensor:
    """A batch from bundled victim names or `skimage:<photo>` names."""
    from .data import load_image

    images = []
    for name in names:
        if name.startswith("skimage:"):
            from skimage import data as skdata

            images.append(load_image(getattr(skdata, name.split(":", 1)[1])(), size, channels))
        else:
            images.append(load_image(name, size, channels))
    return torch.cat(images)


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on CUDA, else RSS sampled every 10 ms (MB)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = 0.0
        self.base_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.base_mb = torch.cuda.memory_allocated() / 2**20
        else:
            self.base_mb = self.peak_mb = self.rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_forward_backward(model, batch: int, size: int, device: str, reps: int = 5) -> float:
    """Median seconds of one training-step gradient (forward + backward w.r.t. every weight) of `model`."""
    from .client import client_update

    generator = torch.Generator().manual_seed(1234)
    x0 = (torch.rand(batch, model.channels, size, size, generator=generator) * 2 - 1).to(device)
    eps = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.full((batch,), 100, dtype=torch.long, device=device)
    times = []
    for _ in range(reps + 1):
        _sync(device)
        start = time.perf_counter()
        client_update(model, x0, eps, t)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])  # the first call warms caches


def _threat(cell: Cell):
    from .config import DefenceConfig, ThreatModel

    clip, sigma, keep = cell.defence
    return ThreatModel(knows_eps=cell.knows_eps, knows_t=cell.knows_t, prior=cell.prior,
                       defence=DefenceConfig(clip=clip, sigma=sigma, keep=keep))


def _run_group(cell: Cell, model, prior, names: tuple[str, ...], seed: int, device: str) -> dict[str, Any]:
    from .config import attack_config
    from .protocol import play

    threat = _threat(cell)
    x0 = load_victims(names, cell.size, model.channels)
    config = attack_config(cell.method, ddim_steps=max(1, cell.ddim_steps), report_every=cell.report_every, seed=seed,
                           optimizer=cell.optimizer, **cell.budget_split())
    played = play(model, x0, threat, config, client_seed=seed, t=None if cell.t is None else [cell.t], prior=prior)
    batch, run, evaluator = played.batch, played.run, played.evaluator
    curve: list[list[float]] = []  # [iteration, attack seconds, PSNR]
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
        psnr = evaluator.metrics(event.reconstruction, lpips=False)["psnr"]
        curve.append([event.iteration, round(attack_seconds, 4), round(psnr, 3)])
    result = run.result
    if result is None:
        return {"images": list(names), "seed": seed, "status": "error", "message": messages[-1:] or "no result"}
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
        "images": list(names), "seed": seed, "status": result.status, "message": result.message,
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


def run_cell(cell: Cell) -> dict[str, Any]:
    """The cell's JSON: its config, per-run results and their mean/spread. Depends on nothing but `cell`."""
    from .models import load_model

    device = resolve_device(cell.device)
    started, cpu_started = time.perf_counter(), time.process_time()
    with PeakMemory(device) as memory:
        model = load_model(cell.model, device)
        model.check_size(cell.size)
        prior = None if cell.prior == "attacked" else load_model(cell.prior, device)
        # The reference forward+backward is timed before every run and after the last, so that the ratio compares
        # times taken under the same machine load (others' jobs come and go on a shared CPU).
        references = [time_forward_backward(model, cell.batch, cell.size, device)]
        runs = []
        for names, seed in cell.groups():
            runs.append(_run_group(cell, model, prior, names, seed, device))
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
        "torch_threads": torch.get_num_threads(), "fwd_bwd_seconds": fwd_bwd,
        "step_ratio": None if step is None else step / fwd_bwd, "phase_step_ratio": phase_ratio,
        "peak_memory_mb": memory.peak_mb, "base_memory_mb": memory.base_mb,
        "memory_kind": "cuda max_memory_allocated" if device.startswith("cuda") else "process RSS",
        "runs": runs, "failed_runs": len(runs) - len(ok), "summary": summary,
        "cell_seconds": time.perf_counter() - started, "cell_cpu_seconds": time.process_time() - cpu_started,
    }


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


# ---------------------------------------------------------------------------------------------------- speed probe
@dataclass(frozen=True)
class SpeedProbe:
    """Per-step cost of each attack's phase as a ratio to one forward+backward of the same UNet, all measured in
    one process: (time of n+warm steps - time of warm steps) / n, so set-up costs cancel; median of `reps`."""

    model: str
    size: int = 32
    batch: int = 1
    ddim_steps: int = 2
    steps: int = 10
    reps: int = 3
    optimizer: str = "adam"
    device: str = "auto"

    @property
    def id(self) -> str:
        payload = json.dumps({"v": BENCH_VERSION, "probe": asdict(self)}, sort_keys=True)
        return f"speed-{self.size}px-" + hashlib.sha1(payload.encode()).hexdigest()[:12]

    def cost(self) -> float:
        return 1e9  # start it first: it is the one every cell's ratio is compared against


SPEED_CASES = (  # (label, method, private eps/t, AttackConfig iteration fields for n steps of the one phase)
    ("DLG pixel step (L2)", "dlg", False, lambda n: dict(iterations=n)),
    ("IG pixel step (cosine + TV)", "ig", False, lambda n: dict(iterations=n)),
    ("GIDM latent step (DDIM K)", "gidm-latent", False, lambda n: dict(latent_iterations=n, iterations=0)),
    ("GIDM pixel step", "gidm", False, lambda n: dict(latent_iterations=0, iterations=n)),
    ("DLG pixel+eps step (private eps)", "dlg", True, lambda n: dict(iterations=n)),
    ("GIDM+ step (joint x_t, r)", "gidm-plus", True, lambda n: dict(iterations=n)),
)


def run_speed(probe: SpeedProbe) -> dict[str, Any]:
    from .config import ThreatModel, attack_config
    from .models import load_model
    from .protocol import play

    device = resolve_device(probe.device)
    cpu_started = time.process_time()
    model = load_model(probe.model, device)
    x0 = load_victims(["skimage:astronaut", "skimage:coffee", "skimage:chelsea", "skimage:rocket"][:probe.batch]
                      * max(1, probe.batch // 4 + 1), probe.size, model.channels)[:probe.batch]
    threats = {False: ThreatModel(), True: ThreatModel(knows_eps=False, knows_t=False)}

    def attack_seconds(method: str, private: bool, split: dict) -> tuple[float, int]:
        config = attack_config(method, ddim_steps=probe.ddim_steps, report_every=10**6, lr_schedule="constant",
                               optimizer=probe.optimizer, **split)
        run = play(model, x0, threats[private], config, t=[100]).run
        _sync(device)
        start = time.perf_counter()
        run.run_to_end()
        _sync(device)
        return time.perf_counter() - start, config.total_iterations

    warm = 2
    fwd_bwd: list[float] = []
    raw: dict[str, list[float]] = {label: [] for label, *_ in SPEED_CASES}
    for _ in range(probe.reps):  # interleaved, so a burst of load elsewhere hits every case alike
        fwd_bwd.append(time_forward_backward(model, probe.batch, probe.size, device, reps=3))
        for label, method, private, split in SPEED_CASES:
            short, short_steps = attack_seconds(method, private, split(warm))
            long, long_steps = attack_seconds(method, private, split(warm + probe.steps))
            raw[label].append(max(long - short, 0.0) / (long_steps - short_steps))
    base = statistics.median(fwd_bwd)
    cpu_seconds = time.process_time() - cpu_started
    cases = {label: {"step_seconds": statistics.median(v), "ratio": statistics.median(v) / base,
                     "samples": v} for label, v in raw.items()}
    return {"id": probe.id, "bench_version": BENCH_VERSION, "config": asdict(probe), "kind": "speed",
            "model_name": model.name, "device": device, "device_name": device_name(device),
            "torch_threads": torch.get_num_threads(), "fwd_bwd_seconds": base, "fwd_bwd_samples": fwd_bwd,
            "cases": cases, "cell_cpu_seconds": cpu_seconds}


# ---------------------------------------------------------------------------------------------------------- suites
@dataclass(frozen=True)
class Row:
    """A table row: one setting, every method in it on the same budget."""

    label: str
    group: str  # what the row varies: "setting", "model", "defence", "t", "prior", "size", "batch"
    cells: tuple[Cell, ...]
    strength: float | None = None  # defence strength, for the defence plot
    defence_kind: str = ""


def pick_models(size: int) -> tuple[str, str | None]:
    """(late model, early model or None): the bundled facesN when present, else a seeded random UNet."""
    from .models import bundled_models

    bundled = bundled_models()
    name = f"faces{size}"
    if name in bundled:
        early = f"{name}@early" if "early" in bundled[name] else None
        return name, early
    return f"random:small-{size}", None


def pick_images(count: int) -> tuple[str, ...]:
    """Bundled held-out victims when present, else scikit-image photos."""
    from .data import victims

    bundled = [v.name for v in sorted(victims(), key=lambda v: v.kind != "face")]  # faces first: what models learn
    names = bundled if len(bundled) >= count else [f"skimage:{n}" for n in SKIMAGE_PHOTOS]
    return tuple(names[:count])


def _row(label: str, group: str, base: Cell, methods: Iterable[str], **extra) -> Row:
    cells = []
    for method in methods:
        cell = replace(base, method=method)
        if method in ("dlg", "ig", "gidm-plus"):
            cell = replace(cell, prior="attacked", ddim_steps=0, latent_share=0.0)  # unused: one cell, not two
        cells.append(cell)
    return Row(label, group, tuple(cells), **extra)


NOISE_LEVELS = (1e-3, 1e-2, 1e-1)  # Gaussian noise std after clipping the update's norm to 1
PRUNE_LEVELS = (0.5, 0.1, 0.01)  # fraction of each tensor kept


def build_suite(name: str) -> tuple[list[Row], list[SpeedProbe]]:
    if name == "tiny":
        base = Cell(method="dlg", model="random:tiny-32", images=pick_images(1), iterations=12, ddim_steps=1,
                    report_every=3)
        rows = [_row("32 px, eps and t known", "setting", base, ("dlg", "gidm")),
                _row("32 px, private eps and t", "setting", replace(base, knows_eps=False, knows_t=False),
                     ("gidm-plus",)),
                *[_row(f"noise {s:g}", "defence", replace(base, defence=(1.0, s, 1.0)), ("dlg",), strength=s,
                       defence_kind="noise") for s in (1e-4, 1e-2)]]
        return rows, [SpeedProbe("random:tiny-32", steps=3, reps=1)]
    if name == "quick":
        late, early = pick_models(32)
        base = Cell(method="dlg", model=late, images=pick_images(2), iterations=150, t=100)
        # GIDM+ is the private-secrets attack: with eps and t revealed it would only repeat its private result at
        # a higher cost per step, so the quick suite runs it where eps and t are private.
        known = tuple(m for m in METHOD_ORDER if m != "gidm-plus")
        rows = [_row("eps and t known", "setting", base, known),
                _row("eps and t known, Adam", "optimizer", replace(base, optimizer="adam"), known),
                _row("private eps and t", "setting", replace(base, knows_eps=False, knows_t=False), METHOD_ORDER)]
        if early:
            rows.append(_row("early-round model, eps and t known", "model", replace(base, model=early), known))
        for s in NOISE_LEVELS:
            rows.append(_row(f"clip 1 + noise {s:g}", "defence", replace(base, defence=(1.0, s, 1.0)),
                             ("dlg", "ig", "gidm"), strength=s, defence_kind="noise"))
        # GIDM+ needs ~1000 evaluations to converge: the rows by t give it and joint DLG 600 each.
        private = replace(base, knows_eps=False, knows_t=False, iterations=600)
        for t in (10, 100, 400, 800):
            rows.append(_row(f"private eps and t, t = {t}, 600 iterations", "t", replace(private, t=t),
                             ("dlg", "gidm-plus")))
        return rows, [SpeedProbe(late, optimizer="adam"), SpeedProbe(late, optimizer="lbfgs")]
    if name == "full":
        rows: list[Row] = []
        probes = []
        for size in (32, 64, 128):
            late, early = pick_models(size)
            budget = 1000 if size < 128 else 2000
            base = Cell(method="dlg", model=late, images=pick_images(4), seeds=(0, 1), size=size,
                        iterations=budget, ddim_steps=4, t=100, report_every=10)
            label = f"{size} px"
            rows.append(_row(f"{label}, eps and t known", "size", base, METHOD_ORDER))
            rows.append(_row(f"{label}, private eps and t", "setting",
                             replace(base, knows_eps=False, knows_t=False), METHOD_ORDER))
            rows.append(_row(f"{label}, batch 4", "batch", replace(base, batch=4, t=None), METHOD_ORDER))
            if early:
                rows.append(_row(f"{label}, early-round model", "model", replace(base, model=early), METHOD_ORDER))
                rows.append(_row(f"{label}, early-round model, prior = late model", "prior",
                                 replace(base, model=early, prior=late), METHOD_ORDER))
            if size == 32:
                for s in NOISE_LEVELS:
                    rows.append(_row(f"{label}, clip 1 + noise {s:g}", "defence",
                                     replace(base, defence=(1.0, s, 1.0)), METHOD_ORDER, strength=s,
                                     defence_kind="noise"))
                for keep in PRUNE_LEVELS:
                    rows.append(_row(f"{label}, keep top {keep:.0%}", "defence", replace(base, defence=(0, 0, keep)),
                                     METHOD_ORDER, strength=1 - keep, defence_kind="pruning"))
                for t in (10, 100, 400, 800):
                    rows.append(_row(f"{label}, private eps and t, t = {t}", "t",
                                     replace(base, knows_eps=False, knows_t=False, t=t), ("dlg", "gidm-plus")))
            probes.append(SpeedProbe(late, size=size, ddim_steps=4))
        return rows, probes
    raise ValueError(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}")


# ------------------------------------------------------------------------------------------------------- execution
def _cell_path(out: Path, job: Cell | SpeedProbe) -> Path:
    return out / "cells" / f"{job.id}.json"


def _execute(job: Cell | SpeedProbe, out: str, threads: int) -> tuple[str, float]:
    """Run one job in this (worker) process and write its JSON atomically."""
    if threads > 0:
        torch.set_num_threads(threads)
    data = run_speed(job) if isinstance(job, SpeedProbe) else run_cell(job)
    path = _cell_path(Path(out), job)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)
    return job.id, data.get("cell_seconds", 0.0)


def run_suite(rows: list[Row], probes: list[SpeedProbe], out: Path, workers: int = 1, threads: int = 1,
              device: str = "auto", log: Callable[[str], None] = print, suite: str = "") -> dict[str, Any]:
    """Run every cell of the suite not already in `out/cells`, then aggregate. Returns the aggregate."""
    (out / "cells").mkdir(parents=True, exist_ok=True)
    jobs: dict[str, Cell | SpeedProbe] = {}
    for job in [*probes, *(c for row in rows for c in row.cells)]:
        job = replace(job, device=device)
        jobs.setdefault(job.id, job)
    todo = [j for j in jobs.values() if not _cell_path(out, j).is_file()]
    todo.sort(key=lambda j: -j.cost())
    log(f"{len(jobs)} cells, {len(jobs) - len(todo)} already in {out / 'cells'}, {len(todo)} to run")
    started = time.perf_counter()
    if workers <= 1 or len(todo) <= 1:
        for i, job in enumerate(todo, 1):
            _execute(job, str(out), threads)
            log(f"[{i}/{len(todo)}] {job.id} ({time.perf_counter() - started:.0f} s)")
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(_execute, job, str(out), threads) for job in todo]
            for i, future in enumerate(as_completed(futures), 1):
                job_id, _ = future.result()
                log(f"[{i}/{len(todo)}] {job_id} ({time.perf_counter() - started:.0f} s)")
    suite_rows = [Row(r.label, r.group, tuple(replace(c, device=device) for c in r.cells), r.strength,
                      r.defence_kind) for r in rows]
    return aggregate(suite_rows, [replace(p, device=device) for p in probes], out,
                     run_seconds=time.perf_counter() - started, suite=suite)


# ----------------------------------------------------------------------------------------------------- aggregation
def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def _pm(stat: dict, spec: str = ".1f") -> str:
    if stat is None or stat.get("mean") is None:
        return "–"
    return f"{stat['mean']:{spec}} ± {stat['std']:{spec}}" if stat["n"] > 1 else format(stat["mean"], spec)


def aggregate(rows: list[Row], probes: list[SpeedProbe], out: Path, run_seconds: float | None = None,
              suite: str = "") -> dict[str, Any]:
    """results.json, results.md, readme_section.md and plots from the cell files in `out/cells`."""
    cells: dict[str, dict] = {}
    for cell in (c for row in rows for c in row.cells):
        path = _cell_path(out, cell)
        if path.is_file():
            cells[cell.id] = json.loads(path.read_text())
    speed = [json.loads(_cell_path(out, p).read_text()) for p in probes if _cell_path(out, p).is_file()]
    table = []
    for row in rows:
        entries = {}
        for cell in row.cells:
            data = cells.get(cell.id)
            if data is None:
                continue
            entries[cell.method] = {
                "cell": cell.id, **{k: data["summary"][k] for k in data["summary"]},
                "step_ratio": data["step_ratio"], "peak_memory_mb": data["peak_memory_mb"],
                "device": data["device"], "model_name": data["model_name"], "threat": data["threat"],
            }
        table.append({"label": row.label, "group": row.group, "strength": row.strength,
                      "defence_kind": row.defence_kind, "config": asdict(row.cells[0]) if row.cells else {},
                      "methods": entries})
    results = {
        "bench_version": BENCH_VERSION, "suite": suite, "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_seconds": run_seconds, "torch": torch.__version__, "rows": table, "speed": speed,
        "cells": cells, "missing_cells": [c.id for r in rows for c in r.cells if c.id not in cells],
        "cpu_seconds": sum(c.get("cell_cpu_seconds", 0.0) for c in [*cells.values(), *speed]),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    (out / "readme_section.md").write_text(readme_section(results))
    from .bench_plots import write_plots

    results["plots"] = write_plots(results, out)
    return results


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Benchmark results ({results['suite'] or 'custom'} suite)", ""]
    any_cell = next(iter(results["cells"].values()), None)
    if any_cell:
        lines.append(f"Device: {any_cell['device_name']} ({any_cell['device']}, {any_cell['torch_threads']} torch "
                     f"thread(s) per worker); torch {results['torch']}; generated {results['generated']}"
                     + (f"; {results['run_seconds']:.0f} s to run" if results.get("run_seconds") else "")
                     + f"; {results['cpu_seconds']:.0f} CPU-seconds in all cells.")
        lines.append("")
    lines += ["## PSNR (dB, mean ± std over images and seeds), same iteration budget across each row", ""]
    lines.append("| setting | " + " | ".join(METHOD_LABELS[m] for m in METHOD_ORDER) + " |")
    lines.append("|---|" + "---:|" * len(METHOD_ORDER))
    for row in results["rows"]:
        values = [_pm(row["methods"][m]["psnr"]) if m in row["methods"] else "" for m in METHOD_ORDER]
        best = max((row["methods"][m]["psnr"]["mean"] or -1e9, m) for m in row["methods"]) if row["methods"] else None
        if best and len(row["methods"]) > 1:
            i = METHOD_ORDER.index(best[1])
            values[i] = f"**{values[i]}**"
        lines.append(f"| {row['label']} | " + " | ".join(values) + " |")
    lines += ["", "## Every metric", "",
              "t acc. and eps err. only where the client kept them private; s to 25/30 dB counts runs that got "
              "there (n/runs); step ratio = seconds per iteration / one forward+backward of the same UNet.", "",
              "| setting | method | iters | PSNR | SSIM | LPIPS | MSE | t acc. | eps err. | wall s | it/s | "
              "s to 25 dB | s to 30 dB | step ratio | peak MB | device |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in results["rows"]:
        for method in METHOD_ORDER:
            e = row["methods"].get(method)
            if e is None:
                continue
            runs = e["psnr"]["n"]
            reach = [f"{_pm(e[f'seconds_to_{d:g}db'])} ({e[f'reached_{d:g}db']}/{runs})" for d in THRESHOLDS_DB]
            lines.append(
                f"| {row['label']} | {METHOD_LABELS[method]} | {_fmt(e['iterations']['mean'], '.0f')} | "
                f"{_pm(e['psnr'])} | {_pm(e['ssim'], '.3f')} | {_pm(e['lpips'], '.3f')} | {_pm(e['mse'], '.4f')} | "
                f"{_pm(e['t_accuracy'], '.2f')} | {_pm(e['eps_error'], '.2f')} | {_pm(e['seconds'])} | "
                f"{_pm(e['iterations_per_second'])} | {reach[0]} | {reach[1]} | {_fmt(e['step_ratio'], '.1f')} | "
                f"{_fmt(e['peak_memory_mb'], '.0f')} | {e['device']} |")
    if results["speed"]:
        labels = list(dict.fromkeys(label for probe in results["speed"] for label in probe["cases"]))
        lines += ["", "## Step time as a ratio to one forward+backward of the same UNet (same process)", "",
                  "Median over interleaved repeats of (time of n + 2 steps - time of 2 steps) / n.", "",
                  "| model | optimiser | size | batch | DDIM K | fwd+bwd ms | " + " | ".join(labels) + " |",
                  "|---|---|---:|---:|---:|---:|" + "---:|" * len(labels)]
        for probe in results["speed"]:
            c = probe["config"]
            lines.append(f"| {probe['model_name']} | {c.get('optimizer', 'adam')} | {c['size']} | {c['batch']} | "
                         f"{c['ddim_steps']} | "
                         f"{probe['fwd_bwd_seconds'] * 1000:.1f} | " + " | ".join(
                             f"{probe['cases'][label]['ratio']:.1f}x" if label in probe["cases"] else ""
                             for label in labels) + " |")
    configs = {json.dumps({k: v for k, v in r["config"].items() if k not in ("method",)}, sort_keys=True)
               for r in results["rows"]}
    lines += ["", f"{len(results['cells'])} cells; {len(configs)} settings. Each cell's config, per-run numbers and "
              "PSNR-against-iterations curve are in results.json (`cells`)."]
    if results["missing_cells"]:
        lines.append(f"Missing cells (not run yet): {len(results['missing_cells'])}.")
    return "\n".join(lines) + "\n"


def readme_section(results: dict[str, Any], margin_db: float = 1.0) -> str:
    """The README's results section, stated from results.json alone: where GIDM beats the best baseline (DLG or IG)
    by more than `margin_db`, where it ties, where it loses, and how GIDM+ fares by t."""
    rows = [r for r in results["rows"] if r["methods"]]
    cells = results["cells"]
    if not rows:
        return "No results yet.\n"
    first = next(iter(cells.values()))
    models = sorted({e["model_name"] for r in rows for e in r["methods"].values()})
    runs = sorted({c["summary"]["psnr"]["n"] for c in cells.values()})
    budgets = sorted({r["config"]["iterations"] for r in rows})
    lines = [f"Numbers from `python -m gidm_core bench --suite {results['suite']}` ({first['device_name']}, "
             f"{first['device']}); model(s): {', '.join(models)}; {'/'.join(map(str, budgets))} iterations per "
             f"method in every row; {'/'.join(map(str, runs))} run(s) (images x seeds) per cell. PSNR in dB, "
             "mean over runs; full table in results.md.", ""]
    if any(m.startswith("random:") for m in models):
        lines += ["**These numbers attack a randomly initialised UNet**: it has learnt no images, so GIDM's prior "
                  "is no prior at all here; the comparison says nothing yet about trained models.", ""]

    def psnr(row: dict, method: str) -> float | None:
        entry = row["methods"].get(method)
        return None if entry is None else entry["psnr"]["mean"]

    verdicts: dict[str, list[str]] = {"beats": [], "ties": [], "loses": []}
    for row in rows:
        baselines = [(psnr(row, m), METHOD_LABELS[m]) for m in ("dlg", "ig") if psnr(row, m) is not None]
        for method in ("gidm", "gidm-latent"):
            value = psnr(row, method)
            if value is None or not baselines:
                continue
            best, name = max(baselines)
            diff = value - best
            verdict = "beats" if diff > margin_db else "loses" if diff < -margin_db else "ties"
            verdicts[verdict].append(f"{row['label']}: {METHOD_LABELS[method]} {value:.1f} vs {name} {best:.1f} "
                                     f"({diff:+.1f})")
    for verdict, title in (("beats", f"GIDM beats the best baseline (by more than {margin_db:g} dB)"),
                           ("ties", f"GIDM within {margin_db:g} dB of the best baseline"),
                           ("loses", f"GIDM loses to a baseline (by more than {margin_db:g} dB)")):
        lines.append(f"- **{title}:** " + ("; ".join(verdicts[verdict]) if verdicts[verdict] else "nowhere") + ".")
    by_t = []
    for row in rows:
        config = row["config"]
        entry = row["methods"].get("gidm-plus")
        if entry is None or config.get("knows_t", True) or config.get("t") is None:
            continue
        dlg = psnr(row, "dlg")
        by_t.append((config["t"], row["label"], entry, dlg))
    if by_t:
        lines += ["", "GIDM+ (private eps and t) by the client's timestep t:", "",
                  "| t | setting | GIDM+ PSNR | DLG PSNR (joint x0, eps) | GIDM+ t accuracy | GIDM+ eps error |",
                  "|---:|---|---:|---:|---:|---:|"]
        for t, label, entry, dlg in sorted(by_t, key=lambda item: item[0]):
            lines.append(f"| {t} | {label} | {_pm(entry['psnr'])} | {_fmt(dlg, '.1f')} | "
                         f"{_pm(entry['t_accuracy'], '.2f')} | {_pm(entry['eps_error'], '.2f')} |")
    for probe in results.get("speed", []):
        ratios = ", ".join(f"{label} {case['ratio']:.1f}x" for label, case in probe["cases"].items())
        lines += ["", f"Step time with {probe['config'].get('optimizer', 'adam')} ({probe['model_name']}, "
                  f"{probe['config']['size']} px, DDIM K = {probe['config']['ddim_steps']}; one step = one "
                  "evaluation), as a multiple of one forward+backward of the same UNet "
                  f"({probe['fwd_bwd_seconds'] * 1000:.0f} ms): {ratios}."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------- CLI
def add_bench_command(commands) -> None:
    parser = commands.add_parser("bench", help="run the benchmark grid and write results.json, results.md, plots")
    parser.add_argument("--suite", default="quick", choices=SUITES,
                        help="quick: a 32 px slice for a 2-core CPU (<10 min); full: the whole grid (GPU)")
    parser.add_argument("--out", type=Path, required=True, help="output folder; cells already there are skipped")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel worker processes (default: CPU cores on CPU, 1 on CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    parser.add_argument("--list", action="store_true", help="print the suite's cells and exit")
    parser.set_defaults(func=bench_command)


def bench_command(args) -> int:
    rows, probes = build_suite(args.suite)
    if args.list:
        for row in rows:
            for cell in row.cells:
                print(f"{row.label:50s} {cell.method:12s} {cell.id}")
        return 0
    device = resolve_device(args.device)
    workers = args.workers or (1 if device.startswith("cuda") else max(1, min(os.cpu_count() or 1, 4)))
    results = run_suite(rows, probes, args.out, workers=workers, threads=args.threads, device=args.device,
                        suite=args.suite)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'} and {len(results['plots'])} plots")
    return 0 if not results["missing_cells"] else 1
