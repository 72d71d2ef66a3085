"""What leaves the client: the update, what it reveals, and the defences applied to it."""

from __future__ import annotations

import pytest
import torch

from gidm_core.client import PrivateBatch, apply_defence, client_update, share
from gidm_core.config import ConfigError, DefenceConfig, ThreatModel, threat_preset
from gidm_core.diffusion import diffusion_loss, q_sample, training_target
from gidm_core.models import random_model


def _grads(model, x0):
    batch = PrivateBatch.draw(x0, 1000, seed=0, t=[100])
    return client_update(model, batch.x0, batch.eps, batch.t)


def test_update_is_the_gradient_of_the_training_loss(tiny_model, photo32):
    batch = PrivateBatch.draw(photo32, 1000, seed=3, t=[10])
    grads = client_update(tiny_model, batch.x0, batch.eps, batch.t)
    tiny_model.unet.zero_grad()
    diffusion_loss(tiny_model, batch.x0, batch.eps, batch.t).backward()
    for g, p in zip(grads, tiny_model.unet.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-7)
    tiny_model.unet.zero_grad(set_to_none=True)


def test_threat_model_decides_what_is_revealed(tiny_model, photo32):
    batch = PrivateBatch.draw(photo32, 1000, seed=0)
    paper = share(tiny_model, batch, threat_preset("paper"))
    private = share(tiny_model, batch, threat_preset("private-eps-t"))
    assert torch.equal(paper.eps, batch.eps) and torch.equal(paper.t, batch.t)
    assert private.eps is None and private.t is None
    for a, b in zip(paper.gradients, private.gradients):
        assert torch.equal(a, b)


def test_clip_bounds_the_norm_and_noise_has_the_right_scale(tiny_model, photo32):
    grads = _grads(tiny_model, photo32)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    clipped = apply_defence(grads, DefenceConfig(clip=float(norm) / 10))
    assert torch.sqrt(sum((g ** 2).sum() for g in clipped)) == pytest.approx(float(norm) / 10, rel=1e-4)
    noisy = apply_defence(grads, DefenceConfig(clip=1.0, sigma=0.5), torch.Generator().manual_seed(0))
    clipped_1 = apply_defence(grads, DefenceConfig(clip=1.0))
    noise = torch.cat([(n - c).flatten() for n, c in zip(noisy, clipped_1)])
    assert noise.std().item() == pytest.approx(0.5, rel=0.02)  # std = sigma * clip


def test_top_k_keeps_the_given_fraction_of_largest_entries(tiny_model, photo32):
    grads = _grads(tiny_model, photo32)
    pruned = apply_defence(grads, DefenceConfig(keep=0.1))
    big = [g for g in grads if g.numel() >= 1000]
    for g, p in zip(grads, pruned):
        if g.numel() < 1000:
            continue
        kept = (p != 0).float().mean().item()
        assert kept == pytest.approx(0.1, abs=0.01)
        assert p.abs().max() == g.abs().max()
        assert p[p != 0].abs().min() >= g.abs()[p == 0].max()
    assert big


def test_defences_compose_in_order(tiny_model, photo32):
    grads = _grads(tiny_model, photo32)
    both = apply_defence(grads, DefenceConfig(clip=0.5, keep=0.2))
    assert torch.sqrt(sum((g ** 2).sum() for g in both)) <= 0.5 + 1e-6
    assert sum(int((g != 0).sum()) for g in both) < 0.25 * sum(g.numel() for g in grads)


@pytest.mark.parametrize("bad", [dict(clip=-1), dict(sigma=-0.1), dict(keep=0), dict(keep=1.5)])
def test_bad_defences_are_refused(bad):
    with pytest.raises(ConfigError):
        DefenceConfig(**bad)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_training_targets_follow_the_prediction_type(kind, photo32):
    model = random_model("tiny", 32, kind)
    eps = torch.randn_like(photo32)
    t = torch.tensor([300])
    abar = model.scheduler.alphas_cumprod[300]
    expected = {"epsilon": eps, "sample": photo32,
                "v_prediction": abar.sqrt() * eps - (1 - abar).sqrt() * photo32}[kind]
    assert torch.allclose(training_target(model, photo32, eps, t), expected, atol=1e-6)
    assert torch.allclose(q_sample(model, photo32, eps, t), model.scheduler.add_noise(photo32, eps, t), atol=1e-6)


def test_drawn_secrets_are_seeded_and_validated(photo32):
    a = PrivateBatch.draw(photo32, 1000, seed=5)
    b = PrivateBatch.draw(photo32, 1000, seed=5)
    assert torch.equal(a.eps, b.eps) and torch.equal(a.t, b.t)
    with pytest.raises(ValueError):
        PrivateBatch.draw(photo32, 1000, seed=0, t=[1000])
    assert ThreatModel().knows_eps and not threat_preset("private-eps-t").knows_t
