"""The differential-privacy budget of the client's Gaussian-noise defence, so a reader sees what a sigma buys.

The defence (`client.apply_defence`) clips the whole update to L2 norm `clip` and adds N(0, (sigma * clip)^2) to
every entry: one Gaussian mechanism of sensitivity `clip` (one client's update added or removed) and noise
multiplier std / clip = sigma. One round is one step at sample rate 1, accounted by Opacus' RDP accountant and
turned into (epsilon, delta) by its conversion (Balle et al. 2020). Without clipping nothing bounds the update's
norm, so no epsilon holds at all.
"""

from __future__ import annotations

import math
import warnings

from .config import DefenceConfig

DELTA = 1e-5


def noise_multiplier(defence: DefenceConfig) -> float | None:
    """The noise std over the sensitivity (the clip norm); None where the defence adds no noise or clips nothing."""
    if defence.sigma <= 0 or defence.clip <= 0:
        return None
    std = defence.sigma * defence.clip  # `apply_defence`'s noise
    return std / defence.clip


def epsilon(defence: DefenceConfig, delta: float = DELTA, rounds: int = 1) -> float | None:
    """The epsilon of `rounds` rounds of the defence at `delta` (Opacus' RDP accountant, sample rate 1, one step a
    round): None without noise, inf with noise but no clip."""
    if defence.sigma <= 0:
        return None
    multiplier = noise_multiplier(defence)
    if multiplier is None:
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(multiplier, 1.0, rounds)]
    with warnings.catch_warnings():  # tiny sigmas put the optimum at the smallest order: the bound is still valid
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(delta))


def describe(defence: DefenceConfig, delta: float = DELTA) -> str:
    """A short "(epsilon, delta)" note for a noise defence, "" for none."""
    value = epsilon(defence, delta)
    if value is None:
        return ""
    if math.isinf(value):
        return "no DP guarantee (noise without a clip norm bounds nothing)"
    return f"(ε = {value:.3g}, δ = {delta:g}) per round"
