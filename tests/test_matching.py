"""Gradient distances: zero at the truth, and aware of the (public) defence the client applied."""

from __future__ import annotations

import pytest
import torch

from gidm_core.attacks.matching import GradientMatcher
from gidm_core.client import PrivateBatch, share
from gidm_core.config import DefenceConfig, ThreatModel


@pytest.mark.parametrize("distance", ["l2", "cosine"])
@pytest.mark.parametrize("defence", [DefenceConfig(), DefenceConfig(clip=0.01), DefenceConfig(keep=0.1),
                                     DefenceConfig(clip=0.01, keep=0.1)])
def test_the_truth_matches_exactly_once_the_defence_is_mirrored(tiny_model, photo32, distance, defence):
    batch = PrivateBatch.draw(photo32, 1000, seed=0, t=[200])
    update = share(tiny_model, batch, ThreatModel(defence=defence))
    aware = GradientMatcher(tiny_model, update, distance, defence=defence)
    at_truth = float(aware(batch.x0, batch.eps, batch.t))
    assert at_truth == pytest.approx(0.0, abs=1e-6 if distance == "l2" else 1e-5)
    elsewhere = float(aware(batch.x0.flip(-1), batch.eps, batch.t))
    assert elsewhere > 100 * max(at_truth, 1e-9)
    # A server that ignores the defence does not see the truth as a perfect match (cosine is blind to clipping).
    if defence.keep < 1 or (defence.clip > 0 and distance == "l2"):
        naive = GradientMatcher(tiny_model, update, distance)
        assert float(naive(batch.x0, batch.eps, batch.t)) > 100 * max(at_truth, 1e-9)


def test_normalized_weights_stay_finite_for_zero_tensors(tiny_model, photo32):
    batch = PrivateBatch.draw(photo32, 1000, seed=0, t=[200])
    update = share(tiny_model, batch, ThreatModel(defence=DefenceConfig(keep=0.001)))
    matcher = GradientMatcher(tiny_model, update, "l2", "normalized")
    weights = torch.stack([w.reshape(()) for w in matcher.weights])
    assert torch.isfinite(weights).all() and weights.max() / weights.min() <= 1e8 * 1.001
