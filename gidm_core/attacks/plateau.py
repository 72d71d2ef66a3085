"""The plateau rule (`AttackConfig.plateau`): a run whose best matching loss has stopped improving ends, "done",
so a converged run frees its slot on a shared server instead of polishing digits nobody sees.

The scale is the run's first matching loss, not the current one: with eps and t known, L-BFGS drives the loss down
by a steady factor for hundreds of evaluations (faces32/face-05: 0.098 at the first, 7.5e-7 at 140, 1.3e-9 at 400),
so a rule relative to the current loss would never fire. Only the attack's own loss is read, never the truth.
"""

from __future__ import annotations

from typing import Any

PLATEAU_TOLERANCE = 3e-6  # of the first matching loss; with a window of 20, faces32/face-05 stops near 45 dB


class Plateau:
    """Watches the run's best matching loss: `check` is True once it has improved by less than PLATEAU_TOLERANCE
    x the first evaluation's loss over the last `window` evaluations (0: never)."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.first: float | None = None
        self.anchor: tuple[int, float] | None = None  # (iteration, best loss) when the best last improved enough
        self.message = ""

    def check(self, iteration: int, best: tuple[float, Any] | None) -> bool:
        """Called before each evaluation with the run's best (loss, guess) so far."""
        if not self.window or best is None:
            return False
        loss = best[0]
        self.first = loss if self.first is None else self.first  # the best after one evaluation is the first
        if self.anchor is None or self.anchor[1] - loss > PLATEAU_TOLERANCE * self.first:
            self.anchor = (iteration, loss)
        elif iteration - self.anchor[0] >= self.window:
            self.message = (f"converged at iteration {iteration}: the matching loss improved by less than "
                            f"{PLATEAU_TOLERANCE:g} of its first value over the last {self.window} evaluations")
            return True
        return False

    def ending(self, iteration: int) -> tuple[str, str]:
        """(status, message) of a run that left its loop at a stop: it converged, or its user stopped it."""
        if self.message:
            return "done", self.message
        return "stopped", f"stopped by the user at iteration {iteration}"
