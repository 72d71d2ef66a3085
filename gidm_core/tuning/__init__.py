"""The attacker tunes itself: `python -m gidm_core tune`. An Optuna study over a method's hyperparameters
(`space.py`), each trial a short attack on one shared update (`trial.py`), ranked by a referee matching loss only
(`study.py`); trials run in this process or as Ray tasks (`ray_trials.py`). The evaluator's scores are kept apart,
by the command (`command.py`) and the app, and never reach the study."""

from __future__ import annotations

from .space import SPACES, default_params, suggest
from .study import RayPlan, TrialRecord, TuneConfig, best, tune
from .trial import Referee, TrialOutcome, run_trial

__all__ = ["SPACES", "RayPlan", "Referee", "TrialOutcome", "TrialRecord", "TuneConfig", "best", "default_params",
           "run_trial", "suggest", "tune"]
