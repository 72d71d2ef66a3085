"""What the tuner may change, per attack method: one search space for each entry of `methods.REGISTRY`.

A space is data (ranges and choices); `suggest` asks an Optuna trial for one point of it and turns that point into
`AttackConfig` overrides. The learning rates only exist under a first-order optimiser (L-BFGS needs none), so they
are asked for only then: Optuna's define-by-run spaces make that a plain `if`. Every space holds its method's
defaults as one point (`default_params`), which the study runs first, so a tuned answer is never chosen over the
defaults without having been compared with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..config import attack_config
from ..methods import REGISTRY, MethodSpec


@dataclass(frozen=True)
class Float:
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Int:
    low: int
    high: int


@dataclass(frozen=True)
class Choice:
    options: tuple[Any, ...]


Param = Float | Int | Choice
ADAM_ONLY = ("lr", "latent_lr")  # asked for only when the trial's optimiser is first-order

# Shared by every method: how the distance is measured, how its tensors are weighed, which optimiser descends it and
# how many starts share the budget (successive halving by matching loss, attacks/starts.py).
_COMMON: dict[str, Param] = {
    "distance": Choice(("l2", "cosine")),
    "layer_weights": Choice(("uniform", "normalized")),
    "optimizer": Choice(("lbfgs", "adam")),
    "lr": Float(1e-3, 0.3, log=True),
    "starts": Choice((1, 2, 4)),
}
# GIDM's latent phase: its share of the budget, the DDIM steps K of its sampler, its learning rate and restarts.
_LATENT: dict[str, Param] = {
    "latent_share": Float(0.0, 0.6),
    "ddim_steps": Int(1, 5),
    "latent_lr": Float(1e-3, 0.3, log=True),
    "restarts": Int(1, 4),
}


def _space(method: MethodSpec) -> Mapping[str, Param]:
    """A method's space from its registry entry, so a new method is tunable without an edit here: the common knobs,
    its latent phase's (a latent-only method's share is all of it, and it has no pixel learning rate), a total
    variation weight where its defaults use one, and a residual stage's share."""
    space = dict(_COMMON)
    if method.latent_phase:
        space.update(_LATENT)
    if not method.pixel_phase:
        del space["lr"]
        space["latent_share"] = Choice((1.0,))
    if method.defaults.get("tv_weight", 0.0) > 0:
        space["tv_weight"] = Float(1e-5, 1e-1, log=True)
    if "residual" in method.phases:
        space.update(latent_share=Float(0.1, 0.6), residual_share=Float(0.1, 0.95))
    return MappingProxyType(space)


SPACES: Mapping[str, Mapping[str, Param]] = MappingProxyType({name: _space(m) for name, m in REGISTRY.items()})


def suggest(trial: Any, method: str, frozen: tuple[str, ...] = ()) -> dict[str, Any]:
    """One point of `method`'s space, asked of an Optuna `trial` (params it names after the config fields); the
    `frozen` ones are not searched (they keep the method's defaults)."""
    params: dict[str, Any] = {}
    space = SPACES[method]
    for name, param in space.items():
        if name in frozen:
            continue
        if name in ADAM_ONLY and params.get("optimizer", "lbfgs") == "lbfgs":
            continue
        if isinstance(param, Choice):
            params[name] = (param.options[0] if len(param.options) == 1
                            else trial.suggest_categorical(name, list(param.options)))
        elif isinstance(param, Int):
            params[name] = trial.suggest_int(name, param.low, param.high)
        else:
            params[name] = trial.suggest_float(name, param.low, param.high, log=param.log)
    return params


def default_params(method: str, frozen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The method's defaults as a point of its space (what `study.enqueue_trial` takes)."""
    config = attack_config(method)
    params: dict[str, Any] = {}
    for name, param in SPACES[method].items():
        if name in frozen or name in ADAM_ONLY and config.optimizer == "lbfgs":
            continue
        if name == "latent_share":
            value: Any = config.latent_iterations / max(config.total_iterations, 1)
        else:
            value = getattr(config, name)
        if isinstance(param, Choice) and len(param.options) == 1:
            continue
        if isinstance(param, (Float, Int)):
            value = min(max(value, param.low), param.high)
        params[name] = value
    return params


def overrides(method: str, params: Mapping[str, Any], iterations: int) -> dict[str, Any]:
    """`AttackConfig` overrides for a point: the latent share splits `iterations` between the phases (under a time
    budget the counts only split the time)."""
    fixed = {name: p.options[0] for name, p in SPACES[method].items() if isinstance(p, Choice) and len(p.options) == 1}
    values = {**fixed, **params}
    out = {k: v for k, v in values.items() if k != "latent_share"}
    if "latent_share" not in values and SPACES[method].get("latent_share") is not None:  # frozen: the default's
        default = attack_config(method)
        values["latent_share"] = default.latent_iterations / max(default.total_iterations, 1)
    if "latent_share" in values:
        latent = round(values["latent_share"] * iterations)
        if values["latent_share"] < 1:
            latent = min(latent, iterations - 1)
        out["latent_iterations"] = latent
        out["pixel_iterations"] = iterations - latent
    else:
        out["pixel_iterations"] = iterations
    return out
