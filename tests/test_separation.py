"""Batch separation through the time conditioning: exact per-sample parts, honest refusals, and an attack that
uses them (better than without, at equal iterations) whose timesteps pair its reconstructions with the originals."""

from __future__ import annotations

import pytest
import torch
from skimage import data as skdata

from gidm_core.attacks.separation import separate
from gidm_core.client import PrivateBatch, client_update, share
from gidm_core.config import DefenceConfig, LocalTraining, ThreatModel, attack_config
from gidm_core.images import load_image
from gidm_core.metrics import psnr, to_unit
from gidm_core.protocol import play

PAPER = ThreatModel()
DISTINCT_T = [40, 310, 620, 880]


@pytest.fixture(scope="module")
def photos4() -> torch.Tensor:
    """Four different photos at 32 px, (4, 3, 32, 32) in [-1, 1]."""
    return torch.cat([load_image(photo(), 32) for photo in (skdata.astronaut, skdata.coffee, skdata.chelsea,
                                                            skdata.rocket)])


def _update(model, x0, t, threat=PAPER, training=None):
    batch = PrivateBatch.draw(x0, model.num_train_timesteps, seed=3, t=t)
    return batch, share(model, batch, threat, seed=3, training=training)


def test_separation_recovers_each_samples_bias_gradient(tiny_model, photos4):
    batch, update = _update(tiny_model, photos4, DISTINCT_T)
    result = separate(tiny_model, update, batch.t, PAPER)
    assert result.ok, result.message
    projections = [n for n in result.names if n.endswith("time_emb_proj")]
    blocks = [n for n, m in tiny_model.unet.named_modules() if n.endswith("time_emb_proj")]
    assert sorted(projections) == sorted(blocks) and len(blocks) >= 4  # every ResNet block's projection, none skipped
    assert {"time_embedding.linear_1", "time_embedding.linear_2"} <= set(result.names)
    assert result.residual < 1e-5
    index = {name: i for i, (name, _) in enumerate(tiny_model.unet.named_parameters())}
    for b in range(4):
        # Sample b alone, scaled as its share of the batch's mean loss, is what its part must equal.
        alone = client_update(tiny_model, batch.x0[b:b + 1], batch.eps[b:b + 1], batch.t[b:b + 1])
        for name, part in zip(result.names, result.parts):
            truth = alone[index[f"{name}.bias"]] / 4
            assert float((part[b] - truth).norm() / truth.norm()) < 1e-5, (name, b)


def test_separation_divides_out_one_sgd_step(tiny_model, photos4):
    batch, gradient = _update(tiny_model, photos4, DISTINCT_T)
    _, delta = _update(tiny_model, photos4, DISTINCT_T, training=LocalTraining(steps=1, lr=1e-2))
    from_gradient = separate(tiny_model, gradient, batch.t, PAPER)
    from_delta = separate(tiny_model, delta, batch.t, PAPER)
    for a, b in zip(from_gradient.parts, from_delta.parts):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max()))


@pytest.mark.parametrize("t, threat, training, says", [
    ([300] * 4, PAPER, None, "shares timesteps"),
    (DISTINCT_T, ThreatModel(defence=DefenceConfig(clip=1.0, sigma=0.01)), None, "defence"),
    (DISTINCT_T, ThreatModel(defence=DefenceConfig(keep=0.1)), None, "defence"),
    (DISTINCT_T, PAPER, LocalTraining(steps=1, optimizer="adam"), "adam"),
])
def test_separation_refuses_in_one_line(tiny_model, photos4, t, threat, training, says):
    batch, update = _update(tiny_model, photos4, t, threat, training)
    result = separate(tiny_model, update, batch.t, threat)
    assert not result.ok and says in result.message and "\n" not in result.message
    assert "summed update" in result.message  # and the attack goes on without the per-sample terms


def test_a_noisy_update_fails_the_residual_test(tiny_model, photos4):
    batch, update = _update(tiny_model, photos4, DISTINCT_T)
    generator = torch.Generator().manual_seed(1)
    noisy = type(update)(tuple(g + 1e-2 * g.std() * torch.randn(g.shape, generator=generator)
                               for g in update.gradients), update.batch_size, update.image_shape, update.eps,
                         update.t)
    result = separate(tiny_model, noisy, batch.t, PAPER)
    assert not result.ok and "unexplained" in result.message and result.residual > 1e-3


def _run(model, x0, separation, iterations):
    config = attack_config("dlg", pixel_iterations=iterations, separation=separation, report_every=1000)
    played = play(model, x0, PAPER, config, client_seed=3, t=DISTINCT_T)
    events = list(played.run)
    return played, events


def test_separation_beats_the_summed_update_and_its_timesteps_pair_the_batch(tiny_model, photos4, one_thread):
    iterations = 120
    separated, events = _run(tiny_model, photos4, "auto", iterations)
    summed, plain_events = _run(tiny_model, photos4, "off", iterations)
    with_parts = separated.run.result
    without = summed.run.result
    assert with_parts.iterations == without.iterations == iterations
    assert with_parts.details["separation"] == "separated"
    assert any("separated 4 samples" in e.message for e in events)
    assert any("separation off" in e.message for e in plain_events)
    gain = (psnr(to_unit(with_parts.reconstruction), to_unit(photos4))
            - psnr(to_unit(without.reconstruction[separated.evaluator.per_image(without)["pairing"]]),
                   to_unit(photos4)))
    assert gain >= 3, gain
    scores = separated.evaluator.per_image(with_parts)
    assert scores["pairing_by_t_agrees"] is True
    assert scores["pairing_by_t"] == list(range(4))  # slot b holds sample b: the t's fixed the pairing
    assert min(scores["psnr_per_image"]) >= 20
