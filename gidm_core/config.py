"""Configuration as data: what the server knows, what the client does to its update, how an attack runs.

Every dataclass validates itself on construction, so a bad value fails once, at the edge (CLI flag, UI control,
benchmark cell), with one readable line instead of a traceback deep inside an attack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import UserError
from .methods import METHODS, spec
from .seeds import MAX_SEED

DISTANCES = ("l2", "cosine")
LAYER_WEIGHTS = ("uniform", "normalized")
OPTIMIZERS = ("lbfgs", "adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")
CLOCKS = ("wall", "cpu")
SEPARATIONS = ("auto", "off")
CONTROLS = ("none", "other-image", "noise")  # what the server is handed in place of the real update (control.py)
MAX_STARTS = 64  # each start holds its own optimiser state (L-BFGS: 200 pairs of its variables' size)


class ConfigError(UserError):
    """A configuration value that cannot work; the message is one line meant for the user, and `field` names the
    dataclass field at fault (when one is), so a UI can point at the control that holds it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _check(condition: bool, message: str, field: str | None = None) -> None:
    if not condition:
        raise ConfigError(message, field)


def _finite(**values: tuple[str, float]) -> None:
    """inf and nan pass every `>` check (or fail it with a confusing message), so they are refused first.
    Each keyword is a field, its value (what the message calls it, the value)."""
    for name, (label, value) in values.items():
        _check(isinstance(value, (int, float)) and math.isfinite(value),
               f"{label} must be a finite number, got {value}", name)


def _choice(name: str, value: str, options: tuple[str, ...], field: str | None = None) -> None:
    _check(value in options, f"unknown {name} {value!r}: choose one of {', '.join(options)}", field)


@dataclass(frozen=True)
class DefenceConfig:
    """What the client does to its update before it leaves the device.

    Each part is independent and they compose in this order: norm clipping, Gaussian noise, top-k pruning.
    `clip` <= 0 means no clipping; the noise std is `sigma * clip` when clipping (DP-SGD's convention), else `sigma`.
    """

    clip: float = 0.0
    sigma: float = 0.0
    keep: float = 1.0

    def __post_init__(self) -> None:
        _finite(clip=("clip norm", self.clip), sigma=("noise sigma", self.sigma), keep=("keep fraction", self.keep))
        _check(self.clip >= 0, f"clip norm must be >= 0, got {self.clip}", "clip")
        _check(self.sigma >= 0, f"noise sigma must be >= 0, got {self.sigma}", "sigma")
        _check(0 < self.keep <= 1, f"top-k keep fraction must be in (0, 1], got {self.keep}", "keep")

    def describe(self) -> str:
        parts = []
        if self.clip > 0:
            parts.append(f"clip {self.clip:g}")
        if self.sigma > 0:
            parts.append(f"noise sigma {self.sigma:g}")
        if self.keep < 1:
            parts.append(f"keep top {self.keep:.0%}")
        return ", ".join(parts) or "none"


MAX_LOCAL_STEPS = 32  # the attacker differentiates through every local step: its memory and time grow with E
CLIENT_OPTIMIZERS = ("sgd", "adam", "adamw")
NOISE_POLICIES = ("same", "fresh")
DEFAULT_DROPOUT = 0.1  # google/ddpm-cifar10-32's rate: what `--dropout on` trains with


@dataclass(frozen=True)
class LocalTraining:
    """How a FedAvg client trains before it shares. All of it is public: the server sets it (FedAvg's threat models
    treat E, lr, B and the optimiser as known), so it travels on the update. What stays private is each step's draw
    (`client.LocalSchedule`: batch order, eps, t, dropout masks).

    - `steps` E steps of `optimizer` at learning rate `lr` over the client's N local images, in shuffled
      mini-batches of `local_batch` (0: all N images at every step, in order).
    - `noise` "same": one eps and t per image, drawn once and reused at every step; "fresh": new eps and t for every
      slot of every step (diffusers' training loop), E x B secrets instead of N.
    - "sgd" is plain SGD; "adam" torch.optim.Adam; "adamw" torch.optim.AdamW (decoupled weight decay), each with
      `betas`, `adam_eps` and `weight_decay` (for sgd and adam the decay is added to the gradient, as torch does).
      The optimiser state is fresh every round (m = v = 0, step 0): moments carried across rounds would make the
      delta depend on every earlier round's private batches, which no server can simulate.
    - `clip` > 0 clips each step's gradient to that global L2 norm before the optimiser step
      (`torch.nn.utils.clip_grad_norm_`, 1.0 in diffusers' example script).
    - `dropout` > 0 runs every dropout layer of the UNet at that rate, in train mode; its masks are one more private
      draw of the client."""

    steps: int = 1
    lr: float = 1e-3
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    local_batch: int = 0
    noise: str = "same"
    clip: float = 0.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check(isinstance(self.steps, int) and 1 <= self.steps <= MAX_LOCAL_STEPS,
               f"local steps must be an integer in [1, {MAX_LOCAL_STEPS}], got {self.steps}", "steps")
        _finite(lr=("client learning rate", self.lr), adam_eps=("Adam eps", self.adam_eps),
                weight_decay=("weight decay", self.weight_decay), clip=("client clip norm", self.clip),
                dropout=("dropout rate", self.dropout))
        _check(self.lr > 0, f"client learning rate must be > 0, got {self.lr}", "lr")
        _choice("client optimizer", self.optimizer, CLIENT_OPTIMIZERS, "optimizer")
        _check(len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
               f"Adam betas must be two numbers in [0, 1), got {self.betas}", "betas")
        _check(self.adam_eps > 0, f"Adam eps must be > 0, got {self.adam_eps}", "adam_eps")
        _check(self.weight_decay >= 0, f"weight decay must be >= 0, got {self.weight_decay}", "weight_decay")
        _check(isinstance(self.local_batch, int) and self.local_batch >= 0,
               f"local batch must be an integer >= 0 (0: every image at every step), got {self.local_batch}",
               "local_batch")
        _choice("noise policy", self.noise, NOISE_POLICIES, "noise")
        _check(self.clip >= 0, f"client clip norm must be >= 0 (0: none), got {self.clip}", "clip")
        _check(0 <= self.dropout < 1, f"dropout rate must be in [0, 1), got {self.dropout}", "dropout")

    def batch_size(self, images: int) -> int:
        """B for a client holding `images` local images."""
        _check(self.local_batch <= images, f"local batch {self.local_batch} is larger than the client's {images} "
               "image(s)", "local_batch")
        return self.local_batch or images

    @property
    def is_one_sgd_step(self) -> bool:
        """The delta is exactly -lr times one gradient of the whole batch (what GIDM+'s residual stage's linear
        model needs)."""
        return (self.steps == 1 and self.optimizer == "sgd" and self.weight_decay == 0 and self.clip == 0
                and self.dropout == 0 and self.local_batch == 0)

    def describe(self) -> str:
        name = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}[self.optimizer]
        text = f"FedAvg delta after {self.steps} {name} step{'s' if self.steps > 1 else ''} at lr {self.lr:g}"
        extras = [f"weight decay {self.weight_decay:g}" if self.weight_decay else "",
                  f"mini-batches of {self.local_batch}" if self.local_batch else "",
                  "fresh noise every step" if self.noise == "fresh" else "",
                  f"clip {self.clip:g}" if self.clip else "", f"dropout {self.dropout:g}" if self.dropout else ""]
        return ", ".join([text, *filter(None, extras)])


@dataclass(frozen=True)
class ThreatModel:
    """What the server (attacker) knows besides the model and the shared update.

    `prior` is the model whose DDIM sampler GIDM searches: "attacked" means the federated global model itself (the
    paper's wording); any other value is a model spec for `models.load_model`.

    A FedAvg client's other per-step draws (`client.LocalSchedule`): `knows_order` (which images each local step
    used) and `knows_masks` (its dropout masks). None means "as eps": the paper's setting reveals every draw of
    every step, private-eps-t none of them.

    `control` swaps the shared update for a control one (`control.py`) while the truth stays the real victim:
    "other-image" is what the same client would share for an unrelated image of the same kind, "noise" Gaussian
    noise with the real update's per-tensor norms. What an attack makes of a control is what it makes without any
    leakage, so a prior that paints a plausible face is told apart from recovery of *this* face.
    """

    knows_eps: bool = True
    knows_t: bool = True
    prior: str = "attacked"
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    knows_order: bool | None = None
    knows_masks: bool | None = None
    control: str = "none"

    def __post_init__(self) -> None:
        _choice("control", self.control, CONTROLS, "control")

    @property
    def order_known(self) -> bool:
        return self.knows_eps if self.knows_order is None else self.knows_order

    @property
    def masks_known(self) -> bool:
        return self.knows_eps if self.knows_masks is None else self.knows_masks

    def describe(self) -> str:
        secrets = [name for name, known in (("eps", self.knows_eps), ("t", self.knows_t)) if not known]
        known = "eps and t known" if not secrets else f"private {' and '.join(secrets)}"
        steps = [name for name, known in (("batch order", self.order_known), ("dropout masks", self.masks_known))
                 if known != self.knows_eps]
        if steps:
            known += f", {' and '.join(steps)} {'private' if self.knows_eps else 'known'}"
        control = f"; control: {self.control}" if self.control != "none" else ""
        return f"{known}; prior: {self.prior}; defence: {self.defence.describe()}{control}"


THREAT_PRESETS: dict[str, ThreatModel] = {
    "paper": ThreatModel(),
    "private-eps-t": ThreatModel(knows_eps=False, knows_t=False),
    "dp-noise": ThreatModel(defence=DefenceConfig(clip=1.0, sigma=0.01)),
    "pruning": ThreatModel(defence=DefenceConfig(keep=0.1)),
}


def threat_preset(name: str) -> ThreatModel:
    _choice("threat preset", name, tuple(THREAT_PRESETS))
    return THREAT_PRESETS[name]


@dataclass(frozen=True)
class AttackConfig:
    """How an attack optimises. Phase 1 (`latent_*`) is GIDM's search over the DDIM start latent; the pixel phase is
    DLG/IG's only phase and GIDM's phase 2. GIDM+ runs GIDM's phases with eps as a variable beside the image, then
    gives `residual_share` of its pixel iterations to its residual stage (attacks/gidm_plus.py): 0.9, since that
    stage converges far faster than the joint one once the latent phase has found the basin (docs/starts.md).

    `optimizer` "lbfgs" (the default) is quasi-Newton with a line search and needs no learning rate: `lr`,
    `latent_lr` and `lr_schedule` apply to "adam" and "sgd". Every optimiser counts one objective evaluation as
    one iteration. Defaults were chosen by measurement on the bundled faces32 (README, Results): in 150 evaluations
    GIDM reaches 50.7 dB with L-BFGS and per-layer normalised L2 matching, 16.2 dB with Adam.
    `attack_seed` is the attacker's own: it seeds the attacker's stream (`seeds.stream`), never the client's.
    `restarts`: GIDM starts from the best of this many latents (by matching loss, one sampler pass each).
    `starts`: run this many starts of the whole attack and drop the worse half by matching loss at checkpoints
    (successive halving, `attacks/starts.py`); a time budget covers all of them.
    `separation` "auto" splits a batch's update into per-sample parts through the time conditioning where it can
    (attacks/separation.py) and matches each image against its own; "off" matches the summed update only.

    `seconds` > 0 is a time budget: the run stops at the first evaluation past it, and the iteration counts only
    split the time between phases (a phase gets the share of the remaining time that its iterations are of the
    remaining iterations), so methods compare at equal time. `clock` is what a second is: "wall" (what a user
    waits; the consumer's time between events is left out) or "cpu" (the process's CPU time, which a busy shared
    machine does not inflate; the benchmark's choice with one torch thread).

    `plateau` > 0 ends a run whose best matching loss has improved by less than a small fraction of its first
    matching loss over that many evaluations (`attacks.plateau`): the run is "done" and its message says it
    converged. 0 (the default) runs the whole budget.
    """

    method: str = "gidm"
    pixel_iterations: int = 360
    lr: float = 0.1
    latent_iterations: int = 40
    latent_lr: float = 0.05
    ddim_steps: int = 2
    distance: str = "l2"
    layer_weights: str = "normalized"
    tv_weight: float = 0.0
    optimizer: str = "lbfgs"
    lr_schedule: str = "cosine"
    restarts: int = 1
    starts: int = 1
    residual_share: float = 0.9
    report_every: int = 10
    attack_seed: int = 0
    seconds: float = 0.0
    clock: str = "wall"
    plateau: int = 0
    separation: str = "auto"

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS, "method")
        _choice("distance", self.distance, DISTANCES, "distance")
        _choice("layer weighting", self.layer_weights, LAYER_WEIGHTS, "layer_weights")
        _choice("optimizer", self.optimizer, OPTIMIZERS, "optimizer")
        _choice("lr schedule", self.lr_schedule, LR_SCHEDULES, "lr_schedule")
        _choice("clock", self.clock, CLOCKS, "clock")
        _choice("separation", self.separation, SEPARATIONS, "separation")
        _finite(lr=("learning rate", self.lr), latent_lr=("latent learning rate", self.latent_lr),
                tv_weight=("TV weight", self.tv_weight), seconds=("time budget", self.seconds))
        _check(self.seconds >= 0, f"time budget must be >= 0 seconds (0: none), got {self.seconds}", "seconds")
        _check(self.lr > 0, f"learning rate must be > 0, got {self.lr}", "lr")
        _check(self.latent_lr > 0, f"latent learning rate must be > 0, got {self.latent_lr}", "latent_lr")
        _check(self.pixel_iterations >= 0, f"pixel iterations must be >= 0, got {self.pixel_iterations}",
               "pixel_iterations")
        _check(self.latent_iterations >= 0, f"latent iterations must be >= 0, got {self.latent_iterations}",
               "latent_iterations")
        _check(self.ddim_steps >= 1, f"DDIM steps K must be >= 1, got {self.ddim_steps}", "ddim_steps")
        _check(self.tv_weight >= 0, f"TV weight must be >= 0, got {self.tv_weight}", "tv_weight")
        _check(self.restarts >= 1, f"restarts must be >= 1, got {self.restarts}", "restarts")
        _check(isinstance(self.starts, int) and 1 <= self.starts <= MAX_STARTS,
               f"starts must be an integer in [1, {MAX_STARTS}], got {self.starts}", "starts")
        _check(0 <= self.residual_share < 1, f"residual share must be in [0, 1), got {self.residual_share}",
               "residual_share")
        _check(self.plateau >= 0, f"plateau window must be >= 0 evaluations (0: off), got {self.plateau}", "plateau")
        _check(self.report_every >= 1, f"report_every must be >= 1, got {self.report_every}", "report_every")
        _check(0 <= self.attack_seed <= MAX_SEED, f"attacker seed must be in [0, 2**63 - 1], got {self.attack_seed}",
               "attack_seed")
        method = spec(self.method)
        if not method.pixel_phase:
            _check(self.latent_iterations >= 1, f"{self.method} needs latent iterations >= 1", "latent_iterations")
        _check(self.total_iterations >= 1, f"{self.method} would do nothing with 0 iterations: give it some"
               + (" (latent or pixel)" if method.latent_phase else ""), "pixel_iterations")

    @property
    def uses_latent_phase(self) -> bool:
        return spec(self.method).latent_phase and self.latent_iterations > 0

    @property
    def residual_iterations(self) -> int:
        """GIDM+'s residual-stage share of its pixel-stage iterations (when eps is private); the joint stage keeps
        at least one, since the residual stage starts from its answer."""
        if "residual" not in spec(self.method).phases:
            return 0
        return min(round(self.pixel_iterations * self.residual_share), max(self.pixel_iterations - 1, 0))

    @property
    def uses_pixel_phase(self) -> bool:
        return spec(self.method).pixel_phase

    @property
    def total_iterations(self) -> int:
        latent = self.latent_iterations if self.uses_latent_phase else 0
        pixel = self.pixel_iterations if self.uses_pixel_phase else 0
        return latent + pixel

    def with_overrides(self, **overrides: Any) -> AttackConfig:
        """A copy with the given fields changed (None values are ignored), validated again."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def attack_config(method: str, **overrides: Any) -> AttackConfig:
    """The config for `method`: its own defaults, then any explicit overrides (None means keep the default)."""
    _choice("method", method, METHODS)
    base = AttackConfig(method=method, **spec(method).defaults)
    return base.with_overrides(**overrides)
