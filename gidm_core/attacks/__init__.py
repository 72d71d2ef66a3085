"""Attacks: each sees only the model, the shared update and the threat model, and streams `Event`s."""

from __future__ import annotations

import threading

from ..client import SharedUpdate
from ..config import AttackConfig, ThreatModel
from ..models import DiffusionModel
from .adam_delta import readable
from .base import AttackContext, AttackFn, Run
from .events import Event, Result
from .gidm import gidm_attack
from .gidm_plus import gidm_plus_attack
from .pixel import pixel_attack
from .starts import with_starts
from .steering import Steering

ATTACKS: dict[str, AttackFn] = {  # the code of each method in `methods.REGISTRY`, in its order (tested)
    "dlg": pixel_attack,
    "ig": pixel_attack,
    "gidm-latent": gidm_attack,
    "gidm": gidm_attack,
    "gidm-plus": gidm_plus_attack,
}


def start_attack(model: DiffusionModel, update: SharedUpdate, threat: ThreatModel, config: AttackConfig,
                 prior: DiffusionModel | None = None, stop: threading.Event | None = None,
                 steering: Steering | None = None) -> Run:
    """A `Run` of `config.method` against `update`; iterate it for events, then read `run.result`. `steering`
    (steering.py) lets a front end change the run while it goes, or replays a schedule."""
    update = readable(model, update, threat.defence)  # a one-step Adam delta is matched as the gradient it encodes
    return Run(with_starts(ATTACKS[config.method]),
               AttackContext(model, update, threat, config, prior, stop, steering))


__all__ = ["ATTACKS", "Event", "Result", "Run", "Steering", "start_attack"]
