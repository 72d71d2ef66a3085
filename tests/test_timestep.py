"""The client's private timesteps are read off the update exactly."""

from __future__ import annotations

import pytest
import torch

from gidm_core.attacks.timestep import recover_timesteps
from gidm_core.client import PrivateBatch, share
from gidm_core.config import DefenceConfig, ThreatModel, threat_preset
from gidm_core.models import random_model

PRIVATE = threat_preset("private-eps-t")


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("batch_size", [1, 4])
def test_timesteps_recovered_exactly(kind, batch_size, photo32):
    model = random_model("tiny", 32, kind)
    x0 = photo32.repeat(batch_size, 1, 1, 1) * torch.linspace(0.5, 1, batch_size).reshape(-1, 1, 1, 1)
    for seed in range(3):
        batch = PrivateBatch.draw(x0, 1000, seed=seed)
        assert len(set(batch.t.tolist())) == batch_size
        estimate = recover_timesteps(model, share(model, batch, PRIVATE))
        assert estimate.confident
        assert estimate.t.tolist() == sorted(batch.t.tolist())


def test_extreme_timesteps(tiny_model, photo32):
    for t in (0, 1, 998, 999):
        batch = PrivateBatch.draw(photo32, 1000, seed=0, t=[t])
        assert recover_timesteps(tiny_model, share(tiny_model, batch, PRIVATE)).t.tolist() == [t]


def test_heavy_noise_is_not_trusted(tiny_model, photo32):
    threat = ThreatModel(knows_eps=False, knows_t=False, defence=DefenceConfig(clip=1.0, sigma=1.0))
    batch = PrivateBatch.draw(photo32, 1000, seed=0, t=[400])
    estimate = recover_timesteps(tiny_model, share(tiny_model, batch, threat))
    assert estimate is not None and not estimate.confident
