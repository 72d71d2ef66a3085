"""Turns the core's event stream into UI updates: settings -> validated configs -> a run -> `Frame`s.

The app adds no attack logic. A run is the core's `protocol.play` iterated in a worker thread, its events scored by
the core's `Evaluator`; this module only throttles them into frames (images, figures, status) for the UI, keeps the
session's finished runs for comparison and export, and lets a Stop button end the run within one step.

Everything a user can change lives in their `Session` (one per browser tab / API client). The only process-wide
object is a cache of loaded models, which are read-only during attacks and are copied before each run anyway.
"""

from __future__ import annotations

import copy
import itertools
import math
import queue
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gidm_core.attacks.base import Event, Run
from gidm_core.client import PrivateBatch
from gidm_core.config import AttackConfig, ConfigError, ThreatModel
from gidm_core.data import ImageLoadError, grid, load_image, victims
from gidm_core.evaluation import Evaluator
from gidm_core.metrics import pair_images, to_unit
from gidm_core.models import DiffusionModel, ModelLoadError, bundled_specs, load_model
from gidm_core.protocol import play

from . import figures
from .settings import METHOD_LABELS, RESOLUTIONS, Settings, configs, hints

# ---------------------------------------------------------------------------------------------------------------
# Choices
# ---------------------------------------------------------------------------------------------------------------

RANDOM_SPECS = ["random:small-32", "random:attn-32", "random:tiny-32", "random:small-64"]
ORPHAN_S = 60.0  # a run whose page stopped pulling updates for this long (tab closed) stops itself
HEARTBEAT_S = 0.75  # the status line updates at least this often, however slow the attack's steps
DISPLAY_PX = 224  # each image is enlarged to about this many pixels per side, nearest-neighbour

# What a viewer sees at a given PSNR (dB, on [0, 1] images), judged on the bundled 32 px faces: below 15 the
# reconstruction is noise; by 20 a face-shaped blur; by 25 the face is recognisable; by 35 it is a close copy with
# faint speckle; from 45 the difference map is black (near-exact).
VERDICTS = ((45.0, "near-exact"), (35.0, "a close copy"), (25.0, "recognisable"), (20.0, "a rough likeness"),
            (15.0, "a blur"), (float("-inf"), "noise"))


def verdict(psnr: float | None) -> str:
    """The PSNR band in words, e.g. 'recognisable'."""
    if psnr is None or not math.isfinite(psnr):
        return "near-exact" if psnr == float("inf") else ""
    return next(words for floor, words in VERDICTS if psnr >= floor)


def default_model() -> str:
    """The first bundled model, preferring faces32; a seeded random model when none is bundled (checked now)."""
    specs = bundled_specs()
    for spec in specs:
        if spec == "faces32":
            return spec
    return specs[0] if specs else RANDOM_SPECS[0]


def model_choices() -> list[str]:
    return bundled_specs() + RANDOM_SPECS


# ---------------------------------------------------------------------------------------------------------------
# Victim images: the bundled held-out ones, else scikit-image photos (checked when called, not at import)
# ---------------------------------------------------------------------------------------------------------------

_SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera")


@dataclass(frozen=True)
class GalleryItem:
    name: str
    source: Any  # a Path, or an ndarray for the scikit-image fallback
    bundled: bool  # True if the CLI can name it with --image <name>
    caption: str


def gallery_items() -> list[GalleryItem]:
    items = []
    bundled = victims()
    faces = [v for v in bundled if "face" in v.kind.lower()]
    for v in faces + [v for v in bundled if v not in faces]:
        if v.path.is_file():
            items.append(GalleryItem(v.name, v.path, True, f"{v.name} ({v.kind})"))
    if items:
        return items
    from skimage import data as skdata

    for name in _SKIMAGE_PHOTOS:
        try:
            array = getattr(skdata, name)()
        except Exception:  # noqa: BLE001  (a scikit-image photo that needs a download is simply left out)
            continue
        items.append(GalleryItem(f"{name} (scikit-image)", array, False, f"{name}: scikit-image sample photo"))
    return items


def previews(sources: list[tuple[Any, str]]) -> list[tuple[Image.Image, str]]:
    """(thumbnail, caption) for each readable (image source, caption); unreadable ones are left out."""
    out = []
    for source, caption in sources:
        try:
            out.append((_enlarge(grid(load_image(source, 64)), 128), caption))
        except ImageLoadError:
            continue
    return out


def gallery_previews(items: list[GalleryItem]) -> list[tuple[Image.Image, str]]:
    return previews([(item.source, item.name) for item in items])


# ---------------------------------------------------------------------------------------------------------------
# Models: a small process-wide cache of read-only models; every run gets its own copy
# ---------------------------------------------------------------------------------------------------------------

_MODELS: OrderedDict[tuple[str, str], DiffusionModel] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODEL_CACHE_SIZE = 4


def get_model(spec: str, device: str) -> DiffusionModel:
    """A private copy of the model `spec` on `device`; loads (outside the lock, so a slow hub download does not
    hold up other sessions) and caches the first time."""
    key = (spec, device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
    if model is None:
        model = load_model(spec, device)
        with _MODELS_LOCK:
            _MODELS[key] = model
            while len(_MODELS) > _MODEL_CACHE_SIZE:
                _MODELS.popitem(last=False)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
    return copy.deepcopy(model)


def device_name() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------------------------
# Session state and run records
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class RunRecord:
    number: int
    settings: Settings
    model_name: str
    threat: str
    size: int
    original: torch.Tensor  # (B, C, H, W) in [-1, 1]
    reconstruction: torch.Tensor  # paired to `original`
    victims: list[tuple[str, torch.Tensor, bool]]  # (name, (1, C, H, W) tensor, bundled?)
    t_true: list[int]
    t_estimate: list[int] | None
    metrics: dict[str, float]
    history: list[dict]
    phase_starts: dict[str, int]
    trace: list[dict]
    filmstrip: list[tuple[torch.Tensor, str]]
    status: str
    message: str
    seconds: float
    iterations: int
    matching_loss: float
    first_image_s: float | None
    time_to_30db_s: float | None
    config: dict
    command: str = ""

    @property
    def label(self) -> str:
        psnr = self.metrics.get("psnr")
        victims = ", ".join(v[0] for v in self.victims[:2]) + (" ..." if len(self.victims) > 2 else "")
        return f"#{self.number} {METHOD_LABELS[self.settings.method]} on {victims} ({self.model_name})" + (
            f", {psnr:.1f} dB" if psnr is not None else "")


class Session:
    """One user's runs and their current run's stop flag. Created per browser session by gr.State."""

    def __init__(self) -> None:
        self.runs: list[RunRecord] = []
        self.stop_event: threading.Event | None = None
        self.counter = itertools.count(1)
        self.workdir: Path | None = None

    def __deepcopy__(self, memo: dict) -> Session:  # gr.State deep-copies its initial value once per session
        return Session()

    def stop(self) -> bool:
        if self.stop_event is not None and not self.stop_event.is_set():
            self.stop_event.set()
            return True
        return False

    def claim(self) -> threading.Event | None:
        """The stop flag of a new job (a run or a sweep), or None while another job of this session is going."""
        if self.running:
            return None
        self.stop_event = threading.Event()
        return self.stop_event

    def release(self, stop: threading.Event) -> None:
        if self.stop_event is stop:
            self.stop_event = None

    def workfolder(self) -> Path:
        """This session's folder for exports, made on first use; `close` deletes it."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="gidm-session-"))
        return self.workdir

    def close(self) -> None:
        """End of the session (gr.State's delete_callback): stop its run and delete its files."""
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        return self.stop_event is not None and not self.stop_event.is_set()

    def find(self, label: str | None) -> RunRecord | None:
        for record in self.runs:
            if record.label == label:
                return record
        return None

    def table(self) -> list[list[Any]]:
        rows = []
        for r in self.runs:
            m = r.metrics
            rows.append([r.number, METHOD_LABELS[r.settings.method], r.model_name, r.size, r.settings.batch_size,
                         r.threat, r.iterations, _fmt(m.get("psnr"), 2), _fmt(m.get("ssim"), 3),
                         _fmt(m.get("lpips"), 3), _fmt(m.get("t_accuracy"), 2), _fmt(m.get("eps_error"), 3),
                         round(r.seconds, 1), r.status])
        return rows


TABLE_HEADERS = ["#", "method", "model", "px", "batch", "threat", "iters", "PSNR", "SSIM", "LPIPS", "t acc",
                 "eps err", "seconds", "status"]


def _fmt(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(float(value), digits)


# ---------------------------------------------------------------------------------------------------------------
# Frames: what the UI shows at each update
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Frame:
    status: str
    original: Image.Image | None = None
    reconstruction: Image.Image | None = None
    difference: Image.Image | None = None
    loss_figure: Any = None
    metrics_figure: Any = None
    t_figure: Any = None
    filmstrip: list[tuple[Image.Image, str]] | None = None
    finished: RunRecord | None = None
    error: bool = False


def _enlarge(image: Image.Image, target: int = DISPLAY_PX) -> Image.Image:
    scale = max(1, round(target / max(image.size)))
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def show(batch: torch.Tensor) -> Image.Image:
    return _enlarge(grid(batch), DISPLAY_PX * min(batch.shape[0], 4))


def difference(recon: torch.Tensor, truth: torch.Tensor) -> Image.Image:
    """|reconstruction - original| per pixel, averaged over channels and amplified 4x, as a grey map."""
    diff = ((recon - truth).abs().mean(1, keepdim=True) * 2).clamp(0, 2) - 1  # [0, 1] error -> [-1, 1] display
    return show(diff.expand(-1, 3, -1, -1))


def paired(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    return recon[pair_images(to_unit(recon), to_unit(truth))]


# ---------------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------------

def load_victims(settings: Settings, size: int, channels: int) -> list[tuple[str, torch.Tensor, bool]]:
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


def stream(session: Session, settings: Settings, min_interval: float = 0.4):
    """Generator of `Frame`s for one run. Errors end it with a one-line message in the status; never raises for
    bad input. Stopping (session.stop()) ends the attack within one step and keeps its best guess."""
    started = time.perf_counter()
    stop = session.claim()
    if stop is None:
        yield Frame("A run is already going in this session: press Stop first.", error=True)
        return
    worker: threading.Thread | None = None
    try:
        notes = "".join(f"  \n*Note:* {hint}" for hint in hints(settings))
        yield Frame(f"Loading {settings.model} ..." + notes)
        try:
            config, threat = configs(settings)
            device = device_name()
            model = get_model(settings.model, device)
            size = model.image_size if settings.resolution == RESOLUTIONS[0] else int(settings.resolution)
            model.check_size(size)
            prior = None if threat.prior == "attacked" else get_model(threat.prior, device)
            named = load_victims(settings, size, model.channels)
            x0 = torch.cat([v[1] for v in named])
            if settings.client_t >= model.num_train_timesteps:
                raise ConfigError(f"client t must be below {model.num_train_timesteps} for {model.name}")
            t = None if settings.client_t < 0 else [settings.client_t]
            played = play(model, x0, threat, config, client_seed=settings.seed, t=t, prior=prior, stop=stop,
                          lpips_every=5)
            batch, run = played.batch, played.run
        except (ConfigError, ImageLoadError, ModelLoadError, ValueError) as err:
            yield Frame(f"**Cannot start:** {_one_line(err)}", error=True)
            return

        events: queue.Queue = queue.Queue()
        done = object()
        alive = [time.perf_counter()]  # when the UI last pulled events; a run nobody watches stops itself

        def work() -> None:
            torch.set_grad_enabled(True)
            try:
                for event in played.events():
                    events.put(event)
                    if time.perf_counter() - alive[0] > ORPHAN_S:
                        stop.set()
            except Exception as err:  # noqa: BLE001  (shown to the user; the app keeps serving)
                events.put(err)
            finally:
                events.put(done)

        worker = threading.Thread(target=work, name="gidm-attack", daemon=True)
        worker.start()
        yield from _frames(session, settings, run, batch, events, done, named, model, threat, config, size,
                           started, min_interval, alive, notes)
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=30)
        session.release(stop)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _frames(session: Session, settings: Settings, run: Run, batch: PrivateBatch, events: queue.Queue, done: object,
            named, model: DiffusionModel, threat: ThreatModel, config: AttackConfig, size: int, started: float,
            min_interval: float, alive: list[float], notes: str = ""):
    truth = batch.x0
    trace: list[dict] = []
    curve: list[dict] = []  # the matching loss at each event, and where each phase began: the live loss plot
    phase_starts: dict[str, int] = {}
    film: list[tuple[torch.Tensor, str]] = []
    latest: Event | None = None
    error: str | None = None
    last_shown = 0.0
    first_image_s: float | None = None
    time_to_30: float | None = None
    original_img = show(truth)
    finished = False
    fresh = False  # a scored event arrived since the last frame
    shown = "**Starting the attack** ..."  # the last live status, repeated with the time while steps are slow
    began = time.perf_counter()
    while not finished:
        alive[0] = time.perf_counter()
        try:
            item = events.get(timeout=0.25)
        except queue.Empty:
            item = None
        if item is done:
            finished = True
        elif isinstance(item, Exception):
            error = _one_line(item)
        elif isinstance(item, Event):
            if item.losses and item.kind != "error":
                latest = item
                phase_starts.setdefault(item.phase, item.iteration)
                curve.append({"iteration": item.iteration, **item.losses})
                fresh = True
                now = time.perf_counter() - started
                if first_image_s is None:
                    first_image_s = now
                psnr = item.metrics.get("psnr")
                if time_to_30 is None and psnr is not None and psnr >= 30:
                    time_to_30 = now
                trace.append({"iteration": item.iteration, "phase": item.phase, "elapsed": item.elapsed,
                              **item.metrics,
                              "t_estimate": list(item.t_estimate) if item.t_estimate else None})
                if item.kind in ("phase", "progress"):
                    film.append((item.reconstruction, f"{item.iteration}: {psnr:.0f} dB"
                                 if psnr is not None else f"{item.iteration}"))
            elif item.kind == "error":
                error = item.message
            elif item.phase == "timestep":
                trace.append({"iteration": item.iteration, "phase": "timestep", "elapsed": item.elapsed,
                              "t_estimate": list(item.t_estimate) if item.t_estimate else None,
                              "message": item.message})
        due = time.perf_counter() - last_shown >= min_interval
        if fresh and not finished and (due or (isinstance(item, Event) and item.kind == "phase")):
            last_shown = time.perf_counter()
            fresh = False
            frame = _live_frame(latest, truth, original_img, trace, curve, phase_starts, batch, config, threat,
                                notes)
            shown = frame.status
            yield frame
        elif latest is None and not finished and due and isinstance(item, Event) and item.phase == "timestep":
            last_shown = time.perf_counter()
            yield Frame(f"Timestep: {item.message}", original=original_img)
        elif not finished and time.perf_counter() - max(last_shown, began) >= HEARTBEAT_S:
            # Slow steps (the paper setting's K = 16 latent phase): the screen still moves once a second.
            last_shown = time.perf_counter()
            yield Frame(f"{shown}  \n*Working: {last_shown - started:.0f} s so far; a new snapshot every "
                        f"{config.report_every} iterations.*")

    result = run.result
    if result is None:
        yield Frame(f"**The run ended without an image:** {error or 'no finite guess'}", original=original_img,
                    error=True)
        return
    evaluator = Evaluator(batch)
    metrics = evaluator.score_result(result)
    recon = paired(result.reconstruction, truth)
    status = result.status if error is None or result.status != "done" else "error"
    message = result.message if error is None else error
    record = RunRecord(
        number=next(session.counter), settings=settings, model_name=model.name, threat=threat.describe(),
        size=size, original=truth, reconstruction=recon, victims=named, t_true=batch.t.tolist(),
        t_estimate=list(result.t_estimate) if result.t_estimate else None, metrics=metrics,
        history=list(result.history), phase_starts=dict(result.phase_starts), trace=trace,
        filmstrip=_thin(film, 8) + [(result.reconstruction, f"final {metrics['psnr']:.1f} dB")],
        status=status, message=message, seconds=result.seconds, iterations=result.iterations,
        matching_loss=result.matching_loss, first_image_s=first_image_s, time_to_30db_s=time_to_30,
        config=dict(config.__dict__))
    from .export import rerun_command

    record.command = rerun_command(record)
    session.runs.append(record)
    verb = {"done": "Finished", "stopped": "Stopped", "error": "Ended early"}.get(status, status)
    text = (f"**{verb}** after {result.iterations} iterations in {result.seconds:.1f} s: "
            f"**{verdict(metrics['psnr'])}**, PSNR {metrics['psnr']:.2f} dB · SSIM {metrics['ssim']:.3f} · "
            f"LPIPS {metrics['lpips']:.3f}"
            + (f" · t {record.t_estimate} (true {record.t_true})" if batch.t is not None and not threat.knows_t
               else "")
            + (f" · eps error {metrics['eps_error']:.3f}" if "eps_error" in metrics else "")
            + (f"  \n{message}" if status != "done" and message else "")
            + (f"  \nFirst image after {first_image_s:.1f} s" if first_image_s is not None else "")
            + (f"; 30 dB after {time_to_30:.1f} s." if time_to_30 is not None else "."))
    yield Frame(text, original_img, show(recon), difference(recon, truth),
                figures.loss_figure(result.history, result.phase_starts, config.total_iterations),
                figures.metrics_figure(trace), figures.t_figure(trace, batch.t.tolist(), threat.knows_t),
                [(show(img[:4]), caption) for img, caption in record.filmstrip], finished=record)


def _thin(items: list, count: int) -> list:
    if len(items) <= count:
        return list(items)
    picks = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


def _live_frame(event: Event, truth: torch.Tensor, original_img: Image.Image, trace: list[dict],
                curve: list[dict], phase_starts: dict[str, int], batch: PrivateBatch, config: AttackConfig,
                threat: ThreatModel, notes: str) -> Frame:
    recon = paired(event.reconstruction, truth)
    it, total = event.iteration, max(event.total_iterations, 1)
    rate = _rate(trace)
    eta = (total - it) / rate if rate > 0 else float("nan")
    m = event.metrics
    parts = [f"**Iteration {it}/{total}**", f"phase **{event.phase}**",
             f"{rate:.1f} it/s" if rate > 0 else "", f"ETA {eta:.0f} s" if math.isfinite(eta) else "",
             f"**{verdict(m['psnr'])}**, PSNR {m['psnr']:.1f} dB" if "psnr" in m else "",
             f"SSIM {m['ssim']:.3f}" if "ssim" in m else ""]
    return Frame(" · ".join(p for p in parts if p) + notes, original_img, show(recon), difference(recon, truth),
                 figures.loss_figure(curve, phase_starts, config.total_iterations),
                 figures.metrics_figure(trace), figures.t_figure(trace, batch.t.tolist(), threat.knows_t))


def _rate(trace: list[dict], window: int = 6) -> float:
    """Recent iterations per second, from the events' iteration numbers and the attack's own clock."""
    points = [(row["elapsed"], row["iteration"]) for row in trace if "elapsed" in row][-window:]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return 0.0
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
