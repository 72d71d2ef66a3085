"""Steering a running attack: change the learning rate, end or extend the current phase, pause and resume.

A front end asks (`Steering.request`, from any thread); the attack loop reads the channel at every objective
evaluation, right where it checks the stop flag, so an action takes effect at the next evaluation and nowhere
else. Every applied action is logged with the evaluation it took effect at; that log is a schedule
which, on the same seeds, makes the same run again: the CLI's `attack --steer schedule.json`.

Pause and resume change no number (a paused attack's clock stops), so in a replayed schedule they are marks only;
"stop" ends the run there, as the user's Stop did (a stopped run's schedule ends with one).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import AttackConfig, ConfigError

ACTIONS = ("lr", "next_phase", "extend", "pause", "resume", "stop")
MAX_EXTEND = 100_000  # evaluations one extension may add
MAX_LR = 1e3
MAX_SCHEDULE = 10_000  # actions in one schedule file


@dataclass(frozen=True)
class SteerAction:
    """One steering action. `at` is the evaluation it takes effect at (None: the next one, for live requests);
    `value` is the new learning rate for "lr", the number of evaluations for "extend", else None."""

    action: str
    value: float | None = None
    at: int | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(f"unknown steering action {self.action!r}: choose one of {', '.join(ACTIONS)}")
        if self.at is not None and (not isinstance(self.at, int) or isinstance(self.at, bool) or self.at < 0):
            raise ConfigError(f"steering 'at' must be an evaluation number >= 0, got {self.at!r}")
        value = self.value
        if self.action == "lr":
            if not _number(value) or not 0 < value <= MAX_LR:
                raise ConfigError(f"a learning rate must be a number in (0, {MAX_LR:g}], got {value!r}")
        elif self.action == "extend":
            if not _number(value) or value != int(value) or not 1 <= value <= MAX_EXTEND:
                raise ConfigError(f"extend takes a whole number of evaluations in [1, {MAX_EXTEND}], got {value!r}")
        elif value is not None:
            raise ConfigError(f"{self.action} takes no value, got {value!r}")

    def describe(self) -> str:
        if self.action == "lr":
            return f"learning rate -> {self.value:g}"
        if self.action == "extend":
            return f"phase extended by {self.value:g} evaluations"
        return {"next_phase": "next phase now", "pause": "paused", "resume": "resumed", "stop": "stopped"}[self.action]


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_steerable(action: SteerAction, config: AttackConfig) -> None:
    """Refuse (one line) an action this run's config cannot take."""
    if config.starts > 1:
        raise ConfigError(f"this run races {config.starts} starts; steering follows a single start (starts = 1)")
    if action.action == "lr" and config.optimizer == "lbfgs":
        raise ConfigError("L-BFGS picks its own step length by a line search: the learning rate steers Adam and "
                          "SGD phases only")


class Steering:
    """The channel from a front end into one run: live requests, a replayed schedule, and the log of what was
    applied where. Thread-safe: requests come from the UI's threads, the attack reads in its own."""

    def __init__(self, config: AttackConfig, schedule: list[SteerAction] | tuple[SteerAction, ...] = (),
                 live: bool = True) -> None:
        for action in schedule:
            check_steerable(action, config)
            if action.at is None:
                raise ConfigError(f"a schedule's {action.action} needs 'at', the evaluation it takes effect at")
        self.config = config
        self.live = live  # False: a replayed schedule, whose pauses are marks rather than waits
        self._scheduled = sorted(schedule, key=lambda a: a.at)
        self._pending: list[SteerAction] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self.paused = False
        self.log: list[dict] = []  # {"at", "action", "value", "phase"} of every applied action, in order

    def request(self, action: str, value: float | None = None) -> SteerAction:
        """Queue a live action for the next evaluation (raises `ConfigError` for a value it cannot take)."""
        steer = SteerAction(action, value)
        check_steerable(steer, self.config)
        with self._wake:
            if action == "pause" and (self.paused or any(a.action == "pause" for a in self._pending)):
                raise ConfigError("the run is already paused")
            if action == "resume" and not (self.paused or any(a.action == "pause" for a in self._pending)):
                raise ConfigError("the run is not paused")
            self._pending.append(steer)
            self._wake.notify_all()
        return steer

    def due(self, iteration: int) -> list[SteerAction]:
        """The actions that take effect at evaluation `iteration`: the schedule's, then the live requests."""
        with self._lock:
            actions = []
            while self._scheduled and self._scheduled[0].at <= iteration:
                actions.append(self._scheduled.pop(0))
            actions += self._pending
            self._pending = []
        return actions

    def record(self, action: SteerAction, iteration: int, phase: str) -> None:
        self.log.append({"at": iteration, "action": action.action, "value": action.value, "phase": phase})

    def wait_while_paused(self, stopped: Callable[[], bool]) -> list[SteerAction]:
        """Block until a resume (or the stop flag); returns the actions queued meanwhile, resume included."""
        with self._wake:
            self.paused = True
            while not stopped() and not any(a.action == "resume" for a in self._pending):
                self._wake.wait(timeout=0.2)
            self.paused = False
            actions, self._pending = self._pending, []
        return actions

    def wake(self) -> None:
        """Let a paused run see the stop flag at once."""
        with self._wake:
            self._wake.notify_all()


def schedule_from_log(log: list[dict]) -> list[dict]:
    """The schedule file's entries for an applied log (what `load_schedule` reads back)."""
    return [{k: v for k, v in entry.items() if k != "phase" and v is not None} for entry in log]


def write_schedule(log: list[dict], path: Path) -> None:
    path.write_text(json.dumps(schedule_from_log(log), indent=1) + "\n")


def load_schedule(path: Path, config: AttackConfig) -> list[SteerAction]:
    """A schedule file: a JSON list of {"at": evaluation, "action": one of ACTIONS, "value": ...}. Raises
    `ConfigError` with one line naming the entry at fault."""
    try:
        entries = json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read the steering schedule {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"the steering schedule {path} is not JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(entries, list) or len(entries) > MAX_SCHEDULE:
        raise ConfigError(f"the steering schedule {path} must be a JSON list of at most {MAX_SCHEDULE} actions")
    actions = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) - {"at", "action", "value", "phase"} or "at" not in entry:
            raise ConfigError(f"steering schedule entry {i}: expected {{\"at\": n, \"action\": ..., \"value\": ...}}"
                              f", got {json.dumps(entry)[:80]}")
        try:
            action = SteerAction(entry.get("action", ""), entry.get("value"), entry["at"])
            check_steerable(action, config)
        except ConfigError as err:
            raise ConfigError(f"steering schedule entry {i}: {err}") from None
        actions.append(action)
    return actions
