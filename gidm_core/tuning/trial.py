"""One tuning trial: a short attack on the shared update with one point of the search space, scored by a referee
matching loss, never by the truth (this module, like the attacks, cannot import the evaluator: import-linter).

Trials with different distances or layer weightings report matching losses in different units (a cosine distance
is at most 2, a squared L2 on a trained UNet ~1e-6), so no trial is ranked by its own loss: the `Referee` scores
every guess with one fixed distance (per-layer normalised squared L2, the default attacks' own) on the same update.
That is still only what the server has: the model, the update and the threat model.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks import start_attack
from ..attacks.adam_delta import confidence, matcher_defence, readable, smoothing
from ..attacks.matching import GradientMatcher
from ..client import SharedUpdate
from ..config import AttackConfig, ThreatModel
from ..models import DiffusionModel


class Referee:
    """The one matching loss every trial is ranked by: normalised squared L2 between the update a guess would
    produce and the shared one (the threat model's eps and t where it reveals them, else the guess's own)."""

    def __init__(self, model: DiffusionModel, update: SharedUpdate, threat: ThreatModel) -> None:
        self.update = readable(model, update, threat.defence)
        self.device = model.device
        self.matcher = GradientMatcher(model, self.update, "l2", "normalized",
                                       matcher_defence(self.update, threat.defence), confidence(self.update),
                                       smoothing(self.update))

    def __call__(self, image: torch.Tensor, eps: torch.Tensor | None, t: Any) -> float:
        eps = self.update.eps if self.update.eps is not None else eps
        t = self.update.t if self.update.t is not None else (None if t is None else torch.as_tensor(list(t)))
        if eps is None or t is None:  # no method leaves a private secret unguessed; refuse to rank by a guess
            return math.inf
        with torch.enable_grad():
            loss = self.matcher(image.to(self.device), eps.to(self.device), t.to(self.device), create_graph=False)
        return float(loss.detach())


@dataclass
class TrialOutcome:
    """What one trial did, as the tuner sees it, plus its answer (for the evaluator, outside the tuner)."""

    params: dict[str, Any]
    matching_loss: float  # the referee's, on the trial's final answer: what the study minimises
    attack_loss: float  # the attack's own matching loss, in its own distance's units
    iterations: int
    seconds: float
    status: str  # the attack's: done / stopped / error; or "pruned", "failed"
    message: str
    checkpoints: list[tuple[int, float]] = field(default_factory=list)  # (percent of budget, referee loss)
    reconstruction: torch.Tensor | None = None
    eps_estimate: torch.Tensor | None = None
    t_estimate: tuple[int, ...] | None = None

    @property
    def pruned(self) -> bool:
        return self.status == "pruned"


CHECKPOINTS = (0.25, 0.5, 0.75)  # fractions of a trial's budget where the pruner sees its referee loss
Judge = Callable[[int, float], bool]  # (percent of budget, referee loss) -> prune now?


def run_trial(model: DiffusionModel, update: SharedUpdate, threat: ThreatModel, config: AttackConfig,
              params: dict[str, Any], referee: Referee, prior: DiffusionModel | None = None,
              judge: Judge | None = None, stop: threading.Event | None = None) -> TrialOutcome:
    """Run `config` (one point of the space) on `update`; at each checkpoint the referee scores the current guess
    and `judge` may end the trial there (pruned: its best guess is still scored). `stop` (the user's) ends it too."""
    own_stop = threading.Event()
    run = start_attack(model, update, threat, config, prior, own_stop)
    marks = list(CHECKPOINTS)
    checkpoints: list[tuple[int, float]] = []
    pruned = False
    for event in run:
        if stop is not None and stop.is_set():
            run.stop()
        if event.kind != "progress" or not marks or own_stop.is_set():
            continue
        done = (event.elapsed / config.seconds if config.seconds > 0
                else event.iteration / max(event.total_iterations, 1))
        if done < marks[0]:
            continue
        while marks and done >= marks[0]:
            marks.pop(0)
        step = round(100 * done)
        value = referee(event.reconstruction, event.eps_estimate, event.t_estimate)
        checkpoints.append((step, value))
        if judge is not None and judge(step, value):
            pruned = True
            run.stop()
    result = run.result
    if result is None:
        return TrialOutcome(params, math.inf, math.inf, 0, 0.0, "failed", "the attack produced no finite guess",
                            checkpoints)
    loss = referee(result.reconstruction, result.eps_estimate, result.t_estimate)
    status = "pruned" if pruned else result.status
    return TrialOutcome(params, loss, result.matching_loss, result.iterations, result.seconds, status,
                        result.message, checkpoints, result.reconstruction, result.eps_estimate, result.t_estimate)
