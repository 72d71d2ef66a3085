"""One attacked round as data: which model, which private images, how the client trains, what the server knows and
how it attacks. Every front end (CLI, benchmark cell, app, scripts) describes its round as a `Scenario`, so a run
can be saved beside its results (`scenario.json`), read back and played again with the same numbers.

A scenario only describes; `protocol.play_scenario` loads its model, images and prior and plays it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import AttackConfig, ConfigError, DefenceConfig, LocalTraining, ThreatModel
from .seeds import MAX_SEED

SCENARIO_VERSION = 1  # bumped when a field changes meaning, so an old file is refused rather than misread


@dataclass(frozen=True)
class Scenario:
    """`images` are the client's private images: bundled victim names, `skimage:<photo>` names or file paths (a
    front end with images of its own, such as the app's uploads, passes their tensor to `play_scenario` and names
    them here for the record). `size` None means the model's own resolution. `t` None lets the client draw its
    timesteps (one, or one per image, otherwise). `training` None is FedSGD: one gradient."""

    model: str = "faces32"
    images: tuple[str, ...] = ("face-05",)
    size: int | None = None
    client_seed: int = 0
    t: tuple[int, ...] | None = None
    training: LocalTraining | None = None
    threat: ThreatModel = field(default_factory=ThreatModel)
    attack: AttackConfig = field(default_factory=AttackConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(self.images))
        if self.t is not None:
            object.__setattr__(self, "t", tuple(int(t) for t in self.t))
        if not self.images:
            raise ConfigError("a scenario needs at least one private image", "images")
        if not isinstance(self.client_seed, int) or not 0 <= self.client_seed <= MAX_SEED:
            raise ConfigError(f"client seed must be in [0, 2**63 - 1], got {self.client_seed}", "client_seed")
        if self.t is not None and (len(self.t) not in (1, len(self.images)) or min(self.t) < 0):
            raise ConfigError(f"t must be one timestep >= 0, or one per image, got {list(self.t)}", "t")
        if self.size is not None and (not isinstance(self.size, int) or self.size < 1):
            raise ConfigError(f"image size must be a positive integer, got {self.size}", "size")

    @property
    def prior(self) -> str | None:
        """The model spec GIDM's prior loads, or None when the prior is the attacked model itself (or unused)."""
        if self.threat.prior == "attacked" or not self.attack.uses_latent_phase:
            return None
        return self.threat.prior

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only (tuples become lists)."""
        return {"version": SCENARIO_VERSION, **json.loads(json.dumps(dataclasses.asdict(self)))}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Scenario:
        """The inverse of `to_dict`, validated like every config: an unknown key, a missing version or a bad value
        is one `ConfigError` line."""
        values = dict(values)
        version = values.pop("version", None)
        if version != SCENARIO_VERSION:
            raise ConfigError(f"scenario version {version!r} is not {SCENARIO_VERSION}: it was written by another "
                              "release of GIDM Explorer")
        _known(cls, values, "scenario")
        threat = dict(values.get("threat") or {})
        _known(ThreatModel, threat, "threat")
        threat["defence"] = _build(DefenceConfig, threat.get("defence") or {}, "defence")
        training = values.get("training")
        if training is not None:
            training = dict(training)
            if "betas" in training:
                training["betas"] = tuple(training["betas"])
            training = _build(LocalTraining, training, "training")
        return cls(**{**values, "images": tuple(values.get("images", cls.images)),
                      "threat": ThreatModel(**threat), "training": training,
                      "attack": _build(AttackConfig, values.get("attack") or {}, "attack")})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """A saved scenario; an unreadable file or bad JSON is one `ConfigError` line."""
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot read scenario {path}: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"scenario {path} must hold a JSON object")
        return cls.from_dict(values)


def _known(kind: type, values: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
        raise ConfigError(f"unknown {where} field(s) {', '.join(unknown)}")


def _build(kind: type, values: Mapping[str, Any], where: str) -> Any:
    _known(kind, values, where)
    try:
        return kind(**values)
    except TypeError as err:  # a value of the wrong type that the dataclass's own checks do not name
        raise ConfigError(f"bad {where} field: {err}") from None
