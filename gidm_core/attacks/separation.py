"""Separating a batch's shared update into per-sample parts through the time conditioning.

Every linear layer on the time path (each ResNet block's `time_emb_proj`, the time embedding's own `linear_1` and
`linear_2`) sees, for sample b, an input row e_b that depends on that sample's timestep t_b alone. Its weight and
bias gradients are therefore

    G = sum_b d_b e_b^T,   g = sum_b d_b,    i.e.   [G, g] = D^T [E, 1],

where d_b is the gradient of the loss w.r.t. that layer's output for sample b (a function of x_b, eps_b and t_b
only: GroupNorm and attention are per sample). Once the t_b are known (revealed, or read exactly off the update,
`timestep.py`), E is known, and when the rows [e_b, 1] are linearly independent (distinct timesteps, B <= the
layer's input width + 1) least squares returns every d_b. The fit's relative residual says how well the update
has this structure: ~1e-6 for a FedSGD gradient, large for a noisy, pruned or multi-step update.

A one-step SGD delta is -lr times a gradient, so its parts are -lr d_b; the attack divides that back out. Several
local steps at the same t still lie in the same row space (they separate, approximately, because the weights move
between steps). With fresh noise every step draws new timesteps, so the rows are the E x B slots (one per image of
every step): an SGD delta then splits into one part per slot, -lr times that step's d (approximately, as the
weights move: measured residual 1e-5 on faces32 at E = 4, lr 1e-3), even for a single image. That is what
rebalances a delta whose steps differ in scale (on faces32 a t = 5 step's gradient is 5x a t = 332 one's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..client import SharedUpdate
from ..config import ThreatModel
from ..models import DiffusionModel

# A fit that leaves more than this fraction of a layer's gradient unexplained is not trusted (exact FedSGD
# gradients measure ~1e-6 on faces32; a noise defence or a mixed update leaves far more).
MAX_RESIDUAL = 1e-3
# Rows closer than this to dependence amplify float32 rounding past the residual test (condition number of [E, 1]).
MAX_CONDITION = 1e5


@dataclass(frozen=True)
class TimeLayer:
    """A linear layer whose input depends on the timestep alone: its module name and the batch's input rows."""

    name: str
    inputs: torch.Tensor  # (B, in_features), float64


@dataclass(frozen=True)
class Separation:
    """The outcome: per-sample output gradients of each separable layer (when `ok`), or why there are none."""

    ok: bool
    message: str
    names: tuple[str, ...] = ()
    parts: tuple[torch.Tensor, ...] = ()  # one (B, out_features) tensor per layer: row b is sample b's d_b
    residual: float = float("nan")  # worst relative residual over the layers
    # One (B, in_features + 1) map per layer: parts = solver @ [weight | bias]^T of an update of this kind. A guess's
    # re-simulated delta goes through the same map, so its parts cost no extra pass (`per_sample.SeparatedMatcher`).
    solvers: tuple[torch.Tensor, ...] = ()
    # Each layer's (weight, bias) positions among the update's tensors, where `solvers` read them.
    entries: tuple[tuple[int, int], ...] = ()


def time_layers(model: DiffusionModel, t: torch.Tensor, shape: tuple[int, ...]) -> list[TimeLayer]:
    """Every `nn.Linear` of the UNet whose input rows depend on t alone, with those rows for this batch.

    Found by running the UNet twice on different images at the same t and keeping the linear layers whose (B, in)
    inputs agree: no assumption about the architecture's names (class embeddings would be found alike)."""
    unet = model.unet
    captured: list[dict[str, torch.Tensor]] = []  # one dict of layer inputs per probe pass
    handles = []
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear):
            def hook(_module, args, _output, name=name):
                captured[-1][name] = args[0].detach()
            handles.append(module.register_forward_hook(hook))
    generator = torch.Generator().manual_seed(0)  # probe images only: nothing about them reaches the result
    try:
        with torch.no_grad():
            for _ in range(2):
                captured.append({})
                unet(torch.randn(shape, generator=generator).to(model.device), t.to(model.device))
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for name, first in captured[0].items():
        second = captured[1].get(name)
        if first.dim() == 2 and first.shape[0] == shape[0] and second is not None and torch.equal(first, second):
            layers.append(TimeLayer(name, first.double().cpu()))
    return layers


def refusal(update: SharedUpdate, threat: ThreatModel) -> str | None:
    """Why this kind of update cannot be separated, known before any arithmetic (None when it may be)."""
    if update.secrets < 2:
        return "one image at one timestep: nothing to separate"
    defence = threat.defence
    if defence.clip > 0 or defence.sigma > 0 or defence.keep < 1:
        return (f"not separated: the client's defence ({defence.describe()}) breaks the per-sample structure; "
                "matching the batch's summed update only")
    training = update.training
    if training is not None and training.optimizer != "sgd":
        return (f"not separated: {training.optimizer} deltas normalise each entry, so the update is no sum of "
                "per-sample parts; matching the batch's summed update only")
    return None


def separate(model: DiffusionModel, update: SharedUpdate, t: torch.Tensor, threat: ThreatModel) -> Separation:
    """Split `update` into per-sample parts of every time-conditioned linear layer, given its timesteps (one per
    secret: per image, or with fresh noise per slot of every local step)."""
    reason = refusal(update, threat)
    if reason is not None:
        return Separation(False, reason)
    t = t.long().cpu()
    if len(set(t.tolist())) < len(t):
        return Separation(False, f"not separated: the batch shares timesteps (t = {t.tolist()}), so the time "
                                 "conditioning cannot tell its samples apart; matching the summed update only")
    layers = time_layers(model, t, (len(t), *update.image_shape))
    index = {name: i for i, (name, _) in enumerate(model.unet.named_parameters())}
    names, parts, solvers, entries, residuals, skipped = [], [], [], [], [], []
    training, schedule = update.training, update.schedule
    scale = 1.0 if training is None else -training.lr * (1 if schedule is not None and schedule.fresh
                                                         else training.steps)
    for layer in layers:
        weight, bias = f"{layer.name}.weight", f"{layer.name}.bias"
        if weight not in index or bias not in index:
            continue
        rows = torch.cat([layer.inputs, torch.ones(len(t), 1, dtype=torch.float64)], dim=1)  # (B, in + 1)
        if rows.shape[0] > rows.shape[1]:
            skipped.append(f"{layer.name} (input width {rows.shape[1] - 1} < {rows.shape[0]} samples)")
            continue
        singular = torch.linalg.svdvals(rows)
        if singular[-1] <= singular[0] / MAX_CONDITION:
            skipped.append(f"{layer.name} (timesteps too close: condition {float(singular[0] / singular[-1]):.0e})")
            continue
        grad = torch.cat([update.gradients[index[weight]].detach().double().cpu(),
                          update.gradients[index[bias]].detach().double().cpu()[:, None]], dim=1)  # (out, in + 1)
        solver = torch.linalg.pinv(rows.T)  # (B, in + 1): the least-squares solution of rows^T D = grad^T
        solution = solver @ grad.T  # (B, out)
        residual = float((rows.T @ solution - grad.T).norm() / grad.norm().clamp_min(1e-300))
        names.append(layer.name)
        parts.append((solution / scale).float())
        solvers.append((solver / scale).float())
        entries.append((index[weight], index[bias]))
        residuals.append(residual)
    if not names:
        detail = "; ".join(skipped) if skipped else "the model has no time-conditioned linear layer"
        return Separation(False, f"not separated: {detail}; matching the summed update only")
    worst = max(residuals)
    if worst > MAX_RESIDUAL:
        return Separation(False, f"not separated: the per-sample fit leaves {worst:.1e} of the time layers' "
                                 "update unexplained (noise, pruning, or steps that mix timesteps); matching the "
                                 "summed update only", residual=worst)
    approx = ""
    if update.training is not None and update.training.steps > 1:
        approx = f", approximate: {update.training.steps} local steps move the weights between gradients"
    note = f"; skipped {', '.join(skipped)}" if skipped else ""
    what = "slots (images x steps)" if update.secrets > update.batch_size else "samples"
    return Separation(True, f"separated {len(t)} {what} through {len(names)} time-conditioned layers "
                            f"(residual {worst:.1e}{approx}){note}",
                      tuple(names), tuple(p.to(model.device) for p in parts), worst,
                      tuple(s.to(model.device) for s in solvers), tuple(entries))
