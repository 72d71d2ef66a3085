"""What a user can set, and how raw UI values become validated core configs.

One table (`CONTROLS`) names every control's tab and label, so a refused Run can say where the bad value is; one
function (`applies`) says which controls matter for the current method, optimiser, defence and source, so the UI
hides the others and validation ignores them; `hints` says what a valid but surprising combination will do.
Numbers are typed as text and parsed here (a comma is refused, never read as a thousands separator).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gidm_core.config import (
    CLIENT_OPTIMIZERS,
    LAYER_WEIGHTS,
    MAX_LOCAL_STEPS,
    MAX_STARTS,
    NOISE_POLICIES,
    OPTIMIZERS,
    AttackConfig,
    ConfigError,
    DefenceConfig,
    LocalTraining,
    ThreatModel,
    attack_config,
)
from gidm_core.config import CONTROLS as CONTROL_UPDATES
from gidm_core.errors import UserError
from gidm_core.methods import METHOD_LABELS, REGISTRY, spec
from gidm_core.models import check_spec
from gidm_core.privacy import describe as dp_budget
from gidm_core.scenario import Scenario

from .presets import DEFAULT_PRESET, PRESETS

SOURCES = ("Gallery", "Upload", "Webcam")
SECRETS = {"known": "eps and t known to the server (paper setting; GIDM)",
           "private": "eps and t kept private (GIDM+)"}
DEFENCES = ("none", "clip + Gaussian noise", "top-k pruning")
CLIENT_UPDATES = {"fedsgd": "one gradient (FedSGD)", "fedavg": "its weight delta after local training (FedAvg)"}
# The app lists the paper's full attacks first, then the latent-only ablation, then the pixel baselines; derived from
# the registry so that a new method appears here without an edit.
METHODS = tuple(sorted(REGISTRY, key=lambda m: (not spec(m).latent_phase, not spec(m).pixel_phase)))
RESOLUTIONS = ("model's own", "16", "32", "64", "128")
# A batch's attack differentiates the UNet's gradient (double backward) for every image at once, so its memory grows
# with batch x pixels: 16 images up to 32 px (B = 16 peaked at 1.3 GB on faces32, 7.0 GB on the 35.7 M-parameter
# DDPM UNet), 8 above, where a larger UNet's B = 1 evaluation alone nears 20 GB at 128 px (scripts/batch_memory.py,
# docs/app.md).
MAX_BATCH = 16
SMALL_IMAGE_PX = 32
MAX_BATCH_LARGE = 8
# The app's image-size bound: the largest resolution it offers. A public server shares its memory between
# sessions, and an attack's double backward at 128 px already peaks near 20 GB on CPU (measured
# on our 2-core machine).
APP_MAX_SIZE = 128

_GIDM = attack_config("gidm")  # the defaults a control shows before any preset


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
    control: str = "none"
    client_update: str = "fedsgd"
    local_steps: int = 4
    client_optimizer: str = "adamw"
    client_lr: float = 1e-3
    weight_decay: float = 0.01
    noise_per_step: str = "fresh"
    method: str = "gidm"
    pixel_iterations: int = _GIDM.pixel_iterations
    lr: float = 0.1
    latent_iterations: int = _GIDM.latent_iterations
    latent_lr: float = 0.05
    ddim_steps: int = _GIDM.ddim_steps
    distance: str = "l2"
    tv_weight: float = 0.0
    lr_schedule: str = "constant"
    optimizer: str = "lbfgs"
    layer_weights: str = "normalized"
    client_seed: int = 0
    attack_seed: int = 0
    starts: int = 1
    report_every: int = 5
    plateau: int = 0

    @classmethod
    def from_preset(cls, name: str = DEFAULT_PRESET, **overrides: Any) -> Settings:
        values = {k: v for k, v in PRESETS[name].items() if k in cls.__dataclass_fields__}
        return cls(**{**values, **overrides})


SETTING_FIELDS = list(Settings.__dataclass_fields__)

# Every control: (tab, label). The tab names are also the Tabs' ids, so a refusal can switch to the right one.
TABS = ("Victim", "Model", "Threat", "Attack")
CONTROLS: dict[str, tuple[str, str]] = {
    "source": ("Victim", "Source"), "gallery": ("Victim", "Picked images"), "uploads": ("Victim", "Upload images"),
    "webcam": ("Victim", "Webcam"), "resolution": ("Victim", "Resolution (px)"),
    "batch_size": ("Victim", "Batch size"),
    "model": ("Model", "Attacked model"),
    "secrets": ("Threat", "Noise eps and timestep t"), "client_t": ("Threat", "Client's timestep t"),
    "prior": ("Threat", "Prior for GIDM's sampler"), "defence": ("Threat", "Client's defence"),
    "clip": ("Threat", "Clip norm"), "sigma": ("Threat", "Noise sigma"), "keep": ("Threat", "Top-k: fraction kept"),
    "control": ("Threat", "Control run"),
    "client_seed": ("Threat", "Client's secret seed"),
    "client_update": ("Threat", "The client shares"), "local_steps": ("Threat", "Local steps E"),
    "client_optimizer": ("Threat", "Client's optimiser"), "client_lr": ("Threat", "Client's learning rate"),
    "weight_decay": ("Threat", "Client's weight decay"), "noise_per_step": ("Threat", "Noise at each local step"),
    "method": ("Attack", "Method"), "pixel_iterations": ("Attack", "Pixel iterations"),
    "lr": ("Attack", "Pixel learning rate"), "latent_iterations": ("Attack", "Phase 1 iterations (latent)"),
    "latent_lr": ("Attack", "Phase 1 learning rate"), "ddim_steps": ("Attack", "DDIM steps K"),
    "distance": ("Attack", "Gradient distance"), "tv_weight": ("Attack", "TV weight"),
    "lr_schedule": ("Attack", "Learning-rate schedule"), "optimizer": ("Attack", "Optimiser"),
    "layer_weights": ("Attack", "Layer weights"), "attack_seed": ("Attack", "Attacker's seed"),
    "starts": ("Attack", "Starts (the best by matching loss)"), "report_every": ("Attack", "Update every (iterations)"),
    "plateau": ("Attack", "Stop when converged (window)"),
}
assert set(CONTROLS) == set(SETTING_FIELDS)

# The controls a preset fills in; the ones a sweep cell fixes (the victim and model stay the main view's); the ones
# a method's own defaults reset when it is picked (its matching, optimiser and latent phase: GIDM runs one, GIDM+
# by default not; not the pixel budget the user chose).
PRESET_FIELDS = tuple(name for name in SETTING_FIELDS if any(name in preset for preset in PRESETS.values()))
CELL_FIELDS = tuple(name for name in SETTING_FIELDS if CONTROLS[name][0] in ("Threat", "Attack"))
METHOD_FIELDS = ("distance", "tv_weight", "lr", "lr_schedule", "optimizer", "layer_weights", "latent_iterations")

# Bounds the UI enforces (the core's own checks still apply after these).
LIMITS = {
    "pixel_iterations": (0, 20000), "latent_iterations": (0, 10000), "ddim_steps": (1, 100), "lr": (1e-6, 10.0),
    "latent_lr": (1e-6, 10.0), "tv_weight": (0.0, 100.0), "client_seed": (0, 2**31 - 1), "attack_seed": (0, 2**31 - 1),
    "report_every": (1, 1000), "batch_size": (1, MAX_BATCH), "client_t": (-1, 100000), "clip": (0.0, 1e6),
    "sigma": (0.0, 1e3), "keep": (1e-6, 1.0), "plateau": (0, 10000), "local_steps": (1, MAX_LOCAL_STEPS),
    "client_lr": (1e-6, 10.0), "weight_decay": (0.0, 10.0), "starts": (1, MAX_STARTS),
}
CHOICES = {"method": METHODS, "distance": ("l2", "cosine"), "lr_schedule": ("constant", "cosine"),
           "optimizer": OPTIMIZERS, "layer_weights": LAYER_WEIGHTS, "defence": DEFENCES, "secrets": tuple(SECRETS),
           "resolution": RESOLUTIONS, "source": SOURCES, "client_update": tuple(CLIENT_UPDATES),
           "client_optimizer": CLIENT_OPTIMIZERS, "noise_per_step": NOISE_POLICIES, "control": CONTROL_UPDATES}
INTEGER_FIELDS = {"pixel_iterations", "latent_iterations", "ddim_steps", "client_seed", "attack_seed", "report_every",
                  "batch_size", "client_t", "plateau", "local_steps", "starts"}


def applies(values: dict[str, Any]) -> dict[str, bool]:
    """For each control that matters only sometimes, whether it matters for these values; the UI hides the others
    and validation ignores them. Controls not named here always apply."""
    method = REGISTRY.get(values.get("method"))
    latent = method is not None and method.latent_phase
    first_order = values.get("optimizer") != "lbfgs"  # L-BFGS needs no learning rate nor schedule
    noise = values.get("defence") == "clip + Gaussian noise"
    source = values.get("source")
    fedavg = values.get("client_update") == "fedavg"
    return dict(latent_iterations=latent, ddim_steps=latent, prior=latent, latent_lr=latent and first_order,
                pixel_iterations=method is None or method.pixel_phase, lr=first_order, lr_schedule=first_order,
                clip=noise, sigma=noise, keep=values.get("defence") == "top-k pruning", gallery=source == "Gallery",
                uploads=source == "Upload", webcam=source == "Webcam", local_steps=fedavg, client_optimizer=fedavg,
                client_lr=fedavg, noise_per_step=fedavg,
                weight_decay=fedavg and values.get("client_optimizer") != "sgd")


def batch_error(batch: int, size: int) -> str | None:
    """Why `batch` images at `size` px are too many for the app (None if they are not)."""
    if size > SMALL_IMAGE_PX and batch > MAX_BATCH_LARGE:
        return (f"at most {MAX_BATCH_LARGE} images above {SMALL_IMAGE_PX} px (up to {MAX_BATCH} at "
                f"{SMALL_IMAGE_PX} px or less), got {batch} at {size} px: a batch's double backward grows with "
                "its pixel count")
    return None


def number(text: Any) -> float:
    """A number typed by a person: '2.5', ' 40 ', '1e-3'. '2,5' raises rather than becoming 25."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    raw = str(text if text is not None else "").strip()
    if not raw:
        raise ValueError("required")
    if "," in raw:
        raise ValueError(f"{raw!r} has a comma: use a point for decimals (e.g. {raw.replace(',', '.')}) "
                         "and no thousands separators")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"not a number: {raw!r}") from None


def bounded_error(raw: Any, low: float, high: float, integer: bool) -> str | None:
    """What is wrong with `raw` as a number in [low, high] (whole if `integer`), or None: '2.5' is refused where a
    whole number is meant, never rounded."""
    try:
        value = number(raw)
    except ValueError as err:
        return str(err)
    if not math.isfinite(value):
        return "must be a finite number"
    if integer and value != int(value):
        return f"must be a whole number, got {raw}"
    if not low <= value <= high:
        return f"must be between {low:g} and {high:g}, got {raw}"
    return None


def number_error(name: str, raw: Any) -> str | None:
    """What is wrong with `raw` as the value of the number control `name` (None if nothing): the one rule every
    place that takes this value applies (the main view, the sweep's axes)."""
    low, high = LIMITS[name]
    error = bounded_error(raw, low, high, name in INTEGER_FIELDS)
    if error is None and name == "keep" and number(raw) >= 1:
        return "top-k keeps everything at 1.0: choose a fraction below 1"
    return error


def field_errors(values: dict[str, Any]) -> dict[str, str]:
    """Problems per control (empty if none), in the order of the tabs, for the controls that apply."""
    shown = applies(values)
    errors: dict[str, str] = {}
    for name in LIMITS:
        if shown.get(name, True) and (error := number_error(name, values.get(name))) is not None:
            errors[name] = error
    for name, allowed in CHOICES.items():
        if values.get(name) not in allowed:
            errors[name] = f"choose one of {', '.join(allowed)}"
    for name in ("model", "prior"):
        spec = str(values.get(name) or "").strip()
        if name == "prior" and spec in ("", "attacked"):
            continue
        try:
            check_spec(spec, max_size=APP_MAX_SIZE)
        except UserError as err:
            errors[name] = str(err)
    resolution = values.get("resolution")
    if "batch_size" not in errors and resolution in RESOLUTIONS[1:] and (
            error := batch_error(int(number(values.get("batch_size"))), int(resolution))) is not None:
        errors["batch_size"] = error
    if values.get("source") == "Upload" and not values.get("uploads"):
        errors["uploads"] = "upload at least one image (or pick the gallery)"
    elif values.get("source") == "Webcam" and values.get("webcam") is None:
        errors["webcam"] = "take a webcam picture first (or pick the gallery)"
    return dict(sorted(errors.items(), key=lambda kv: (TABS.index(CONTROLS[kv[0]][0]),
                                                         SETTING_FIELDS.index(kv[0]))))


class Refusal(ConfigError):
    """A bad value, with the control and tab that hold it."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.tab, self.label = CONTROLS[name]
        self.reason = message
        super().__init__(f"{self.tab} tab, {self.label}: {message}", name)

    @property
    def status(self) -> str:
        """The status line that says where the bad value is and why."""
        return f"**Refused** ({self.tab} tab, {self.label}): {self.reason}"


def parse(values: dict[str, Any]) -> Settings:
    """Settings from raw UI values; raises `Refusal` naming the first bad control (controls that do not apply
    keep their defaults when their text is not a number)."""
    errors = field_errors(values)
    if errors:
        raise Refusal(*next(iter(errors.items())))
    clean = dict(values)
    default = Settings()
    for name in LIMITS:
        try:
            value = number(values.get(name))
        except ValueError:  # only a control that does not apply gets here
            value = getattr(default, name)
        clean[name] = int(value) if name in INTEGER_FIELDS else float(value)
    clean["gallery"] = list(values.get("gallery") or [])
    uploads = values.get("uploads") or []
    clean["uploads"] = [str(getattr(u, "name", u)) for u in (uploads if isinstance(uploads, list) else [uploads])]
    clean["model"] = str(values["model"]).strip()
    clean["prior"] = str(values.get("prior") or "attacked").strip() or "attacked"
    settings = Settings(**{k: clean[k] for k in SETTING_FIELDS if k in clean})
    try:  # the core's own rules (e.g. GIDM-latent needs latent iterations, a run must do something)
        configs(settings)
    except ConfigError as err:
        if err.field not in CONTROLS:  # the core's config fields and the controls share their names
            raise
        raise Refusal(err.field, str(err)) from None
    try:
        local = training(settings)
    except ConfigError as err:
        raise Refusal(_TRAINING_CONTROLS.get(err.field, "client_update"), str(err)) from None
    if local is not None and local.noise == "fresh" and settings.client_t >= 0:
        raise Refusal("client_t", "fresh noise draws a new t at every local step: set -1 (drawn), or the same "
                                  "noise at every step")
    return settings


# LocalTraining's fields and the controls that hold them.
_TRAINING_CONTROLS = {"steps": "local_steps", "lr": "client_lr", "optimizer": "client_optimizer",
                      "weight_decay": "weight_decay", "noise": "noise_per_step"}


def hints(settings: Settings) -> list[str]:
    """What a valid but surprising combination does: shown before the run, not discovered after it."""
    out = []
    private = settings.secrets == "private"
    made_for_private = spec(settings.method).for_private_secrets
    if made_for_private and not private:
        out.append("GIDM+ is built for private eps and t: with them revealed it has no noise to recover and runs as "
                   "a pixel search with the revealed eps (no residual stage). With eps and t known, GIDM is the "
                   "attack to use.")
    if not made_for_private and private:
        out.append(f"{METHOD_LABELS[settings.method]} with private eps and t: t is read off the update and eps is "
                   "searched jointly with the image, which this method was not designed for; GIDM+ is.")
    if settings.defence == "clip + Gaussian noise" and settings.sigma > 0:
        out.append(f"Privacy this noise buys: {dp_budget(DefenceConfig(clip=settings.clip, sigma=settings.sigma))} "
                   "(Opacus' RDP accountant, one round of clip + noise); what still leaks at it is what you see.")
    if settings.control != "none":
        out.append(f"Control run ({settings.control}): the attack gets an update that holds nothing of the victim, "
                   "still scored against it; any likeness to the victim comes from the prior or chance, not a leak.")
    if settings.defence == "clip + Gaussian noise" and settings.clip == 0 and settings.sigma == 0:
        out.append("Clip norm 0 and sigma 0: this defence changes nothing (the update is sent as it is).")
    elif settings.defence == "clip + Gaussian noise" and settings.clip > 0 and settings.layer_weights == "normalized" \
            and settings.distance == "l2":
        out.append("Clipped update with normalized-weight L2 matching: measured fragile (pixels saturate, 5.6-6.9 dB "
                   "for DLG); layer weights 'uniform' or IG's cosine distance hold up better (README, Results).")
    if private and settings.client_t >= 0 and not 50 <= settings.client_t <= 600:
        out.append(f"t = {settings.client_t}: GIDM+ works for t between about 100 and 400; at small t the matching "
                   "landscape is rugged, at large t errors in the noise reach the image amplified.")
    return out


def configs(settings: Settings) -> tuple[AttackConfig, ThreatModel]:
    defence = DefenceConfig()
    if settings.defence == "clip + Gaussian noise":
        defence = DefenceConfig(clip=settings.clip, sigma=settings.sigma)
    elif settings.defence == "top-k pruning":
        defence = DefenceConfig(keep=settings.keep)
    private = settings.secrets == "private"
    threat = ThreatModel(knows_eps=not private, knows_t=not private, prior=settings.prior, defence=defence,
                         control=settings.control)
    config = attack_config(settings.method, pixel_iterations=settings.pixel_iterations, lr=settings.lr,
                           latent_iterations=settings.latent_iterations, latent_lr=settings.latent_lr,
                           ddim_steps=settings.ddim_steps, distance=settings.distance, tv_weight=settings.tv_weight,
                           lr_schedule=settings.lr_schedule, optimizer=settings.optimizer,
                           layer_weights=settings.layer_weights, attack_seed=settings.attack_seed,
                           starts=settings.starts, report_every=settings.report_every, plateau=settings.plateau)
    return config, threat


def training(settings: Settings) -> LocalTraining | None:
    """The client's local training (None: it shares one FedSGD gradient)."""
    if settings.client_update != "fedavg":
        return None
    decay = settings.weight_decay if settings.client_optimizer != "sgd" else 0.0
    return LocalTraining(steps=settings.local_steps, lr=settings.client_lr, optimizer=settings.client_optimizer,
                         weight_decay=decay, noise=settings.noise_per_step)


def scenario(settings: Settings, images: tuple[str, ...], size: int | None = None,
             attack: AttackConfig | None = None) -> Scenario:
    """The round the settings describe on the victims named `images` (the app hands their pictures over itself),
    attacked with `attack` where the caller has fitted the settings' config to a budget."""
    config, threat = configs(settings)
    return Scenario(model=settings.model, images=images, size=size, client_seed=settings.client_seed,
                    t=None if settings.client_t < 0 else (settings.client_t,), training=training(settings),
                    threat=threat, attack=attack or config)


def as_typed(value: Any) -> Any:
    """A setting as its control holds it (numbers are typed as text)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
