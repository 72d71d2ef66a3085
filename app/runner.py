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
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from gidm_core.attacks.base import Event, Run
from gidm_core.client import PrivateBatch
from gidm_core.config import (
    LAYER_WEIGHTS,
    OPTIMIZERS,
    AttackConfig,
    ConfigError,
    DefenceConfig,
    ThreatModel,
    attack_config,
)
from gidm_core.data import ImageLoadError, grid, load_image, victims
from gidm_core.errors import UserError, out_of_memory, out_of_memory_message
from gidm_core.evaluation import Evaluator
from gidm_core.metrics import pair_images, to_unit
from gidm_core.models import DiffusionModel, bundled_specs, check_image_size, check_spec, load_model
from gidm_core.protocol import play

from . import figures

# ---------------------------------------------------------------------------------------------------------------
# Choices and presets
# ---------------------------------------------------------------------------------------------------------------

RANDOM_SPECS = ["random:small-32", "random:attn-32", "random:tiny-32", "random:small-64"]
SOURCES = ("Gallery", "Upload", "Webcam")
SECRETS = {"known": "eps and t known to the server (paper setting; GIDM)",
           "private": "eps and t kept private (GIDM+)"}
DEFENCES = ("none", "clip + Gaussian noise", "top-k pruning")
METHOD_LABELS = {"gidm": "GIDM", "gidm-plus": "GIDM+", "gidm-latent": "GIDM-latent", "dlg": "DLG", "ig": "IG"}
RESOLUTIONS = ("model's own", "16", "32", "64", "128")
MAX_BATCH = 8
# The app's image-size bound: the largest resolution it offers. A public server shares its memory between
# sessions, and an attack's double backward at 128 px already peaks near 20 GB on CPU (NOTES.md).
APP_MAX_SIZE = 128
ORPHAN_S = 60.0  # a run whose page stopped pulling updates for this long (tab closed) stops itself
DISPLAY_PX = 224  # each image is enlarged to about this many pixels per side, nearest-neighbour

# Hyperparameter presets (the threat part of each preset is set alongside). "Fast CPU demo" is the default: GIDM
# with the core's defaults (a short DDIM latent phase so the prior shows, then pixels, both by L-BFGS), which
# passes 40 dB on the bundled faces32 in ~15-20 s of a 2-core CPU (README, Results).
_GIDM = attack_config("gidm")
PRESETS: dict[str, dict[str, Any]] = {
    "Fast CPU demo": dict(method="gidm", secrets="known", defence="none", iterations=_GIDM.iterations, lr=0.1,
                          latent_iterations=_GIDM.latent_iterations, latent_lr=0.05, ddim_steps=_GIDM.ddim_steps,
                          distance="l2", tv_weight=0.0, lr_schedule="constant", optimizer="lbfgs",
                          layer_weights="normalized", report_every=5),
    # The released code's optimiser and distance: Adam on plain squared L2 over every tensor, K = 16.
    "Paper setting (slow on CPU)": dict(method="gidm", secrets="known", defence="none", iterations=5000, lr=0.01,
                                        latent_iterations=2500, latent_lr=0.01, ddim_steps=16, distance="l2",
                                        tv_weight=0.0, lr_schedule="constant", optimizer="adam",
                                        layer_weights="uniform", report_every=25),
    # GIDM+ follows the core's own defaults for it, at a client timestep where it works: at t = 400 it recovered
    # held-out faces at 29.9-41 dB in 1000 evaluations (~2 min); at t = 100 it is hit and miss, and it fails at t = 10
    # (eps hardly shows in x_t) and t = 800 (errors reach x0 amplified 4.6x); docs/gidm_plus.md.
    "Private eps and t (GIDM+)": dict(method="gidm-plus", secrets="private", client_t=400, defence="none",
                                      iterations=attack_config("gidm-plus").iterations,
                                      lr=attack_config("gidm-plus").lr, latent_iterations=0, latent_lr=0.05,
                                      ddim_steps=2, distance="l2", tv_weight=0.0,
                                      lr_schedule=attack_config("gidm-plus").lr_schedule,
                                      optimizer=attack_config("gidm-plus").optimizer,
                                      layer_weights=attack_config("gidm-plus").layer_weights, report_every=10),
    "Under DP (clip + noise)": dict(method="gidm", secrets="known", defence="clip + Gaussian noise", clip=1.0,
                                    sigma=0.01, keep=1.0, iterations=_GIDM.iterations, lr=0.1,
                                    latent_iterations=_GIDM.latent_iterations, latent_lr=0.05,
                                    ddim_steps=_GIDM.ddim_steps, distance="l2", tv_weight=0.0,
                                    lr_schedule="constant", optimizer="lbfgs", layer_weights="normalized",
                                    report_every=5),
}
DEFAULT_PRESET = "Fast CPU demo"

# Bounds the UI enforces (the core's own checks still apply after these).
LIMITS = {
    "iterations": (0, 20000), "latent_iterations": (0, 10000), "ddim_steps": (1, 100), "lr": (1e-6, 10.0),
    "latent_lr": (1e-6, 10.0), "tv_weight": (0.0, 100.0), "seed": (0, 2**31 - 1), "report_every": (1, 1000),
    "batch_size": (1, MAX_BATCH), "client_t": (-1, 100000), "clip": (0.0, 1e6), "sigma": (0.0, 1e3),
    "keep": (1e-6, 1.0),
}
INTEGER_FIELDS = {"iterations", "latent_iterations", "ddim_steps", "seed", "report_every", "batch_size", "client_t"}


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


def gallery_previews(items: list[GalleryItem]) -> list[tuple[Image.Image, str]]:
    out = []
    for item in items:
        try:
            out.append((_enlarge(grid(load_image(item.source, 64)), 128), item.name))
        except ImageLoadError:
            continue
    return out


# ---------------------------------------------------------------------------------------------------------------
# Settings: UI values -> validated core configs
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Settings:
    source: str = "Gallery"
    gallery: list[str] = field(default_factory=list)
    uploads: list[str] = field(default_factory=list)
    webcam: Any = None
    resolution: str = RESOLUTIONS[0]
    batch_size: int = 1
    model: str = ""
    secrets: str = "known"
    client_t: int = -1
    prior: str = "attacked"
    defence: str = "none"
    clip: float = 1.0
    sigma: float = 0.01
    keep: float = 0.1
    method: str = "gidm"
    iterations: int = _GIDM.iterations
    lr: float = 0.1
    latent_iterations: int = _GIDM.latent_iterations
    latent_lr: float = 0.05
    ddim_steps: int = _GIDM.ddim_steps
    distance: str = "l2"
    tv_weight: float = 0.0
    lr_schedule: str = "constant"
    optimizer: str = "lbfgs"
    layer_weights: str = "normalized"
    seed: int = 0
    report_every: int = 5

    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **overrides: Any) -> Settings:
        values = {k: v for k, v in PRESETS[name].items() if k in cls.__dataclass_fields__}
        return cls(**{**values, **overrides})


SETTING_FIELDS = list(Settings.__dataclass_fields__)


def field_errors(values: dict[str, Any]) -> dict[str, str]:
    """Per-control problems (empty if none), so the UI can refuse a bad value at the control that holds it."""
    errors: dict[str, str] = {}
    for name, (low, high) in LIMITS.items():
        value = values.get(name)
        if value is None or value == "":
            errors[name] = "required"
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            errors[name] = f"not a number: {value!r}"
            continue
        if not math.isfinite(number):
            errors[name] = "must be a finite number"
        elif name in INTEGER_FIELDS and number != int(number):
            errors[name] = f"must be a whole number, got {value}"
        elif not low <= number <= high:
            errors[name] = f"must be between {low:g} and {high:g}, got {value}"
    if values.get("method") not in METHOD_LABELS:
        errors["method"] = f"unknown method {values.get('method')!r}"
    if values.get("distance") not in ("l2", "cosine"):
        errors["distance"] = "choose l2 or cosine"
    if values.get("lr_schedule") not in ("constant", "cosine"):
        errors["lr_schedule"] = "choose constant or cosine"
    if values.get("optimizer") not in OPTIMIZERS:
        errors["optimizer"] = f"choose one of {', '.join(OPTIMIZERS)}"
    if values.get("layer_weights") not in LAYER_WEIGHTS:
        errors["layer_weights"] = f"choose one of {', '.join(LAYER_WEIGHTS)}"
    if values.get("defence") not in DEFENCES:
        errors["defence"] = f"choose one of {', '.join(DEFENCES)}"
    if values.get("secrets") not in SECRETS:
        errors["secrets"] = "choose known or private"
    if values.get("resolution") not in RESOLUTIONS:
        errors["resolution"] = f"choose one of {', '.join(RESOLUTIONS)}"
    for name in ("model", "prior"):
        spec = str(values.get(name) or "").strip()
        if name == "prior" and spec in ("", "attacked"):
            continue
        try:
            check_spec(spec, max_size=APP_MAX_SIZE)
        except UserError as err:
            errors[name] = str(err)
    if "keep" not in errors and values.get("defence") == "top-k pruning" and float(values["keep"]) >= 1:
        errors["keep"] = "top-k keeps everything at 1.0: choose a fraction below 1"
    if values.get("method") == "gidm-latent" and "latent_iterations" not in errors \
            and int(float(values["latent_iterations"])) < 1:
        errors["latent_iterations"] = "GIDM-latent needs at least 1 latent iteration"
    if not errors and values.get("method") != "gidm-plus" and _total(values) == 0:
        errors["iterations"] = "the run would do nothing: give it some iterations"
    source = values.get("source")
    if source == "Upload" and not values.get("uploads"):
        errors["uploads"] = "upload at least one image (or pick the gallery)"
    elif source == "Webcam" and values.get("webcam") is None:
        errors["webcam"] = "take a webcam picture first (or pick the gallery)"
    elif source not in SOURCES:
        errors["source"] = f"choose one of {', '.join(SOURCES)}"
    return errors


def _total(values: dict[str, Any]) -> int:
    latent = int(float(values["latent_iterations"])) if values.get("method") in ("gidm", "gidm-latent") else 0
    pixel = int(float(values["iterations"])) if values.get("method") != "gidm-latent" else 0
    return latent + pixel


def parse(values: dict[str, Any]) -> Settings:
    """Settings from raw UI values; raises ConfigError naming the first bad control."""
    errors = field_errors(values)
    if errors:
        name, message = next(iter(errors.items()))
        raise ConfigError(f"{name.replace('_', ' ')}: {message}")
    clean = dict(values)
    for name in LIMITS:
        clean[name] = int(float(values[name])) if name in INTEGER_FIELDS else float(values[name])
    clean["gallery"] = list(values.get("gallery") or [])
    uploads = values.get("uploads") or []
    clean["uploads"] = [str(getattr(u, "name", u)) for u in (uploads if isinstance(uploads, list) else [uploads])]
    clean["model"] = str(values["model"]).strip()
    clean["prior"] = str(values.get("prior") or "attacked").strip() or "attacked"
    return Settings(**{k: clean[k] for k in SETTING_FIELDS if k in clean})


def configs(settings: Settings) -> tuple[AttackConfig, ThreatModel]:
    defence = DefenceConfig()
    if settings.defence == "clip + Gaussian noise":
        defence = DefenceConfig(clip=settings.clip, sigma=settings.sigma)
    elif settings.defence == "top-k pruning":
        defence = DefenceConfig(keep=settings.keep)
    private = settings.secrets == "private"
    threat = ThreatModel(knows_eps=not private, knows_t=not private, prior=settings.prior, defence=defence)
    config = attack_config(settings.method, iterations=settings.iterations, lr=settings.lr,
                           latent_iterations=settings.latent_iterations, latent_lr=settings.latent_lr,
                           ddim_steps=settings.ddim_steps, distance=settings.distance, tv_weight=settings.tv_weight,
                           lr_schedule=settings.lr_schedule, optimizer=settings.optimizer,
                           layer_weights=settings.layer_weights, seed=settings.seed,
                           report_every=settings.report_every)
    return config, threat


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
        return f"#{self.number} {METHOD_LABELS[self.settings.method]} on {self.model_name}" + (
            f" ({psnr:.1f} dB)" if psnr is not None else "")


class Session:
    """One user's runs, their current run's stop flag, and the runs waiting in the queue. Created per browser
    session by gr.State, which calls `close` when the session ends."""

    def __init__(self) -> None:
        self.runs: list[RunRecord] = []
        self.stop_event: threading.Event | None = None
        self.counter = itertools.count(1)
        self.workdir: Path | None = None
        self.queued: deque[float] = deque()  # when each run still waiting in the queue was submitted
        self.stopped_at = -math.inf

    def __deepcopy__(self, memo: dict) -> Session:  # gr.State deep-copies its initial value once per session
        return Session()

    def submit(self) -> None:
        """Note a run entering the queue (called at submission, before the queue holds it), so that Stop pressed
        while it waits can cancel it."""
        self.queued.append(time.monotonic())

    def cancelled_while_queued(self) -> bool:
        """Called when a run leaves the queue: True if Stop was pressed after it was submitted."""
        return bool(self.queued) and self.queued.popleft() < self.stopped_at

    def stop(self) -> bool:
        """Stop the current run within one step and cancel this session's queued runs; True if there was one."""
        self.stopped_at = time.monotonic()
        running = self.running
        if running:
            self.stop_event.set()
        return running or bool(self.queued)

    def close(self) -> None:
        """The session ended: stop its run and delete its exports."""
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
    if session.running:
        yield Frame("A run is already going in this session: press Stop first.", error=True)
        return
    if session.cancelled_while_queued():
        yield Frame("**Stopped** before it started: Stop was pressed while this run waited in the queue.")
        return
    stop = threading.Event()
    session.stop_event = stop
    worker: threading.Thread | None = None
    size: int | str = settings.resolution
    try:
        yield Frame(f"Loading {settings.model} ...")
        try:
            config, threat = configs(settings)
            device = device_name()
            model = get_model(settings.model, device)
            size = model.image_size if settings.resolution == RESOLUTIONS[0] else int(settings.resolution)
            check_image_size(size, APP_MAX_SIZE)
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
        except (UserError, ValueError, RuntimeError, MemoryError) as err:
            if isinstance(err, (RuntimeError, MemoryError)) and not out_of_memory(err):
                raise
            message = out_of_memory_message(size, settings.batch_size) if out_of_memory(err) else _one_line(err)
            yield Frame(f"**Cannot start:** {message}", error=True)
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
                events.put(MemoryError(out_of_memory_message(size, x0.shape[0])) if out_of_memory(err) else err)
            finally:
                events.put(done)

        worker = threading.Thread(target=work, name="gidm-attack", daemon=True)
        worker.start()
        yield from _frames(session, settings, run, batch, events, done, named, model, threat, config, size,
                           started, min_interval, alive)
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=30)
        if session.stop_event is stop:
            session.stop_event = None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _frames(session: Session, settings: Settings, run: Run, batch: PrivateBatch, events: queue.Queue, done: object,
            named, model: DiffusionModel, threat: ThreatModel, config: AttackConfig, size: int, started: float,
            min_interval: float, alive: list[float]):
    truth = batch.x0
    trace: list[dict] = []
    film: list[tuple[torch.Tensor, str]] = []
    latest: Event | None = None
    error: str | None = None
    last_shown = 0.0
    first_image_s: float | None = None
    time_to_30: float | None = None
    original_img = show(truth)
    finished = False
    fresh = False  # a scored event arrived since the last frame
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
            yield _live_frame(run, latest, truth, original_img, trace, batch, config, settings, started)
        elif latest is None and not finished and due and isinstance(item, Event) and item.phase == "timestep":
            last_shown = time.perf_counter()
            yield Frame(f"Timestep: {item.message}", original=original_img)

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
            f"PSNR {metrics['psnr']:.2f} dB · SSIM {metrics['ssim']:.3f} · LPIPS {metrics['lpips']:.3f}"
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


def _live_frame(run: Run, event: Event, truth: torch.Tensor, original_img: Image.Image, trace: list[dict],
                batch: PrivateBatch, config: AttackConfig, settings: Settings, started: float) -> Frame:
    ctx = run.context
    history = list(ctx.history)
    recon = paired(event.reconstruction, truth)
    it, total = event.iteration, max(event.total_iterations, 1)
    rate = _rate(trace)
    eta = (total - it) / rate if rate > 0 else float("nan")
    m = event.metrics
    parts = [f"**Iteration {it}/{total}**", f"phase **{event.phase}**",
             f"{rate:.1f} it/s" if rate > 0 else "", f"ETA {eta:.0f} s" if math.isfinite(eta) else "",
             f"PSNR {m['psnr']:.1f} dB" if "psnr" in m else "", f"SSIM {m['ssim']:.3f}" if "ssim" in m else ""]
    return Frame(" · ".join(p for p in parts if p), original_img, show(recon), difference(recon, truth),
                 figures.loss_figure(history, dict(ctx.phase_starts), config.total_iterations),
                 figures.metrics_figure(trace), figures.t_figure(trace, batch.t.tolist(), ctx.threat.knows_t))


def _rate(trace: list[dict], window: int = 6) -> float:
    """Recent iterations per second, from the events' iteration numbers and the attack's own clock."""
    points = [(row["elapsed"], row["iteration"]) for row in trace if "elapsed" in row][-window:]
    if len(points) < 2 or points[-1][0] <= points[0][0]:
        return 0.0
    return (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
