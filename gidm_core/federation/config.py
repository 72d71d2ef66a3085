"""The federation's settings, validated once at the edge and sent to every client in each round's config.

Everything is a plain int, float or str, so the same fields travel in a Flower `ConfigRecord` to the clients and
come from a `pyproject.toml` [tool.flwr.app.config] section on a multi-machine deployment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..config import METHODS, THREAT_PRESETS, AttackConfig, ConfigError, LocalTraining, ThreatModel, attack_config
from ..faces import DATASETS
from ..training.trainer import ARCHITECTURES, TrainConfig
from ..seeds import MAX_SEED

# LocalTraining's field names -> ours, so a refusal names the field a user set
_TRAINING_FIELDS = {"steps": "local_steps", "lr": "client_lr", "optimizer": "client_optimizer"}
_MODEL_CONFIG = re.compile(r"^(?P<arch>[a-z0-9]+)-(?P<size>\d+)$")


@dataclass(frozen=True)
class FederationConfig:
    """A FedAvg federation whose server attacks every update it receives.

    Each round every client trains the broadcast UNet for `local_steps` steps of `client_optimizer` (plain SGD, or
    Adam with a fresh state each round: `LocalTraining`) at `client_lr` on one private batch of `batch_size` images
    from its shard (eps and t drawn once, from its own stream): exactly the update `client.client_update` with
    `LocalTraining(local_steps, client_lr, client_optimizer)` computes, so the attacker's re-simulation is exact.
    The server sets E, lr and the optimiser, so the attack knows them; it knows eps and t only under a `threat` that says so.
    `pixel_iterations` 0 keeps the attack method's default budget; `seconds` > 0 gives each attack a time budget instead
    (the iterations then only split it between the method's phases).
    """

    model_config: str = "small-32"
    dataset: str = "lfw-faces"
    clients: int = 2
    rounds: int = 3
    local_steps: int = 1
    client_lr: float = 1e-3
    client_optimizer: str = "sgd"
    batch_size: int = 1
    method: str = "dlg"
    threat: str = "paper"
    pixel_iterations: int = 0
    seconds: float = 0.0
    seed: int = 0
    attack_seed: int = 0

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
            _ = self.training  # built once here, so a bad step count, lr or optimiser fails now
        except ConfigError as err:
            raise ConfigError(str(err), _TRAINING_FIELDS.get(err.field, err.field)) from None
        _ = self.attack_config  # and a bad budget
        try:
            self.train_config
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
        return LocalTraining(steps=self.local_steps, lr=self.client_lr, optimizer=self.client_optimizer)

    @property
    def attack_config(self) -> AttackConfig:
        return attack_config(self.method, pixel_iterations=self.pixel_iterations or None, seconds=self.seconds,
                             attack_seed=self.attack_seed)

    @property
    def threat_model(self) -> ThreatModel:
        return THREAT_PRESETS[self.threat]

    @property
    def train_config(self) -> TrainConfig:
        """The same federation as the FedAvg trainer's config: its UNet initialisation, shards and record."""
        return TrainConfig(dataset=self.dataset, size=self.size, arch=self.arch, clients=self.clients,
                           rounds=self.rounds, local_steps=self.local_steps, batch_size=self.batch_size,
                           lr=self.client_lr, optimizer=self.client_optimizer, grad_clip=0.0, augment=False, seed=self.seed)

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
