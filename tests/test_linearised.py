"""The linearised re-simulation of an SGD client's local steps (attacks/linearised.py): the client's delta to first
order in its learning rate, for the pixel phase's first stretch only; the exact delta picks the answer."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gidm_core.attacks.linearised import (
    LINEARISED_SHARE,
    LINEARISED_TOLERANCE,
    linearisable,
    linearised_delta,
)
from gidm_core.attacks.matching import GradientMatcher
from gidm_core.attacks.pixel import pixel_stages
from gidm_core.client import PrivateBatch, client_update, relative_distance
from gidm_core.config import LocalTraining, attack_config, threat_preset
from gidm_core.protocol import play

SGD = LocalTraining(steps=4, lr=1e-3, optimizer="sgd", weight_decay=0.01, local_batch=1, noise="fresh")


def test_it_is_the_delta_to_first_order_in_the_learning_rate(tiny_model, photo32):
    """Two local images in batches of one, four steps of fresh noise, coupled weight decay: the surrogate's error
    shrinks in proportion to the learning rate (a wrong step count or decay term would leave it near 1)."""
    images = torch.cat([photo32, photo32.flip(-1)])
    errors = {}
    for lr in (1e-2, 1e-3):
        training = replace(SGD, lr=lr)
        batch = PrivateBatch.draw(images, tiny_model.num_train_timesteps, 3, training=training)
        exact = client_update(tiny_model, images, batch.eps, batch.t, False, training, batch.schedule)
        approximate = linearised_delta(tiny_model, images, batch.eps, batch.t, training, batch.schedule, False)
        errors[lr] = relative_distance(approximate, exact)
    assert errors[1e-3] < 5e-2
    assert 5 < errors[1e-2] / errors[1e-3] < 20


@pytest.mark.parametrize("change, expected", [({}, True), ({"steps": 1, "local_batch": 0}, False),
                                              ({"optimizer": "adamw"}, False), ({"clip": 1.0}, False),
                                              ({"dropout": 0.1}, False)])
def test_only_unclipped_sgd_steps_without_dropout_are_linearised(change, expected):
    assert linearisable(replace(SGD, **change)) is expected


def test_the_exact_delta_picks_the_answer(tiny_model, photo32, one_thread):
    """DLG on an SGD delta of three fresh-noise steps (matching the delta alone, no per-step parts): the pixel
    phase's last stage is exact, and the answer's matching loss is the exact matcher's on the answer (the
    surrogate's would differ by its bias)."""
    training = replace(SGD, steps=3, local_batch=0, weight_decay=0.0, lr=1e-3)
    config = attack_config("dlg", pixel_iterations=24, attack_seed=5, separation="off")
    played = play(tiny_model, photo32, threat_preset("paper"), config, client_seed=2, training=training)
    ctx = played.run.context
    matcher = GradientMatcher(tiny_model, ctx.update, config.distance, config.layer_weights)
    start = torch.zeros_like(photo32)
    stages = pixel_stages(ctx, matcher, played.update.t, start, played.batch.eps)
    assert [stage.linearised for stage in stages] == [True, False]
    assert [stage.share for stage in stages] == pytest.approx([LINEARISED_SHARE, 1 - LINEARISED_SHARE])
    result = played.run.run_to_end()
    assert result.details["linearisation_error"] < LINEARISED_TOLERANCE
    exact = float(matcher(result.reconstruction, played.batch.eps, played.update.t, create_graph=False))
    surrogate = matcher.distance_to(linearised_delta(tiny_model, result.reconstruction, played.batch.eps,
                                                     played.update.t, training, ctx.update.schedule, False))
    assert result.matching_loss == pytest.approx(exact, rel=1e-4)
    assert abs(float(surrogate) - exact) > 1e-4 * exact


def test_a_client_whose_weights_move_far_is_re_simulated_exactly(tiny_model, photo32):
    """lr 0.1 over three steps: the attacker sees the surrogate is far off at its own start and keeps the exact
    delta for the whole phase."""
    training = replace(SGD, steps=3, local_batch=0, weight_decay=0.0, lr=0.1)
    played = play(tiny_model, photo32, threat_preset("paper"), attack_config("dlg", pixel_iterations=4),
                  client_seed=2, training=training)
    ctx = played.run.context
    matcher = GradientMatcher(tiny_model, ctx.update)
    stages = pixel_stages(ctx, matcher, played.update.t, torch.zeros_like(photo32), played.batch.eps)
    assert not any(stage.linearised for stage in stages)
    assert ctx.details["linearisation_error"] > LINEARISED_TOLERANCE


def test_an_error_that_is_not_a_number_keeps_the_exact_delta(tiny_model, photo32, monkeypatch):
    """A guess on which the client's steps overflow gives a NaN error: no comparison with the tolerance holds for
    it, so the surrogate must be refused, not accepted."""
    training = replace(SGD, steps=3, local_batch=0, weight_decay=0.0, lr=1e-3)
    played = play(tiny_model, photo32, threat_preset("paper"), attack_config("dlg", pixel_iterations=4),
                  client_seed=2, training=training)
    ctx = played.run.context
    monkeypatch.setattr("gidm_core.attacks.pixel.linearisation_error", lambda *args: float("nan"))
    stages = pixel_stages(ctx, GradientMatcher(tiny_model, ctx.update), played.update.t, torch.zeros_like(photo32),
                          played.batch.eps)
    assert not any(stage.linearised for stage in stages)


def test_a_plateau_in_the_surrogate_stage_does_not_end_the_run(tiny_model, photo32):
    """The app's demo ends a run at a plateau of its matching loss. The surrogate stalls at its own bias, which is no
    convergence of the exact match: the run must go on to the exact stage, whose loss alone may answer."""
    training = replace(SGD, steps=3, local_batch=0, weight_decay=0.0, lr=1e-3)
    config = attack_config("dlg", pixel_iterations=60, attack_seed=5, separation="off", plateau=2)
    played = play(tiny_model, photo32, threat_preset("paper"), config, client_seed=2, training=training)
    result = played.run.run_to_end()
    ctx = played.run.context
    matcher = GradientMatcher(tiny_model, ctx.update, config.distance, config.layer_weights)
    exact = float(matcher(result.reconstruction, played.batch.eps, played.update.t, create_graph=False))
    assert result.matching_loss == pytest.approx(exact, rel=1e-4)


def test_a_run_stopped_in_the_surrogate_stage_answers_with_the_exact_loss(tiny_model, photo32):
    """Stop pressed a few evaluations into the linearised stretch: the answer is that stretch's best guess, and the
    loss reported with it is the exact delta's, the one every other answer is ranked by."""
    training = replace(SGD, steps=3, local_batch=0, weight_decay=0.0, lr=1e-3)
    config = attack_config("dlg", pixel_iterations=60, attack_seed=5, separation="off", report_every=1)
    played = play(tiny_model, photo32, threat_preset("paper"), config, client_seed=2, training=training)
    for event in played.run:
        if event.kind == "progress" and event.iteration >= 8:
            played.run.stop()
    result = played.run.result
    assert result.status == "stopped" and result.iterations < 20
    matcher = GradientMatcher(tiny_model, played.run.context.update, config.distance, config.layer_weights)
    exact = float(matcher(result.reconstruction, played.batch.eps, played.update.t, create_graph=False))
    assert result.matching_loss == pytest.approx(exact, rel=1e-4)


@pytest.mark.parametrize("stop_at", [None, 8])
def test_several_starts_answer_on_the_exact_delta(tiny_model, photo32, stop_at):
    """Two starts under successive halving, each with its linearised stretch: the run's answer is ranked and
    reported on the exact delta, whether it runs to its end (a short exact stage, whose losses stay above the
    surrogate's best: that guess and its surrogate loss answered before) or is stopped inside the stretch."""
    training = replace(SGD, steps=3, local_batch=0, weight_decay=0.0, lr=1e-3)
    config = attack_config("dlg", pixel_iterations=20, attack_seed=5, separation="off", starts=2, report_every=1)
    played = play(tiny_model, photo32, threat_preset("paper"), config, client_seed=2, training=training)
    for event in played.run:
        if stop_at is not None and event.kind == "progress" and event.iteration >= stop_at:
            played.run.stop()
    result = played.run.result
    matcher = GradientMatcher(tiny_model, played.run.context.update, config.distance, config.layer_weights)
    exact = float(matcher(result.reconstruction, played.batch.eps, played.update.t, create_graph=False))
    assert result.matching_loss == pytest.approx(exact, rel=1e-4)
