"""The curriculum by timestep for separated batches: its group loss is the batch's joint loss exactly (the held
images' update taken off the target), its groups follow sqrt(abar_t), and an attack that uses it still pairs the
batch by t."""

from __future__ import annotations

import pytest
import torch
from skimage import data as skdata

from gidm_core.attacks.curriculum import GroupMatcher, signal_groups
from gidm_core.attacks.per_sample import SeparatedMatcher
from gidm_core.attacks.separation import separate
from gidm_core.client import PrivateBatch, share
from gidm_core.config import ThreatModel, attack_config
from gidm_core.images import load_image
from gidm_core.protocol import play

PAPER = ThreatModel()
SPREAD_T = [20, 480, 900, 990]  # sqrt(abar_t) from ~1 down to ~0.01: several groups


@pytest.fixture(scope="module")
def separated(tiny_model):
    x0 = torch.cat([load_image(photo(), 32) for photo in (skdata.astronaut, skdata.coffee, skdata.chelsea,
                                                          skdata.rocket)])
    batch = PrivateBatch.draw(x0, tiny_model.num_train_timesteps, seed=3, t=SPREAD_T)
    update = share(tiny_model, batch, PAPER, seed=3)
    matcher = SeparatedMatcher(tiny_model, update, separate(tiny_model, update, batch.t, PAPER), "l2",
                               "normalized", None)
    return batch, matcher


def test_groups_go_from_loud_to_quiet(separated):
    batch, matcher = separated
    groups = signal_groups(matcher, batch.t)
    assert sorted(sum(groups, [])) == [0, 1, 2, 3] and groups[0] == [0] and 3 in groups[-1]
    assert len(groups) >= 2
    loudness = matcher.model.scheduler.alphas_cumprod[batch.t].sqrt()
    assert all(loudness[a[0]] > loudness[b[0]] for a, b in zip(groups, groups[1:]))


@pytest.mark.parametrize("rows", [[0], [2, 3], [0, 1, 2, 3]])
def test_a_group_loss_is_the_joint_loss(separated, rows):
    """With the other images held, the loss of the group's rows alone equals the whole batch's joint loss, and its
    gradient the joint loss's gradient w.r.t. those rows: a stage descends the true objective, on fewer images."""
    batch, matcher = separated
    generator = torch.Generator().manual_seed(0)
    x = (batch.x0 + 0.3 * torch.randn(batch.x0.shape, generator=generator)).clamp(-1, 1)
    free = x.clone().requires_grad_(True)
    joint = matcher(free, batch.eps, batch.t)
    (joint_grad,) = torch.autograd.grad(joint, free)
    x_rows = x[rows].clone().requires_grad_(True)
    summed, per_sample = GroupMatcher(matcher, rows, x, batch.eps, batch.t)(x_rows)
    group = summed + matcher.weight * per_sample
    (group_grad,) = torch.autograd.grad(group, x_rows)
    assert torch.allclose(group, joint, rtol=1e-4)
    assert torch.allclose(group_grad, joint_grad[rows], rtol=1e-3, atol=1e-3 * float(joint_grad.abs().max()))


def _attack(model, x0, separation):
    config = attack_config("dlg", pixel_iterations=80, separation=separation, report_every=1000)
    played = play(model, x0, PAPER, config, client_seed=3, t=SPREAD_T)
    played.run.run_to_end()
    return played, played.run.result


def test_separated_with_the_curriculum_beats_the_summed_update(tiny_model, separated, one_thread):
    """The issue's floor: at equal iterations (80), B = 4, timesteps spread from 20 to 990, the separated attack
    (curriculum, then joint) beats the same attack on the summed update alone (measured 11.5 vs 9.1 dB; the
    per-sample start it replaces reached 8.9), and its timesteps pair the batch as the evaluator does."""
    batch, _ = separated
    on, on_result = _attack(tiny_model, batch.x0, "auto")
    off, off_result = _attack(tiny_model, batch.x0, "off")
    assert on_result.iterations == off_result.iterations == 80
    assert any(phase.startswith("group 1/") for phase in on_result.phase_starts) and "pixel" in on_result.phase_starts
    with_parts = on.evaluator.score_result(on_result)["psnr"]
    summed_only = off.evaluator.score_result(off_result)["psnr"]
    assert with_parts > summed_only + 1.5 and with_parts > 10.5, (with_parts, summed_only)
    assert on.evaluator.per_image(on_result)["pairing_by_t_agrees"] is True
