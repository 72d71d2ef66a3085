"""FedAvg updates: the client's delta after E local SGD or Adam steps, and attacks that re-simulate those steps on a
guess."""

from __future__ import annotations

import pytest
import torch

from gidm_core.attacks import adam_delta
from gidm_core.attacks.matching import GradientMatcher
from gidm_core.client import LocalOptimizer, PrivateBatch, client_update, relative_distance, share
from gidm_core.config import ConfigError, LocalTraining, attack_config, threat_preset
from gidm_core.metrics import psnr, to_unit
from gidm_core.protocol import play

PAPER = threat_preset("paper")
THREE_STEPS = LocalTraining(steps=3, lr=0.1)  # lr large enough that the steps differ (delta is 47% off 3 x step 1)


def _psnr(result, x0: torch.Tensor) -> float:
    return psnr(to_unit(result.reconstruction), to_unit(x0))


def test_one_sgd_step_shares_exactly_minus_lr_times_the_gradient(tiny_model, photo32):
    batch = PrivateBatch.draw(photo32, tiny_model.num_train_timesteps, seed=4, t=[300])
    gradient = share(tiny_model, batch, PAPER)
    delta = share(tiny_model, batch, PAPER, training=LocalTraining(steps=1, lr=0.01))
    assert (gradient.kind, delta.kind, delta.training.steps) == ("fedsgd", "fedavg", 1)
    assert all(torch.equal(d, -0.01 * g) for d, g in zip(delta.gradients, gradient.gradients))


def test_several_steps_are_not_one_step_scaled(tiny_model, photo32):
    """The steps move the weights the next gradient is taken at: matching E * (one step) would be the wrong model."""
    batch = PrivateBatch.draw(photo32, tiny_model.num_train_timesteps, seed=4, t=[300])
    three = client_update(tiny_model, batch.x0, batch.eps, batch.t, training=THREE_STEPS)
    one = client_update(tiny_model, batch.x0, batch.eps, batch.t, training=LocalTraining(1, THREE_STEPS.lr))
    gap = torch.sqrt(sum((a - 3 * b).pow(2).sum() for a, b in zip(three, one)))
    assert gap / torch.sqrt(sum((3 * b).pow(2).sum() for b in one)) > 0.1


def test_one_step_fedavg_reconstructs_exactly_as_fedsgd(tiny_model, photo32):
    config = attack_config("dlg", pixel_iterations=40, report_every=40)
    fedsgd = play(tiny_model, photo32, PAPER, config, client_seed=2, t=[500]).run.run_to_end()
    fedavg = play(tiny_model, photo32, PAPER, config, client_seed=2, t=[500],
                  training=LocalTraining(steps=1, lr=1e-3)).run.run_to_end()
    # Not bit-identical: the delta is the gradient times -lr, and L-BFGS's arithmetic rounds differently at another
    # scale (measured: 2e-4 largest pixel difference, 2e-5 dB, after 40 evaluations).
    assert abs(_psnr(fedsgd, photo32) - _psnr(fedavg, photo32)) < 1e-3
    assert torch.allclose(fedsgd.reconstruction, fedavg.reconstruction, atol=2e-3)


def test_attackers_simulation_of_the_steps_is_the_clients(tiny_model, photo32):
    """The matcher's update for the true secrets, built differentiably from tensors, is the delta the client sent."""
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), attack_config("dlg", pixel_iterations=1),
                  client_seed=5, t=[200], training=THREE_STEPS)
    batch, update = played.batch, played.update
    assert update.eps is None and update.t is None and update.training == THREE_STEPS
    assert played.run.run_to_end().t_estimate == (200,)  # the delta still shows t (attacks/timestep.py)
    x0 = batch.x0.clone().requires_grad_(True)
    simulated = client_update(tiny_model, x0, batch.eps, batch.t, create_graph=True, training=update.training)
    assert simulated[0].requires_grad
    target = torch.sqrt(sum(g.pow(2).sum() for g in update.gradients))
    error = torch.sqrt(sum((s.detach() - g).pow(2).sum() for s, g in zip(simulated, update.gradients)))
    assert error / target < 1e-5
    matcher = GradientMatcher(tiny_model, update)
    assert float(matcher(batch.x0, batch.eps, batch.t).detach()) < 1e-8 * float(matcher(-batch.x0, batch.eps,
                                                                                        batch.t).detach())


def test_dlg_reconstructs_from_a_three_step_delta(tiny_model, photo32):
    """Measured: 8.4 dB at the start, 27.2 dB after 60 evaluations, 32.8 dB after 80, 41.0 dB after 120."""
    played = play(tiny_model, photo32, PAPER, attack_config("dlg", pixel_iterations=80, report_every=80), client_seed=0,
                  t=[500], training=THREE_STEPS)
    assert _psnr(played.run.run_to_end(), photo32) >= 28


@pytest.mark.parametrize("steps, optimizer, residual", [(1, "sgd", True), (2, "sgd", False), (1, "adam", True)])
def test_gidm_plus_runs_its_residual_stage_only_where_it_is_exact(tiny_model, photo32, steps, optimizer, residual):
    config = attack_config("gidm-plus", latent_iterations=0, pixel_iterations=6, report_every=6)
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), config, client_seed=1, t=[100],
                  training=LocalTraining(steps=steps, lr=0.01, optimizer=optimizer))
    result = played.run.run_to_end()
    assert ("residual" in result.phase_starts) == residual and result.iterations == 6


@pytest.mark.parametrize("fields, field", [({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"),
                                           ({"steps": 1000}, "steps"), ({"lr": 0.0}, "lr"),
                                           ({"lr": float("nan")}, "lr"), ({"optimizer": "rmsprop"}, "optimizer"),
                                           ({"optimizer": "Adam"}, "optimizer")])
def test_bad_local_training_is_refused_naming_its_field(fields, field):
    with pytest.raises(ConfigError) as refused:
        LocalTraining(**fields)
    assert refused.value.field == field


def test_the_attackers_adam_is_torchs_adam_step_for_step():
    """Gradients from 1e-10 to 1 (and exact zeros, which must not send nan back): torch's eps sits outside the
    bias-corrected sqrt(v), and any other ordering (eps inside the sqrt, or added before the bias correction) is off
    by orders of magnitude on the small entries."""
    generator = torch.Generator().manual_seed(0)
    scales = 10.0 ** torch.arange(-10, 1).repeat_interleave(20)
    weights = torch.zeros(scales.numel(), requires_grad=True)
    training = LocalTraining(lr=1e-3, optimizer="adam")
    reference = torch.optim.Adam([weights], lr=1e-3, betas=training.betas, eps=training.adam_eps)
    simulated, delta = LocalOptimizer(training, [weights]), torch.zeros(scales.numel())
    for _ in range(4):
        grad = scales * torch.randn(scales.numel(), generator=generator)
        grad[::7] = 0.0
        weights.grad = grad.clone()
        reference.step()
        delta = delta - simulated.step((grad,), [delta])[0]
    assert relative_distance([delta], [weights.detach()]) < 1e-6
    guess = torch.ones(3, requires_grad=True)
    steps = LocalOptimizer(training, [guess])
    steps.step((guess * torch.tensor([0.0, 1e-9, 1.0]),), [guess])
    out = steps.step((guess * torch.tensor([0.0, 2e-9, 0.5]),), [guess])[0]
    assert torch.isfinite(torch.autograd.grad(out.sum(), guess)[0]).all()


ADAM = LocalTraining(steps=3, lr=1e-3, optimizer="adam")


def test_the_attackers_simulated_adam_delta_is_the_clients(tiny_model, photo32):
    """The client's Adam delta (`client_update`, torch's Adam step for step: test_realistic_client.py) is what the
    matcher re-simulates, with the graph the attack differentiates.

    With create_graph, the matcher's mode, the backward rounds each gradient differently (5e-7 relative). Adam
    divides each entry by its own magnitude, so on the ~75 of 165k entries whose gradient is below 1e-7 that
    rounding becomes a delta-sized difference (6e-5 relative measured): it is the arithmetic, not the simulation."""
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), attack_config("dlg", pixel_iterations=1),
                  client_seed=5, t=[200], training=ADAM)
    batch, update = played.batch, played.update
    assert update.training == ADAM and update.t is None
    assert played.run.run_to_end().t_estimate == (200,)  # per-entry normalisation still leaves t readable here
    assert relative_distance(client_update(tiny_model, batch.x0, batch.eps, batch.t, training=ADAM),
                             update.gradients) < 3e-5
    x0 = batch.x0.clone().requires_grad_(True)
    simulated = client_update(tiny_model, x0, batch.eps, batch.t, create_graph=True, training=ADAM)
    assert simulated[0].requires_grad and relative_distance(simulated, update.gradients) < 5e-4
    sgd = client_update(tiny_model, batch.x0, batch.eps, batch.t, training=LocalTraining(3, 1e-3))
    assert relative_distance(sgd, update.gradients) > 0.5  # Adam's delta is not SGD's: the test can tell them apart
    matcher = GradientMatcher(tiny_model, update)
    assert float(matcher(batch.x0, batch.eps, batch.t).detach()) < 1e-7 * float(
        matcher(-batch.x0, batch.eps, batch.t).detach())


def test_dlg_matches_several_adam_steps_through_a_smoothed_adam(tiny_model, photo32, monkeypatch):
    """Adam's first steps send about -lr * sign(gradient) per entry, a piecewise constant function of the image: the
    exact simulated delta gives L2 matching no slope. The attacker's re-simulation smooths Adam's denominator
    (attacks/adam_delta.py) and gets one. Measured (E = 2, lr 1e-3, t 500, 60 evaluations): exact 8.4 dB, smoothed
    14.4 dB (the same SGD delta: 47 dB after 160)."""
    config = attack_config("dlg", pixel_iterations=60, report_every=60)
    training = LocalTraining(steps=2, lr=1e-3, optimizer="adam")
    smoothed = play(tiny_model, photo32, PAPER, config, client_seed=0, t=[500], training=training).run.run_to_end()
    monkeypatch.setattr(adam_delta, "SMOOTHING", 0.0)
    exact = play(tiny_model, photo32, PAPER, config, client_seed=0, t=[500], training=training).run.run_to_end()
    assert _psnr(exact, photo32) < 10 and _psnr(smoothed, photo32) > 12
