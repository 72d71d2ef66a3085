"""The federation's settings, validated once at the edge and sent to every client in each round's config.

Everything is a plain int, float or str, so the same fields travel in a Flower `ConfigRecord` to the clients and
come from a `pyproject.toml` [tool.flwr.app.config] section on a multi-machine deployment. What a client does and
what the server knows and runs are the same objects a `Scenario` holds (`training`, `threat_model`,
`attack_config`), built from these fields; `from_scenario` goes the other way, so a round studied with `attack` or
`tune` becomes a whole federation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..config import METHODS, THREAT_PRESETS, AttackConfig, ConfigError, LocalTraining, ThreatModel, attack_config
from ..faces import DATASETS
from ..scenario import Scenario
from ..seeds import MAX_SEED
from ..training.trainer import ARCHITECTURES, TrainConfig

# LocalTraining's field names -> ours, so a refusal names the field a user set
_TRAINING_FIELDS = {"steps": "local_steps", "lr": "client_lr", "optimizer": "client_optimizer",
                    "weight_decay": "weight_decay", "local_batch": "local_batch", "noise": "noise",
                    "clip": "client_clip", "dropout": "dropout"}
# AttackConfig's fields the run config holds as its own; attack_options carries the rest
_ATTACK_FIELDS = ("method", "pixel_iterations", "seconds", "attack_seed")
# What a Scenario sets of a federation: the clients' training, the threat and the attack
SCENARIO_FIELDS = (*_TRAINING_FIELDS.values(), "threat", *_ATTACK_FIELDS, "attack_options")
_MODEL_CONFIG = re.compile(r"^(?P<arch>[a-z0-9]+)-(?P<size>\d+)$")


@dataclass(frozen=True)
class FederationConfig:
    """A FedAvg federation whose server attacks every update it receives.

    Each round every client trains the broadcast UNet for `local_steps` steps of `client_optimizer` (SGD, Adam or
    AdamW with a fresh state each round, `weight_decay`) at `client_lr` on its `batch_size` private images of the
    round, in mini-batches of `local_batch` (0: all), with the `noise` policy ("same" or "fresh" per step), per-step
    gradient clipping `client_clip` and `dropout`: the update `client.client_update` computes with `training`, on
    per-step draws from the client's own stream, so the attacker's re-simulation is exact where it knows them.
    The server sets all of these, so the attack knows them; it knows eps, t, the batch order and dropout masks only
    under a `threat` that says so.
    `pixel_iterations` 0 keeps the attack method's default budget; `seconds` > 0 gives each attack a time budget instead
    (the iterations then only split it between the method's phases). `attack_options` is a JSON object of any other
    `AttackConfig` fields, e.g. '{"lr": 0.05, "distance": "cosine"}' (a Flower run config holds no nested values).
    """

    model_config: str = "small-32"
    dataset: str = "lfw-faces"
    clients: int = 2
    rounds: int = 3
    local_steps: int = 1
    client_lr: float = 1e-3
    client_optimizer: str = "sgd"
    batch_size: int = 1
    weight_decay: float = 0.0
    local_batch: int = 0
    noise: str = "same"
    client_clip: float = 0.0
    dropout: float = 0.0
    method: str = "dlg"
    threat: str = "paper"
    pixel_iterations: int = 0
    seconds: float = 0.0
    seed: int = 0
    attack_seed: int = 0
    attack_options: str = ""

    def __post_init__(self) -> None:
        match = _MODEL_CONFIG.match(self.model_config)
        if not match or match["arch"] not in ARCHITECTURES:
            raise ConfigError(f"unknown model config {self.model_config!r}: use <arch>-<size> with arch one of "
                              f"{', '.join(ARCHITECTURES)}, e.g. small-32", "model_config")
        checks = [
            (self.dataset in DATASETS, f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}",
             "dataset"),
            (self.clients >= 1, f"clients must be >= 1, got {self.clients}", "clients"),
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}", "rounds"),
            (self.batch_size >= 1, f"batch size must be >= 1, got {self.batch_size}", "batch_size"),
            (self.method in METHODS, f"unknown attack method {self.method!r}: choose one of {', '.join(METHODS)}",
             "method"),
            (self.threat in THREAT_PRESETS, f"unknown threat preset {self.threat!r}: choose one of "
             f"{', '.join(THREAT_PRESETS)}", "threat"),
            (self.pixel_iterations >= 0, f"attack pixel iterations must be >= 0, got {self.pixel_iterations}",
             "pixel_iterations"),
            (0 <= self.seed <= MAX_SEED, f"seed must be in [0, 2**63 - 1], got {self.seed}", "seed"),
            (0 <= self.attack_seed <= MAX_SEED, f"attack seed must be in [0, 2**63 - 1], got {self.attack_seed}",
             "attack_seed"),
        ]
        for ok, message, field in checks:
            if not ok:
                raise ConfigError(message, field)
        try:
            self.training.batch_size(self.batch_size)  # built once here, so a bad training setting fails now
        except ConfigError as err:
            raise ConfigError(str(err), _TRAINING_FIELDS.get(err.field, err.field)) from None
        try:
            _ = self.attack_config  # and a bad budget or attack option
        except TypeError as err:  # a value of the wrong type in attack_options
            raise ConfigError(f"attack_options: {err}", "attack_options") from None
        except ConfigError as err:
            if err.field in _options(self.attack_options):
                raise ConfigError(f"attack_options: {err}", "attack_options") from None
            raise
        try:
            _ = self.train_config
        except ValueError as err:
            raise ConfigError(str(err), "model_config") from None

    @property
    def arch(self) -> str:
        return _MODEL_CONFIG.match(self.model_config)["arch"]

    @property
    def size(self) -> int:
        return int(_MODEL_CONFIG.match(self.model_config)["size"])

    @property
    def training(self) -> LocalTraining:
        """The clients' local training, as the attacker's simulation of it needs it."""
        return LocalTraining(steps=self.local_steps, lr=self.client_lr, optimizer=self.client_optimizer,
                             weight_decay=self.weight_decay, local_batch=self.local_batch, noise=self.noise,
                             clip=self.client_clip, dropout=self.dropout)

    @property
    def attack_config(self) -> AttackConfig:
        options = _options(self.attack_options)
        return attack_config(self.method, **{**options, "pixel_iterations": self.pixel_iterations or None,
                                             "seconds": self.seconds, "attack_seed": self.attack_seed})

    @classmethod
    def from_scenario(cls, scenario: Scenario, **federation: Any) -> FederationConfig:
        """The federation whose clients train, and whose server attacks, as `scenario`'s round does; `federation`
        sets the rest (model_config, clients, rounds, batch_size, seed ...). FedSGD becomes one SGD step (its delta
        is -lr times the gradient). A threat that is not a preset, or Adam betas the run config cannot carry, is
        refused in one line."""
        threat = next((name for name, preset in THREAT_PRESETS.items() if preset == scenario.threat), None)
        if threat is None:
            raise ConfigError(f"a federation's threat is one of the presets {', '.join(THREAT_PRESETS)}; the "
                              f"scenario's ({scenario.threat.describe()}) is none of them", "threat")
        training = scenario.training or LocalTraining()
        if (training.betas, training.adam_eps) != (LocalTraining.betas, LocalTraining.adam_eps):
            raise ConfigError("a federation's clients use Adam's default betas and eps", "training")
        attack = scenario.attack
        fixed = {*_ATTACK_FIELDS, "clock", "report_every"}
        defaults = attack_config(attack.method)
        options = {f.name: getattr(attack, f.name) for f in fields(AttackConfig)
                   if f.name not in fixed and getattr(attack, f.name) != getattr(defaults, f.name)}
        values = {**{ours: getattr(training, theirs) for theirs, ours in _TRAINING_FIELDS.items()},
                  "method": attack.method, "threat": threat, "pixel_iterations": attack.pixel_iterations,
                  "seconds": attack.seconds, "attack_seed": attack.attack_seed,
                  "attack_options": json.dumps(options, sort_keys=True) if options else ""}
        return cls(**{**values, **federation})

    @property
    def threat_model(self) -> ThreatModel:
        return THREAT_PRESETS[self.threat]

    @property
    def train_config(self) -> TrainConfig:
        """The same federation as the FedAvg trainer's config: its UNet initialisation, shards and record."""
        return TrainConfig(dataset=self.dataset, size=self.size, arch=self.arch, clients=self.clients,
                           rounds=self.rounds, local_steps=self.local_steps, batch_size=self.batch_size,
                           lr=self.client_lr, grad_clip=0.0, augment=False, seed=self.seed,
                           # the trainer's own loop has no AdamW; here it only builds the UNet and the shards
                           optimizer="adam" if self.client_optimizer == "adamw" else self.client_optimizer)

    def check_data(self, count: int) -> None:
        """Refuse a split that leaves a client fewer images than one batch (batches are drawn without repeats)."""
        smallest = count // self.clients
        if smallest < self.batch_size:
            raise ConfigError(f"{self.clients} clients share {count} images ({smallest} each at least): each needs "
                              f"at least one batch of {self.batch_size}", "clients")

    def to_record(self) -> dict[str, Any]:
        """The fields as a plain dict, for a Flower `ConfigRecord` or JSON."""
        return asdict(self)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FederationConfig:
        """A config from a ConfigRecord or run config: known fields only, each cast to its declared type."""
        casts = {"int": int, "float": float, "str": str}
        return cls(**{f.name: casts[f.type](values[f.name]) for f in fields(cls) if f.name in values})


def _options(text: str) -> dict[str, Any]:
    """`attack_options` as AttackConfig overrides: a JSON object of its fields, or one `ConfigError` line."""
    if not text:
        return {}
    try:
        options = json.loads(text)
    except ValueError as err:
        raise ConfigError(f"attack_options must be a JSON object, got {text!r} ({err})", "attack_options") from None
    known = {f.name for f in fields(AttackConfig)} - set(_ATTACK_FIELDS)
    if not isinstance(options, dict) or set(options) - known:
        raise ConfigError(f"attack_options must be a JSON object of AttackConfig fields ({', '.join(sorted(known))}),"
                          f" got {text!r}", "attack_options")
    return options
