"""Gauss-Newton for least-squares matching: Levenberg-Marquardt steps solved by truncated conjugate gradients.

An l2 matching loss is a sum of squares, loss = ||r(x)||^2 with r = sqrt(w_l) (g_l(x) - g*_l) stacked over the
update's tensors (`matching.GradientMatcher.residuals`). Gauss-Newton models it as ||r + J d||^2, whose curvature
J^T J couples every pixel with every other through the update, where L-BFGS only learns the curvature from the
gradients it has seen. J (residuals x variables) is never formed: J^T u is one more backward through the
residuals' graph, and J v is the derivative of <J^T u, v> w.r.t. a dummy u (the "double vjp": J^T u is linear in
u, so the graph of J^T u built once at a point serves every v there). Each step solves
(J^T J + lambda I) d = -J^T r by a few conjugate-gradient iterations and moves by d if the loss falls; lambda
follows the actual against the predicted reduction (Nielsen's rule).

Every product is charged to the phase as the evaluations it costs (measured on faces32, docs/gauss_newton.md),
so iteration budgets compare with L-BFGS's honestly; under a time budget the clock does it anyway. An objective
that is not least squares (no residuals: cosine distance, a TV prior) is run with L-BFGS instead.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable

import torch

from .events import Event
from .optimisers import Phase, lbfgs_steps

CG_ITERATIONS = 10  # conjugate-gradient iterations per step at most
CG_TOLERANCE = 0.1  # stop once the system's residual is this fraction of its right-hand side
DAMPING = 1e-3  # the first lambda, relative to J^T J's curvature along the gradient
# What a product costs in matching evaluations (loss + gradient), measured on faces32, one image, one thread
# (docs/gauss_newton.md): building J^T u's graph at a point 0.70, one J^T J v (a J v, then a J^T u) 1.23-1.3; an
# evaluation whose gradient keeps its graph 1.17, one Hessian product 1.65.
LINEARISE_COST = 0.75
PRODUCT_COST = 1.3
GRAPH_COST = 0.17
HESSIAN_COST = 1.65


def _flat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


class Linearisation:
    """J^T J v products at one point, from the residuals' kept graph (`Phase.evaluate(keep_graph=True)`)."""

    def __init__(self, phase: Phase, variables: list[torch.Tensor]) -> None:
        self.phase = phase
        self.variables = variables
        self.residuals = [r for r in phase.residuals if r.requires_grad]
        self.dummies = [torch.zeros_like(r, requires_grad=True) for r in self.residuals]
        transposed = torch.autograd.grad(self.residuals, variables, grad_outputs=self.dummies, create_graph=True,
                                         allow_unused=True)
        self.used = [i for i, g in enumerate(transposed) if g is not None and g.requires_grad]
        self.transposed = [transposed[i] for i in self.used]
        phase.charge(LINEARISE_COST)

    def jvp(self, v: list[torch.Tensor]) -> list[torch.Tensor]:
        """J v, one tensor per residual (v one tensor per variable)."""
        out = torch.autograd.grad(self.transposed, self.dummies, grad_outputs=[v[i] for i in self.used],
                                  retain_graph=True, allow_unused=True)
        return [torch.zeros_like(r) if o is None else o for o, r in zip(out, self.residuals)]

    def vjp(self, u: list[torch.Tensor]) -> list[torch.Tensor]:
        """J^T u, one tensor per variable (u one tensor per residual)."""
        out = torch.autograd.grad(self.residuals, self.variables, grad_outputs=u, retain_graph=True,
                                  allow_unused=True)
        return [torch.zeros_like(v) if o is None else o for o, v in zip(out, self.variables)]

    def gram(self, v: torch.Tensor) -> torch.Tensor:
        """J^T J v for a flat v, charged to the phase."""
        sizes = [x.numel() for x in self.variables]
        parts = [p.view_as(x) for p, x in zip(v.split(sizes), self.variables)]
        product = _flat(self.vjp(self.jvp(parts)))
        self.phase.charge(PRODUCT_COST)
        return product


class Hessian:
    """Half the loss's Hessian times v at one point, from the gradient's graph (`Phase.evaluate(differentiable=
    True)`): the full curvature, with the residuals' own second derivatives that Gauss-Newton leaves out (they
    matter where the residuals stay large)."""

    def __init__(self, phase: Phase, variables: list[torch.Tensor], grads: tuple[torch.Tensor, ...]) -> None:
        self.phase = phase
        self.variables = variables
        self.grads = grads
        phase.charge(GRAPH_COST)

    def gram(self, v: torch.Tensor) -> torch.Tensor:
        sizes = [x.numel() for x in self.variables]
        parts = [p.view_as(x) for p, x in zip(v.split(sizes), self.variables)]
        out = torch.autograd.grad(self.grads, self.variables, grad_outputs=parts, retain_graph=True,
                                  allow_unused=True)
        self.phase.charge(HESSIAN_COST)
        return 0.5 * _flat(torch.zeros_like(x) if o is None else o for o, x in zip(out, self.variables))


def solve(gram: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, damping: float | None
          ) -> tuple[torch.Tensor, float, float | None]:
    """Truncated CG on (J^T J + lambda I) d = b from d = 0. `damping` None sets lambda to `DAMPING` times the
    curvature along b (from CG's first product, so it costs nothing). Returns (d, the reduction of
    ||r + J d||^2 the linear model predicts, lambda; None if b = 0 left nothing to solve)."""
    d = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()
    rr = first = float(b @ b)
    for _ in range(CG_ITERATIONS):
        if rr <= CG_TOLERANCE ** 2 * first or rr == 0:
            break
        curved = gram(direction)
        if damping is None:
            damping = DAMPING * abs(float(direction @ curved)) / rr
        curved = curved + damping * direction
        bend = float(direction @ curved)
        if bend <= 0:  # negative curvature (a Hessian): stop here, or from d = 0 take the damped gradient step
            if not d.any():
                d = direction / damping
            break
        alpha = rr / bend
        d += alpha * direction
        residual -= alpha * curved
        rr, previous = float(residual @ residual), rr
        direction = residual + (rr / previous) * direction
    # With b = -J^T r: ||r||^2 - ||r + J d||^2 = b.d + d.(b - A d) + lambda ||d||^2, where b - A d is CG's residual.
    return d, float(b @ d + d @ residual + (damping or 0.0) * (d @ d)), damping


def gauss_newton_steps(phase: Phase, variables: list[torch.Tensor], project: Callable[[], None] | None,
                       curvature: str = "gauss-newton") -> Generator[Event, None, None]:
    """Levenberg-Marquardt on the phase's residuals; each trial point is one evaluation, kept only if it lowers
    the loss. A trial is projected onto the feasible set (`project`) before it is evaluated. `curvature`
    "newton" uses the loss's Hessian instead of J^T J (a damped Newton-CG that stops at negative curvature)."""
    newton = curvature == "newton"

    def linearise(grads: tuple[torch.Tensor, ...]) -> Linearisation | Hessian:
        return Hessian(phase, variables, grads) if newton else Linearisation(phase, variables)

    sizes = [v.numel() for v in variables]

    def assign(x: torch.Tensor) -> None:
        with torch.no_grad():
            for v, chunk in zip(variables, x.split(sizes)):
                v.copy_(chunk.view_as(v))
            if project is not None:
                project()

    loss, grads = phase.evaluate(keep_graph=True, differentiable=newton)
    if not phase.residuals:  # not a least-squares objective
        yield from lbfgs_steps(phase, variables, project)
        return
    x, f, g = _flat(variables).detach().clone(), float(loss), _flat(grads).detach()
    linear = linearise(grads)
    damping, growth = None, 2.0
    while True:
        yield from phase.flush()
        step, predicted, damping = solve(linear.gram, -0.5 * g, damping)
        assign(x + step)
        loss, grads = phase.evaluate(keep_graph=True, differentiable=newton)
        gain = (f - float(loss)) / max(predicted, 1e-30)
        if float(loss) < f:
            x, f, g = _flat(variables).detach().clone(), float(loss), _flat(grads).detach()
            linear = linearise(grads)
            factor, growth = max(1 / 3, 1 - (2 * min(gain, 1.0) - 1) ** 3), 2.0
        else:
            assign(x)
            factor, growth = growth, growth * 2
        damping = None if damping is None else damping * factor
