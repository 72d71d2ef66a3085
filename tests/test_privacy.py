"""The DP budget beside a noise defence: Opacus' RDP accountant for one round of clip + noise, checked against the
closed-form RDP of the Gaussian mechanism and against the exact (analytic) Gaussian-mechanism epsilon."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from gidm_core.config import DefenceConfig
from gidm_core.privacy import describe, epsilon, noise_multiplier

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))  # Opacus' default orders


def _rdp_epsilon(sigma: float, delta: float, rounds: int = 1) -> float:
    """Sample rate 1: the Gaussian mechanism's RDP is rounds * alpha / (2 sigma^2) at every order alpha, converted to
    (epsilon, delta) with Balle et al. 2020, Theorem 21, minimised over the orders."""
    return min(rounds * a / (2 * sigma**2) + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
               for a in ORDERS)


def _exact_epsilon(sigma: float, delta: float) -> float:
    """The tight epsilon of one Gaussian mechanism of sensitivity 1 and std sigma (Balle & Wang 2018, Theorem 8)."""
    def gap(eps: float) -> float:
        return norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma) - delta
    return brentq(gap, 0.0, 500.0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 5.0])
def test_epsilon_matches_the_closed_form_and_bounds_the_exact_value(sigma):
    defence = DefenceConfig(clip=1.0, sigma=sigma)
    value = epsilon(defence)
    assert value == pytest.approx(_rdp_epsilon(sigma, 1e-5), rel=1e-9)
    exact = _exact_epsilon(sigma, 1e-5)
    assert exact <= value <= 1.35 * exact  # RDP is an upper bound, and a close one for a single step
    assert epsilon(defence, rounds=4) == pytest.approx(_rdp_epsilon(sigma, 1e-5, rounds=4), rel=1e-9)


def test_the_noise_multiplier_is_the_defences_sigma_whatever_the_clip():
    # apply_defence adds std sigma * clip after clipping to clip: the multiplier std / sensitivity is sigma.
    for clip in (0.5, 1.0, 4.0):
        defence = DefenceConfig(clip=clip, sigma=0.1)
        assert noise_multiplier(defence) == pytest.approx(0.1)
        assert epsilon(defence) == pytest.approx(epsilon(DefenceConfig(clip=1.0, sigma=0.1)))
    assert np.isclose(epsilon(DefenceConfig(clip=1.0, sigma=1.0)), 4.7285, atol=1e-4)
    # The project's noise levels buy almost nothing: epsilon in the hundreds of thousands at sigma 1e-3.
    assert epsilon(DefenceConfig(clip=1.0, sigma=1e-3)) > 1e5 > epsilon(DefenceConfig(clip=1.0, sigma=1e-2)) > 1e3


def test_no_noise_has_no_budget_and_noise_without_a_clip_has_no_guarantee():
    assert epsilon(DefenceConfig()) is None and describe(DefenceConfig(keep=0.1)) == ""
    assert epsilon(DefenceConfig(sigma=0.1)) == math.inf
    assert describe(DefenceConfig(sigma=0.1)).startswith("no DP guarantee")
    assert describe(DefenceConfig(clip=1.0, sigma=1.0)) == "(ε = 4.73, δ = 1e-05) per round"
