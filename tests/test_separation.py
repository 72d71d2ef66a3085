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


def test_the_per_sample_terms_vanish_at_the_truth_only(tiny_model, photos4):
    """The matcher's per-sample targets are the client's: zero distance at the true batch, not elsewhere."""
    from gidm_core.attacks.per_sample import SeparatedMatcher

    batch, update = _update(tiny_model, photos4, DISTINCT_T)
    matcher = SeparatedMatcher(tiny_model, update, separate(tiny_model, update, batch.t, PAPER), "l2",
                               "normalized", None)
    matcher(batch.x0, batch.eps, batch.t, create_graph=False)
    at_truth = dict(matcher.last)
    swapped = batch.x0[[1, 0, 2, 3]]  # two images in each other's slots: same summed pixels, wrong timesteps
    matcher(swapped, batch.eps, batch.t, create_graph=False)
    assert at_truth["per_sample"] < 1e-8 and at_truth["summed"] < 1e-8
    assert matcher.last["per_sample"] > 1e-2


def _run(model, x0, separation, iterations, t):
    config = attack_config("dlg", pixel_iterations=iterations, separation=separation, report_every=1000)
    played = play(model, x0, PAPER, config, client_seed=3, t=t)
    events = list(played.run)
    return played, events


def test_a_separated_attack_reports_its_residual_and_its_timesteps_pair_the_batch(tiny_model, photos4, one_thread):
    t = [20, 60, 120, 200]
    separated, events = _run(tiny_model, photos4, "auto", 80, t)
    result = separated.run.result
    assert result.iterations == 80 and result.details["separation"] == "separated"
    assert result.details["separation_residual"] < 1e-5
    assert any("separated 4 samples" in e.message for e in events)
    assert {"per-sample", "pixel"} <= set(result.phase_starts)
    scores = separated.evaluator.per_image(result)
    assert scores["pairing_by_t"] == list(range(4))  # slot b holds the guess made at sample b's t
    assert scores["pairing_by_t_agrees"] is True  # and the evaluator's Hungarian pairing finds the same
    assert len(scores["psnr_per_image"]) == 4


def test_separation_off_says_so(tiny_model, photos4, one_thread):
    _, events = _run(tiny_model, photos4, "off", 3, DISTINCT_T)
    assert any("separation off" in e.message for e in events)


def test_cli_refuses_a_bad_separation_in_one_line(capsys):
    from gidm_core.cli import main

    code = main(["attack", "--image", "face-05", "--image", "face-17", "--separation", "maybe"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "separation" in err and "auto, off" in err


def test_a_fresh_noise_delta_separates_into_one_part_per_slot(tiny_model, photos4):
    """Fresh noise: every slot of every step drew its own t, so an SGD delta of N = 4 images in mini-batches of 2
    over E = 3 steps splits into 6 parts, slot k's equal to that step's own (per-slot) gradient of its step loss;
    the matcher reads a guess's parts off its re-simulated delta through the same map (no extra UNet pass), so at
    the truth they are the targets exactly, elsewhere not."""
    from gidm_core.attacks.per_sample import SeparatedMatcher

    training = LocalTraining(steps=3, lr=1e-3, local_batch=2, noise="fresh")
    batch = PrivateBatch.draw(photos4, tiny_model.num_train_timesteps, 5, training=training)
    update = share(tiny_model, batch, PAPER, 5, training)
    result = separate(tiny_model, update, batch.t, PAPER)
    assert result.ok and "separated 6 slots" in result.message, result.message
    assert result.residual < 1e-4 and all(part.shape[0] == 6 for part in result.parts)
    index = {name: i for i, (name, _) in enumerate(tiny_model.unet.named_parameters())}
    slots = batch.schedule.order.flatten()
    # Slot k alone at the start weights, half its step's loss: exact for the first step's slots, close for the
    # last step's (its weights moved by two steps: the part is at those, the reference at the start).
    for k, tolerance in ((0, 1e-4), (1, 1e-4), (5, 5e-2)):
        image = batch.x0[slots[k]:slots[k] + 1]
        alone = client_update(tiny_model, image, batch.eps[k:k + 1], batch.t[k:k + 1])
        for name, part in zip(result.names, result.parts):
            truth = alone[index[f"{name}.bias"]] / 2
            assert float((part[k] - truth).norm() / truth.norm()) < tolerance, (name, k)
    matcher = SeparatedMatcher(tiny_model, update, result, "l2", "normalized", None)
    calls = []
    hook = tiny_model.unet.register_forward_hook(lambda *_: calls.append(1))
    try:
        matcher(batch.x0, batch.eps, batch.t, create_graph=False)
    finally:
        hook.remove()
    assert len(calls) == 3  # one UNet pass per local step: the guess's parts come out of its re-simulated delta
    at_truth = float(matcher.last["per_sample"])
    matcher(batch.x0[[1, 0, 3, 2]], batch.eps, batch.t, create_graph=False)
    assert at_truth < 1e-8 and float(matcher.last["per_sample"]) > 1e-3


def test_one_image_over_fresh_steps_is_separated_by_its_steps(tiny_model, photos4, one_thread):
    """N = 1, E = 4 fresh: nothing to split between images, but the steps' parts are matched beside the delta."""
    training = LocalTraining(steps=4, lr=1e-3, noise="fresh")
    config = attack_config("dlg", pixel_iterations=4, report_every=1000)
    played = play(tiny_model, photos4[:1], PAPER, config, client_seed=3, training=training)
    events = list(played.run)
    assert any("separated 4 slots" in e.message for e in events)
    assert played.run.result.details["separation"] == "separated"
    assert "per-sample" not in played.run.result.phase_starts  # one image: no start on its parts alone


def test_a_single_images_low_noise_step_gets_no_weight_among_its_parts(tiny_model, photos4):
    """One image over fresh SGD steps: a step at t = 5 (noise scale ~0.03) drops out of the per-slot distance and
    the others share its weight; with no such step, with several images, or for one gradient, every part counts 1."""
    from gidm_core.attacks.per_sample import slot_weights

    fresh = LocalTraining(steps=4, lr=1e-3, noise="fresh")

    def fresh_update(x0):
        return share(tiny_model, PrivateBatch.draw(x0, 1000, 3, training=fresh), PAPER, 3, fresh)

    one_image = fresh_update(photos4[:1])
    weights = slot_weights(tiny_model, one_image, torch.tensor([332, 68, 904, 5]))
    assert torch.allclose(weights, torch.tensor([4 / 3, 4 / 3, 4 / 3, 0.0]))
    assert torch.equal(slot_weights(tiny_model, one_image, torch.tensor([274, 927, 163, 329])), torch.ones(4))
    two_images = fresh_update(photos4[:2])
    assert torch.equal(slot_weights(tiny_model, two_images, torch.tensor([332, 68, 904, 5] * 2)), torch.ones(8))
    _, gradient = _update(tiny_model, photos4, DISTINCT_T)
    assert torch.equal(slot_weights(tiny_model, gradient, torch.tensor([5, 310, 620, 880])), torch.ones(4))
