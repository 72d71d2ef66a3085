"""What an attack produces: the `Event`s it streams, the `Guess` an evaluation makes, the `Result` it answers with.

Plain data, shared by the attacks, the evaluator and every front end; the loop that makes them lives in `base.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

EventKind = str  # "phase" (a phase starts), "progress", "steer" (a steering action applied), "done", "stopped"
# (by the user), "error" (NaN/inf)


@dataclass(frozen=True)
class Event:
    """One snapshot of a running attack. `metrics` stays empty until an evaluator with the truth fills it in."""

    kind: EventKind
    iteration: int
    total_iterations: int
    phase: str
    losses: dict[str, float]
    reconstruction: torch.Tensor  # (B, C, H, W) on the CPU, in [-1, 1]
    t_estimate: tuple[int, ...] | None
    elapsed: float  # seconds of attack computation so far; time the consumer spends between events is excluded
    message: str = ""
    eps_estimate: torch.Tensor | None = None  # (B, C, H, W) on the CPU, when the attack estimates eps
    metrics: dict[str, float] = field(default_factory=dict)

    def with_metrics(self, metrics: dict[str, float]) -> Event:
        return replace(self, metrics={**self.metrics, **metrics})


@dataclass
class Guess:
    """The attack's current answer, as one objective evaluation produces it."""

    image: torch.Tensor
    eps: torch.Tensor | None = None
    t: torch.Tensor | None = None

    def detached(self) -> Guess:
        """A copy that no longer holds the autograd graph, for keeping beyond this step."""
        def keep(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x.detach().clone()
        return Guess(keep(self.image), keep(self.eps), keep(self.t))


@dataclass
class Result:
    """The attack's final answer: the guess with the lowest matching loss seen in any phase."""

    reconstruction: torch.Tensor
    matching_loss: float
    t_estimate: tuple[int, ...] | None
    eps_estimate: torch.Tensor | None
    iterations: int
    seconds: float
    history: list[dict[str, float | int | str]]
    snapshots: dict[str, torch.Tensor]
    phase_starts: dict[str, int]
    status: str = "done"
    message: str = ""
    details: dict[str, float | str] = field(default_factory=dict)  # what the attack read off the update
    steering: list[dict] = field(default_factory=list)  # the steering actions applied, where (steering.py)


class Diverged(RuntimeError):
    """The objective became NaN or inf."""


@dataclass
class Objective:
    """One evaluation: `total` is what the optimiser descends; `matching` alone ranks guesses."""

    total: torch.Tensor
    matching: torch.Tensor
    terms: dict[str, torch.Tensor]
    guess: Guess
