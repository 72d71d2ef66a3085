"""Attacks: each sees only the model, the shared update and the threat model, and streams `Event`s."""

from __future__ import annotations

import threading
from importlib import import_module

from ..client import SharedUpdate
from ..config import AttackConfig, ThreatModel
from ..methods import SPECS, MethodSpec
from ..models import DiffusionModel
from .adam_delta import readable
from .base import AttackContext, AttackFn, Run
from .events import Event, Result
from .starts import with_starts
from .steering import Steering


def _code(spec: MethodSpec) -> AttackFn:
    module, function = spec.code.split(":")
    return getattr(import_module(f"{__name__}.{module}"), function)


ATTACKS: dict[str, AttackFn] = {spec.name: _code(spec) for spec in SPECS}  # each method's code, in table order


def start_attack(model: DiffusionModel, update: SharedUpdate, threat: ThreatModel, config: AttackConfig,
                 prior: DiffusionModel | None = None, stop: threading.Event | None = None,
                 steering: Steering | None = None) -> Run:
    """A `Run` of `config.method` against `update`; iterate it for events, then read `run.result`. `steering`
    (steering.py) lets a front end change the run while it goes, or replays a schedule."""
    update = readable(model, update, threat.defence)  # a one-step Adam delta is matched as the gradient it encodes
    return Run(with_starts(ATTACKS[config.method]),
               AttackContext(model, update, threat, config, prior, stop, steering))


__all__ = ["ATTACKS", "Event", "Result", "Run", "Steering", "start_attack"]
