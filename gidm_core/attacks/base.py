"""What every attack shares: its context (what it may see, its budget, its best guess) and the phase loop that
evaluates its objective once per iteration (the optimisers that drive it are in `optimisers.py`).

An attack is a generator of `Event`s. The CLI, the app, the benchmark and the tests all consume the same stream
through `Run`, which also turns a user's stop request or a NaN into a clean last event and keeps the best guess.
The best guess is chosen by matching loss alone: the attack never sees the truth.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Generator, Iterator

import torch

from ..client import SharedUpdate
from ..config import AttackConfig, ThreatModel
from ..models import DiffusionModel
from ..seeds import stream
from .events import Diverged, Event, EventKind, Guess, Objective, Result
from .optimisers import first_order_steps, lbfgs_steps
from .plateau import Plateau
from .steering import SteerAction, Steering


class _StopRequested(Exception):
    pass


class AttackContext:
    """What an attack may see (model, prior, shared update, threat model, config) plus the bookkeeping every
    attack needs: the iteration count, the best guess so far, the loss history, the stop flag and the steering
    channel (both read at every evaluation)."""

    def __init__(self, model: DiffusionModel, update: SharedUpdate, threat: ThreatModel, config: AttackConfig,
                 prior: DiffusionModel | None = None, stop: threading.Event | None = None,
                 steering: Steering | None = None) -> None:
        self.model = model
        self.prior = prior if prior is not None else model
        self.update = update
        self.threat = threat
        self.config = config
        self.stop = stop or threading.Event()
        self.steering = steering
        self.plateau = Plateau(config.plateau)  # a converged run stops as at the user's Stop, but "done"
        # Set while a phase descends a surrogate whose losses a later stage forgets (`restart_best`): it scores a
        # guess on the objective that answers. The surrogate's stall is its own floor, not convergence, so the
        # plateau waits; a run stopped meanwhile answers with its best guess rescored by it.
        self.provisional: Callable[[Guess], float] | None = None
        self.device = model.device
        self.generator = stream(config.attack_seed, "attacker")  # never the client's stream
        self.iteration = 0
        self.total_iterations = config.total_iterations
        self.now = time.perf_counter if config.clock == "wall" else time.process_time
        self.started = self.now()
        self.paused = 0.0  # seconds spent suspended at a yield, i.e. in the consumer (scoring, UI), not attacking
        self.planned = 0  # iterations planned for the phases begun so far: they split a time budget
        self.best: tuple[float, Guess] | None = None
        self.t_estimate: tuple[int, ...] | None = tuple(update.t.tolist()) if update.t is not None else None
        self.history: list[dict[str, float | int | str]] = []
        self.snapshots: dict[str, torch.Tensor] = {}
        self.phase_starts: dict[str, int] = {}
        self.details: dict[str, float | str] = {}

    def check_stop(self) -> None:
        """End the run here at the user's Stop, or once it converged (every loop that evaluates calls this)."""
        if self.stop.is_set() or (self.provisional is None and self.plateau.check(self.iteration, self.best)):
            raise _StopRequested

    def clock(self) -> float:
        """Seconds this attack has spent computing, on the config's clock, less the consumer's time."""
        return self.now() - self.started - self.paused

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.update.batch_size, *self.update.image_shape)

    def randn(self, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Seeded noise for initialisations, drawn on the CPU so every device gives the same numbers."""
        return torch.randn(shape or self.shape, generator=self.generator).to(self.device)

    def event(self, kind: EventKind, phase: str, losses: dict[str, float], guess: Guess | torch.Tensor,
              message: str = "") -> Event:
        if isinstance(guess, torch.Tensor):
            guess = Guess(guess)
        eps = None if guess.eps is None else guess.eps.detach().float().cpu()
        return Event(kind, self.iteration, self.total_iterations, phase, losses,
                     guess.image.detach().float().cpu().clamp(-1, 1), self.t_estimate, self.clock(), message, eps)

    def restart_best(self) -> None:
        """Forget the best guess and the plateau's memory: the objective changed (a sharper surrogate), so the
        losses before no longer compare with those after; the next phase, started from that guess, keeps it."""
        self.best = None
        self.plateau = Plateau(self.config.plateau)

    def answer(self) -> tuple[float, Guess] | None:
        """The best guess with its loss on the objective that answers: rescored while a surrogate stage runs."""
        if self.best is None or self.provisional is None:
            return self.best
        return self.provisional(self.best[1]), self.best[1]

    def consider(self, matching: float, guess: Guess) -> None:
        """Keep `guess` as the run's answer if it matches better than every earlier one (guess already detached)."""
        if self.best is None or matching < self.best[0]:
            self.best = (matching, guess)

    def optimise(self, phase: str, variables: list[torch.Tensor], objective: Callable[[], Objective],
                 iterations: int, lr: float, project: Callable[[], None] | None = None,
                 ) -> Generator[Event, None, Guess]:
        """Descend `objective` w.r.t. `variables` only, yielding events; return this phase's best guess.

        One objective evaluation is one iteration, for every optimiser, so budgets compare across them. The gradient
        is taken with `torch.autograd.grad` w.r.t. the attack's own variables, so no gradient ever accumulates in
        the model's weights (that alone made the latent phase ~20x slower in our measurements).
        """
        self.phase_starts[phase] = self.iteration
        tracker = _PhaseTracker(self, phase, variables, objective, *self._phase_budget(iterations))
        cfg = self.config
        steps = (lbfgs_steps(tracker, variables, project) if cfg.optimizer == "lbfgs"
                 else first_order_steps(tracker, variables, lr, project, cfg.optimizer, cfg.lr_schedule))
        try:
            yield from steps
        except _BudgetSpent:  # a steering mark queued by the evaluation that ended the phase still goes out
            yield from (event for event in tracker.flush() if event.kind == "steer")
        if tracker.best is None:
            raise ValueError(f"{phase} phase has no iterations")
        self.snapshots[phase] = tracker.best[1].image.detach().cpu()
        return tracker.best[1]

    def _phase_budget(self, iterations: int) -> tuple[float, float]:
        """(last iteration, deadline) of a phase planned for `iterations`. Under a time budget the iterations only
        weigh the phase: it gets their share of the remaining planned iterations of the remaining time, and the
        last phase gets all that is left."""
        left = self.total_iterations - self.planned
        self.planned += iterations
        seconds = self.config.seconds
        if seconds <= 0:
            return self.iteration + iterations, math.inf
        now = self.clock()
        share = iterations / left if left > iterations else 1.0
        return math.inf, now + max(seconds - now, 0.0) * share

    def result(self, status: str = "done", message: str = "") -> Result:
        if self.best is None:
            raise Diverged(message or "the attack produced no finite guess")
        loss, guess = self.best
        t = tuple(guess.t.tolist()) if guess.t is not None else self.t_estimate
        return Result(guess.image.detach().cpu(), loss, t,
                      None if guess.eps is None else guess.eps.detach().cpu(), self.iteration,
                      self.clock(), self.history, self.snapshots, self.phase_starts,
                      status, message, dict(self.details),
                      list(self.steering.log) if self.steering is not None else [])


class _BudgetSpent(Exception):
    """The phase has used its iterations or its time; raised by the evaluation that would exceed them, mid line
    search too."""


class _PhaseTracker:
    """Evaluates a phase's objective once per iteration and does the bookkeeping every optimiser shares: stop and
    budget checks, NaN detection, the best guess, the loss history and the events due at this iteration."""

    def __init__(self, ctx: AttackContext, phase: str, variables: list[torch.Tensor],
                 objective: Callable[[], Objective], end: float, deadline: float) -> None:
        self.ctx, self.phase, self.variables, self.objective = ctx, phase, variables, objective
        self.start, self.end = ctx.iteration, end
        self.began, self.deadline = ctx.clock(), deadline
        self.best: tuple[float, Guess] | None = None
        self.pending: list[Event] = []
        self.first = True
        self.progress = 0.0  # the fraction of the phase's budget (iterations or time) spent before this evaluation
        self.lr: float | None = None  # a first-order phase's base learning rate, which steering may change

    def evaluate(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """(total loss, its gradient w.r.t. the variables) at the variables' current values; queues due events."""
        ctx = self.ctx
        ctx.check_stop()
        if ctx.steering is not None:
            self._steer()
            ctx.check_stop()
        now = ctx.clock()
        # Every phase evaluates at least once, so that it hands a guess on: a run overshoots its time by one step.
        if ctx.iteration >= self.end or (self.best is not None and now >= self.deadline):
            raise _BudgetSpent
        self.progress = max((ctx.iteration - self.start) / (self.end - self.start),
                            (now - self.began) / max(self.deadline - self.began, 1e-9))
        current = self.objective()
        total = float(current.total.detach())
        matching = float(current.matching.detach())
        if not math.isfinite(total):
            raise Diverged(f"{self.phase} phase: the loss became {total} at iteration {ctx.iteration}; "
                           "try a smaller learning rate, or another optimiser")
        if self.best is None or matching < self.best[0]:
            self.best = (matching, current.guess.detached())
            ctx.consider(*self.best)
        losses = {"total": total, "matching": matching, **{k: float(v.detach()) for k, v in current.terms.items()}}
        ctx.history.append({"iteration": ctx.iteration, "phase": self.phase, **losses})
        if self.first:
            self.pending.append(ctx.event("phase", self.phase, losses, current.guess, f"{self.phase} phase starts"))
            self.first = False
        elif ctx.iteration % ctx.config.report_every == 0:
            self.pending.append(ctx.event("progress", self.phase, losses, current.guess))
        grads = torch.autograd.grad(current.total, self.variables)
        ctx.iteration += 1
        return current.total.detach(), grads

    def _steer(self) -> None:
        """Apply the steering actions due at this evaluation; a live pause waits here, off the attack's clock."""
        ctx, steering = self.ctx, self.ctx.steering
        actions = steering.due(ctx.iteration)
        while actions:
            action = actions.pop(0)
            self._apply(action)
            if action.action == "pause" and steering.live and not any(a.action == "resume" for a in actions):
                suspended = ctx.now()
                actions += steering.wait_while_paused(ctx.stop.is_set)
                ctx.paused += ctx.now() - suspended

    def _apply(self, action: SteerAction) -> None:
        ctx = self.ctx
        if action.action == "lr" and self.lr is not None:
            self.lr = float(action.value)
        elif action.action == "next_phase":
            self._resize(max(ctx.iteration, self.start + 1) - self.end)  # the phase still hands a guess on
            self.deadline = min(self.deadline, ctx.clock())
        elif action.action == "stop":
            ctx.stop.set()
        elif action.action == "extend":
            if math.isfinite(self.end):
                self._resize(int(action.value))
            else:  # a time budget: as many more seconds as this phase took per evaluation so far
                done = max(ctx.iteration - self.start, 1)
                self.deadline += action.value * (ctx.clock() - self.began) / done
        ctx.steering.record(action, ctx.iteration, self.phase)
        guess = ctx.best[1] if ctx.best is not None else torch.zeros(ctx.shape)
        self.pending.append(ctx.event("steer", self.phase, {}, guess, f"{action.describe()} at {ctx.iteration}"))

    def _resize(self, change: float) -> None:
        """Move the phase's last iteration by `change`, and the run's plan with it (an iteration budget only)."""
        if math.isfinite(self.end) and change:
            self.end += change
            self.ctx.total_iterations += int(change)
            self.ctx.planned += int(change)

    @property
    def iteration(self) -> int:
        return self.ctx.iteration

    def flush(self) -> Iterator[Event]:
        events, self.pending = self.pending, []
        return iter(events)


AttackFn = Callable[[AttackContext], Generator[Event, None, None]]


class Run:
    """One attack run. Iterate it for events; when the iteration ends `result` holds the answer.

    `stop()` (from any thread) ends the run at the next step and keeps what it had. A NaN/inf ends it with an
    "error" event and the best finite guess so far, never an exception.
    """

    def __init__(self, attack: AttackFn, context: AttackContext) -> None:
        self._attack = attack
        self.context = context
        self.result: Result | None = None

    def stop(self) -> None:
        self.context.stop.set()
        if self.context.steering is not None:
            self.context.steering.wake()  # a paused run sees the flag at once

    def __iter__(self) -> Iterator[Event]:
        ctx = self.context
        status, message = "done", "finished"
        try:
            # No global SDPA switch here: models.prepare_for_inversion already gave every attention module the
            # plain (twice differentiable) processor, and a global switch would leak between concurrent runs.
            for event in self._attack(ctx):
                suspended = ctx.now()
                yield event
                ctx.paused += ctx.now() - suspended
        except _StopRequested:
            status, message = ctx.plateau.ending(ctx.iteration)
            ctx.best = ctx.answer()  # a surrogate's loss is not the answer's
        except Diverged as err:
            status, message = "error", str(err)
        if ctx.best is None:
            self.result = None
            yield Event("error", ctx.iteration, ctx.total_iterations, "", {}, torch.zeros(ctx.shape),
                        ctx.t_estimate, ctx.clock(), message)
            return
        self.result = ctx.result(status, message)
        yield ctx.event(status, "final", {"matching": self.result.matching_loss}, ctx.best[1], message)

    def run_to_end(self) -> Result | None:
        """Consume every event and return the result (for scripts and tests that need no streaming)."""
        for _ in self:
            pass
        return self.result
