"""The attacker tunes itself: an Optuna study over a method's hyperparameters, every trial a short attack on the
same shared update, ranked by the referee's matching loss (`trial.Referee`) and nothing else.

The study is seeded (TPE's sampler; each trial attacks with the same attacker seed), runs the method's defaults as
its first trial, and prunes a trial whose referee loss at a checkpoint is worse than the median of the earlier
trials' at the same point. With `storage` (an Optuna URL, e.g. sqlite:///study.db) the study lives in a database:
a rerun with the same settings continues it until it holds `trials` finished trials. `ray` runs trials as Ray
tasks, several at once (TPE's constant liar keeps parallel proposals apart); Ray trials are not pruned mid-run, but
their checkpoint losses are reported afterwards, so the study's record is the same shape either way.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..client import SharedUpdate
from ..config import AttackConfig, ConfigError, ThreatModel, attack_config
from ..errors import UserError
from ..models import DiffusionModel
from ..seeds import MAX_SEED, derive
from .space import SPACES, default_params, overrides, suggest
from .trial import Referee, TrialOutcome, run_trial

MAX_TRIALS = 500


@dataclass(frozen=True)
class TuneConfig:
    """A study's settings. Each trial gets `seconds` (on `clock`) or, with `seconds` 0, `iterations` evaluations
    (0: the method's default total); under a time budget `iterations` only splits the time between phases, as in
    `AttackConfig`. `attack_seed` seeds the sampler and is every trial's attacker seed."""

    method: str = "gidm"
    trials: int = 12
    seconds: float = 0.0
    iterations: int = 0
    clock: str = "cpu"
    attack_seed: int = 0
    pruning: bool = True
    frozen: tuple[str, ...] = ()  # params of the space left at the method's defaults

    def __post_init__(self) -> None:
        if self.method not in SPACES:
            raise ConfigError(f"unknown method {self.method!r}: choose one of {', '.join(SPACES)}", "method")
        if not (isinstance(self.trials, int) and 1 <= self.trials <= MAX_TRIALS):
            raise ConfigError(f"trials must be an integer in [1, {MAX_TRIALS}], got {self.trials}", "trials")
        if not (isinstance(self.seconds, (int, float)) and math.isfinite(self.seconds) and self.seconds >= 0):
            raise ConfigError(f"seconds per trial must be a finite number >= 0, got {self.seconds}", "seconds")
        if not (isinstance(self.iterations, int) and self.iterations >= 0):
            raise ConfigError(f"iterations per trial must be an integer >= 0, got {self.iterations}", "iterations")
        if not 0 <= self.attack_seed <= MAX_SEED:
            raise ConfigError(f"attacker seed must be in [0, 2**63 - 1], got {self.attack_seed}", "attack_seed")
        unknown = sorted(set(self.frozen) - set(SPACES[self.method]))
        if unknown:
            raise ConfigError(f"{self.method} has no hyperparameter {unknown[0]!r} to hold fixed", "frozen")
        self.attack(self.defaults())  # the defaults' config validates the budget and clock

    def defaults(self) -> dict[str, Any]:
        return default_params(self.method, self.frozen)

    def suggest(self, trial: Any) -> dict[str, Any]:
        return suggest(trial, self.method, self.frozen)

    @property
    def nominal_iterations(self) -> int:
        return self.iterations or attack_config(self.method).total_iterations

    def attack(self, params: dict[str, Any], report_every: int = 5) -> AttackConfig:
        """The attack config of one point of the space."""
        return attack_config(self.method, seconds=self.seconds, clock=self.clock, attack_seed=self.attack_seed,
                             report_every=report_every, **overrides(self.method, params, self.nominal_iterations))


@dataclass(frozen=True)
class RayPlan:
    """Where Ray trials run: each task loads `model` (and `prior`, a spec or "attacked") on `device` itself."""

    model: str
    prior: str = "attacked"
    device: str = "cpu"
    workers: int = 2
    threads: int = 1
    address: str | None = None


@dataclass
class TrialRecord:
    """A finished trial as a study reports it: its number and Optuna state, then the outcome."""

    number: int
    state: str  # COMPLETE, PRUNED or FAIL
    outcome: TrialOutcome
    setup: dict[str, Any] = field(default_factory=dict)
    study: Any = None  # the Optuna study it belongs to, for its plots (`optuna.visualization`)


def open_study(config: TuneConfig, storage: str | None, name: str | None, setup: dict[str, Any]) -> Any:
    """The study (new, or the one `storage` holds under `name`); refuses, in one line, a storage that cannot open
    or a stored study made with other settings."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    name = name or f"tune-{config.method}"
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True)
    except Exception as err:  # noqa: BLE001 - sqlalchemy, URL and file errors alike become one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"--storage {storage}: cannot open the study there ({first[:200]})") from None
    stored = study.user_attrs.get("setup")
    if stored is None:
        study.set_user_attr("setup", setup)
    elif stored != setup:
        changed = sorted(k for k in {**stored, **setup} if stored.get(k) != setup.get(k))
        raise UserError(f"study {name!r} in {storage} was made with other settings ({', '.join(changed)}): "
                        "give another --study-name or storage")
    return study


def tune(model: DiffusionModel, update: SharedUpdate, threat: ThreatModel, config: TuneConfig, *,
         prior: DiffusionModel | None = None, storage: str | None = None, study_name: str | None = None,
         setup: dict[str, Any] | None = None, stop: threading.Event | None = None,
         ray: RayPlan | None = None) -> Iterator[TrialRecord]:
    """Run the study until it holds `config.trials` finished trials, yielding each trial as it finishes (earlier
    trials of a resumed study first). `setup` describes the update (model, images, seeds): a stored study must match
    it. The tuner sees the model, the update and the threat model only."""
    import optuna

    setup = {**(setup or {}), "method": config.method, "frozen": list(config.frozen), "seconds": config.seconds,
             "iterations": config.nominal_iterations, "clock": config.clock, "attack_seed": config.attack_seed,
             "threat": threat.describe()}
    study = open_study(config, storage, study_name, setup)
    states = optuna.trial.TrialState
    for frozen in study.get_trials(deepcopy=False, states=(states.RUNNING, states.WAITING)):
        if frozen.state == states.RUNNING:  # left running by an interrupted session: it will not come back
            study.tell(frozen.number, state=states.FAIL)
    done = study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED))
    for frozen in sorted(done, key=lambda f: f.number):
        yield TrialRecord(frozen.number, frozen.state.name, stored_outcome(frozen), setup, study)
    if not study.trials:
        study.enqueue_trial(config.defaults())
    startup = max(3, min(10, config.trials // 3))  # random proposals first, then TPE
    # Reseeded by how far the study is, so that resuming at a given point proposes the same trials every time.
    study.sampler = optuna.samplers.TPESampler(seed=derive(config.attack_seed, len(done)) % 2**32,
                                               n_startup_trials=startup)
    study.pruner = (optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0) if config.pruning
                    else optuna.pruners.NopPruner())
    left = config.trials - len(done)
    referee = Referee(model, update, threat)
    if ray is None:
        for _ in range(max(left, 0)):
            if stop is not None and stop.is_set():
                return
            trial = study.ask()
            params = config.suggest(trial)

            def judge(step: int, value: float, trial: Any = trial) -> bool:
                trial.report(value, step)
                return trial.should_prune()

            outcome = run_trial(model, update, threat, config.attack(params), params, referee, prior, judge, stop)
            yield _tell(study, trial, outcome, reported=True, setup=setup)
    else:
        from .ray_trials import run_on_ray

        for trial, outcome in run_on_ray(study, update, threat, config, ray, left, stop):
            yield _tell(study, trial, outcome, reported=False, setup=setup)


def _tell(study: Any, trial: Any, outcome: TrialOutcome, reported: bool, setup: dict[str, Any]) -> TrialRecord:
    """Record `outcome` in the study (its checkpoints as intermediate values unless the trial already reported
    them) and return it as a record."""
    from optuna.trial import TrialState

    if not reported:
        for step, value in outcome.checkpoints:
            if math.isfinite(value):
                trial.report(value, step)
    for key, value in (("attack_loss", outcome.attack_loss), ("iterations", outcome.iterations),
                       ("seconds", outcome.seconds), ("status", outcome.status), ("message", outcome.message[:300]),
                       ("t_estimate", list(outcome.t_estimate) if outcome.t_estimate else None)):
        trial.set_user_attr(key, value if not isinstance(value, float) or math.isfinite(value) else None)
    if outcome.status == "failed" or not math.isfinite(outcome.matching_loss):
        state = TrialState.FAIL
        study.tell(trial, state=state)
    elif outcome.pruned:
        state = TrialState.PRUNED
        study.tell(trial, state=state)
    else:
        state = TrialState.COMPLETE
        study.tell(trial, outcome.matching_loss)
    return TrialRecord(trial.number, state.name, outcome, setup, study)


def stored_outcome(frozen: Any) -> TrialOutcome:
    """A finished trial of a stored study, as an outcome (its answer image is not stored: None)."""
    attrs = frozen.user_attrs
    value = frozen.value if frozen.value is not None else (
        frozen.intermediate_values[max(frozen.intermediate_values)] if frozen.intermediate_values else math.inf)
    t = attrs.get("t_estimate")
    return TrialOutcome(dict(frozen.params), value, attrs.get("attack_loss") or math.inf, attrs.get("iterations", 0),
                        attrs.get("seconds", 0.0), attrs.get("status", frozen.state.name.lower()),
                        attrs.get("message", ""), sorted(frozen.intermediate_values.items()),
                        t_estimate=tuple(t) if t else None)


def best(records: list[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the lowest referee matching loss (Optuna's `best_trial`; ties: the earlier)."""
    finished = [r for r in records if r.state == "COMPLETE"]
    return min(finished, key=lambda r: (r.outcome.matching_loss, r.number), default=None)
