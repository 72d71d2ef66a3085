"""Many starts for the price of few: successive halving over independent starts of one attack.

Whether an attack finds the image often depends on where it starts (GIDM+ on face-29, attacker seeds 0-3: 12.9 /
14.8 / 47.6 / 26.3 dB at 60 CPU-s), and the matching loss alone tells a start that found the basin from one that
did not. So `AttackConfig.starts` = N runs N starts of the same attack, each from its own seeded draws, and drops
the worse half (by best matching loss so far) at checkpoints: all N run the first `FIRST_CHECKPOINT` of a start's
plan, half of them the next stretch, and so on, until one start finishes the plan. With the checkpoints at 15 %,
30 %, 60 % ... of the plan, 4 starts cost 1.6 runs and 8 starts 2.8.

Each start is a full run of the method on its own `AttackContext` (its own phases, optimiser state and clock), so
nothing in the attacks changes. Under a time budget each start's plan gets `seconds / cost_factor(N)` of its own
clock, which only runs while that start computes: the whole run then takes the budget. Under an iteration budget
each start plans the config's iterations, and the run does `cost_factor(N)` times as many evaluations.

Starts are optimised one after another, not as one batched evaluation: L-BFGS's line searches take different
numbers of evaluations in different starts, so a lockstep batch would idle most of it, and a batch of 4 matching
evaluations (torch.func.vmap, measured on faces32, one thread) costs 2.9 single ones, not 1. Batching does pay for
*scoring* candidates without optimising them (GIDM's `restarts`): `batched_matching` scores N candidates in one
call.

The attacker's draws stay its own: start k draws from the attacker stream of `seeds.derive(attack_seed, k)` (start
0 from `attack_seed` itself, so one start is exactly the single-start run). The answer is the lowest matching loss
any start reached. Events stream while any start runs, each showing the leading start's best guess and a status
line saying which start leads and by how much matching loss.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch.func import grad, vmap

from ..diffusion import diffusion_loss
from ..seeds import derive
from .base import AttackContext, AttackFn, _StopRequested
from .events import Diverged, Event, Guess
from .matching import GradientMatcher

FIRST_CHECKPOINT = 0.15  # fraction of a start's plan before the first halving; later checkpoints double it


def halving_plan(starts: int) -> tuple[float, ...]:
    """The fractions of a start's plan at which the worse half of the remaining starts is dropped."""
    plan, alive, at = [], starts, FIRST_CHECKPOINT
    while alive > 1:
        plan.append(min(at, 0.9))
        alive, at = (alive + 1) // 2, at * 2
    return tuple(plan)


def cost_factor(starts: int) -> float:
    """Evaluations of an N-start run per evaluation of one start's plan (1 for one start, 1.6 for four)."""
    cost, alive, done = 0.0, starts, 0.0
    for at in halving_plan(starts):
        cost += alive * (at - done)
        alive, done = (alive + 1) // 2, at
    return cost + alive * (1 - done)


def planned_evaluations(starts: int, per_start: int) -> int:
    """Evaluations of an N-start run whose starts plan `per_start` each (a start pauses at the first evaluation
    that reaches its checkpoint, so checkpoints round up)."""
    total, alive, done = 0, starts, 0
    for at in halving_plan(starts):
        reached = min(math.ceil(at * per_start - 1e-9), per_start)
        total += alive * (reached - done)
        alive, done = (alive + 1) // 2, reached
    return total + alive * (per_start - done)


def with_starts(attack: AttackFn) -> AttackFn:
    """`attack`, run as `config.starts` starts under successive halving (as it is, for one start)."""
    def run(ctx: AttackContext) -> Generator[Event, None, None]:
        if ctx.config.starts == 1:
            yield from attack(ctx)
        else:
            yield from _successive_halving(ctx, attack)
    return run


@dataclass
class _Start:
    index: int
    ctx: AttackContext
    events: Iterator[Event]
    suspended: float  # when this start last stopped computing: the time until it resumes is not its own
    rows: int = 0  # of its history, rows already merged into the run's
    done: bool = False
    failure: str = ""
    global_rows: list[int] = field(default_factory=list)

    @property
    def best(self) -> float:
        return self.ctx.best[0] if self.ctx.best is not None else math.inf


def _successive_halving(ctx: AttackContext, attack: AttackFn) -> Generator[Event, None, None]:
    cfg = ctx.config
    # Each start reports every evaluation, so that it can be paused at a checkpoint to the evaluation (L-BFGS: to
    # the line search); the run forwards the user's `report_every`.
    own = replace(cfg, starts=1, seconds=cfg.seconds / cost_factor(cfg.starts), report_every=1)
    ctx.total_iterations = planned_evaluations(cfg.starts, own.total_iterations)  # the plan of all starts
    halving = _Halving(ctx)
    for k in range(cfg.starts):
        sub = AttackContext(ctx.model, ctx.update, ctx.threat,
                            replace(own, attack_seed=cfg.attack_seed if k == 0 else derive(cfg.attack_seed, k)),
                            ctx.prior, ctx.stop)
        halving.starts.append(_Start(k, sub, iter(attack(sub)), sub.started))
    alive = list(halving.starts)
    for checkpoint in (*halving_plan(cfg.starts), 1.0):
        for start in alive:
            yield from halving.advance(start, checkpoint)
        running = sorted((s for s in alive if not s.failure), key=lambda s: s.best)
        if not running:
            raise Diverged(alive[0].failure)
        alive = running[:(len(running) + 1) // 2] if checkpoint < 1 else running[:1]
    winner = alive[0]
    ctx.best = winner.ctx.best or ctx.best  # ranked on the objective that answers, not a surrogate stage's
    ctx.snapshots = dict(winner.ctx.snapshots)
    ctx.phase_starts = {phase: winner.global_rows[i] for phase, i in winner.ctx.phase_starts.items()
                        if i < len(winner.global_rows)}


def _answer(starts: list[_Start]) -> tuple[float, Guess] | None:
    """The lowest of the starts' best guesses on the objective that answers: a start stopped inside a surrogate
    stage (`AttackContext.provisional`) has its best rescored first."""
    scored = [best for best in (s.ctx.answer() for s in starts if not s.failure) if best is not None]
    return min(scored, key=lambda best: best[0], default=None)


def _progress(start: _Start) -> float:
    """The fraction of its own plan this start has spent (time or iterations, as the budget is set)."""
    sub = start.ctx
    if sub.config.seconds > 0:
        return sub.clock() / sub.config.seconds
    return sub.iteration / sub.total_iterations


class _Halving:
    """The run's side of the starts: merges their evaluations into its count, history and best guess, and turns
    their events into its own."""

    def __init__(self, ctx: AttackContext) -> None:
        self.ctx = ctx
        self.starts: list[_Start] = []
        self.seen_phases: set[str] = set()
        self.reported = -ctx.config.report_every  # the run's iteration at its last progress event

    def advance(self, start: _Start, until: float) -> Iterator[Event]:
        """Run `start` until it has spent `until` of its plan (or ends), forwarding its events as the run's."""
        sub = start.ctx
        sub.paused += sub.now() - start.suspended  # the other starts' and the consumer's time is not this start's
        while not start.done and _progress(start) < until:
            try:
                event = next(start.events)
            except StopIteration:
                start.done = True
            except Diverged as err:  # a start that hits NaN/inf is dropped; the others go on
                start.done, start.failure = True, str(err)
            except _StopRequested:
                if not sub.plateau.message:  # the user's Stop ends the run, with the best answer so far
                    self.ctx.best = _answer(self.starts) or self.ctx.best
                    raise
                start.done = True  # this start converged (`AttackConfig.plateau`): it is finished, not the run
            else:
                self._merge(start)
                forwarded = self._as_run_event(start, event)
                if forwarded is not None:
                    suspended = sub.now()
                    yield forwarded
                    sub.paused += sub.now() - suspended
            finally:
                self._merge(start)
        start.suspended = sub.now()

    def _merge(self, start: _Start) -> None:
        """Bring the start's new evaluations into the run's count, history and best guess."""
        ctx = self.ctx
        new = start.ctx.history[start.rows:]
        for row in new:
            start.global_rows.append(len(ctx.history))
            ctx.history.append({**row, "iteration": len(ctx.history), "start": start.index})
        start.rows += len(new)
        ctx.iteration = sum(s.ctx.iteration for s in self.starts)
        if start.ctx.best is not None:
            ctx.consider(*start.ctx.best)
        if start.ctx.t_estimate is not None:
            ctx.t_estimate = start.ctx.t_estimate

    def _as_run_event(self, start: _Start, event: Event) -> Event | None:
        """A start's event as the run's (its count and clock, the leading guess, the standing in the message), or
        None for a progress event sooner than the run's `report_every`."""
        ctx = self.ctx
        kind = event.kind
        if kind == "phase":
            if event.phase in self.seen_phases:
                kind = "progress"
            self.seen_phases.add(event.phase)
        if kind == "progress" and ctx.iteration - self.reported < ctx.config.report_every:
            return None
        if kind == "progress":
            self.reported = ctx.iteration
        message = standing(self.starts, start)
        if event.message and kind != "progress":
            message = f"{event.message} ({message})"
        best = ctx.best[1] if ctx.best is not None else None
        image = event.reconstruction if best is None else best.image.detach().float().cpu().clamp(-1, 1)
        eps = event.eps_estimate if best is None or best.eps is None else best.eps.detach().float().cpu()
        return replace(event, kind=kind, iteration=ctx.iteration, total_iterations=ctx.total_iterations,
                       reconstruction=image, eps_estimate=eps, t_estimate=ctx.t_estimate, elapsed=ctx.clock(),
                       message=message)


def standing(starts: list[_Start], running: _Start) -> str:
    """The status line: which start leads, by how much matching loss over the next best, which one computes."""
    ranked = sorted((s for s in starts if s.ctx.best is not None and not s.failure), key=lambda s: s.best)
    if not ranked:
        return f"start {running.index + 1} of {len(starts)} running"
    lead = ranked[0]
    line = f"start {lead.index + 1} of {len(starts)} leads, matching {lead.best:.3g}"
    if len(ranked) > 1:
        line += f"; start {ranked[1].index + 1}: {ranked[1].best:.3g} ({ranked[1].best / max(lead.best, 1e-30):.3g}x)"
    return line + f"; start {running.index + 1} running"


def batched_matching(matcher: GradientMatcher, images: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                     create_graph: bool = False) -> torch.Tensor:
    """The matching loss of each of N candidates ((N, B, C, H, W) images, eps shared or per candidate), in one
    vectorised evaluation: the same numbers as N calls of `matcher`. With `create_graph` the losses stay
    differentiable w.r.t. the candidates (measured on faces32, one thread: 4 together cost 2.9 single evaluations).

    FedAvg updates (several local steps) are scored one by one: their re-simulation is not vectorised."""
    model = matcher.model
    # Shared eps has one row per secret (per slot of every step with fresh noise), not necessarily per image.
    eps = eps.expand(len(images), *eps.shape) if eps.dim() == images.dim() - 1 else eps
    if matcher.training is not None:  # each re-simulated step takes a gradient: autograd stays on
        losses = torch.stack([matcher(x, e, t, create_graph=create_graph) for x, e in zip(images, eps)])
        return losses if create_graph else losses.detach()
    with torch.set_grad_enabled(create_graph):
        params = {name: p.detach() for name, p in model.unet.named_parameters()}

        def one(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
            grads = grad(lambda weights: diffusion_loss(model, x, e, t, weights))(params)
            return matcher.distance_to(tuple(grads.values()))

        return vmap(one)(images, eps)
