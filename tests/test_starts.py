"""Many starts for the price of few (attacks/starts.py): one vectorised scoring equals N separate ones, successive
halving keeps the start with the lowest matching loss and costs what its plan says, and on the trained faces32 four
starts find a face that one start misses."""

from __future__ import annotations

import pytest
import torch

from gidm_core.attacks import ATTACKS
from gidm_core.attacks.base import AttackContext, Run
from gidm_core.attacks.events import Guess, Objective
from gidm_core.attacks.matching import GradientMatcher
from gidm_core.attacks.starts import batched_matching, cost_factor, halving_plan, planned_evaluations, with_starts
from gidm_core.config import ConfigError, DefenceConfig, LocalTraining, attack_config, threat_preset
from gidm_core.methods import REGISTRY
from gidm_core.protocol import play
from gidm_core.seeds import derive


@pytest.mark.parametrize("distance,weights,defence", [
    ("l2", "normalized", None), ("cosine", "uniform", None), ("l2", "uniform", DefenceConfig(clip=1.0, keep=0.5))])
def test_batched_matching_equals_separate_evaluations(tiny_model, photo32, distance, weights, defence):
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), attack_config("dlg"), client_seed=2, t=[70])
    matcher = GradientMatcher(tiny_model, played.update, distance, weights, defence)
    g = torch.Generator().manual_seed(0)
    images = torch.randn((4, *photo32.shape), generator=g).clamp(-1, 1)
    images[2] = photo32  # one candidate is the truth itself: its loss is the smallest
    eps = torch.randn((4, *photo32.shape), generator=g)
    eps[2] = played.batch.eps
    t = played.batch.t
    separate = torch.stack([matcher(x, e, t, create_graph=False).detach() for x, e in zip(images, eps)])
    together = batched_matching(matcher, images, eps, t)
    assert torch.allclose(together, separate, rtol=1e-4, atol=1e-7)
    shared_eps = batched_matching(matcher, images, eps[0], t)  # one eps for every candidate broadcasts
    assert torch.allclose(shared_eps[0], separate[0], rtol=1e-4, atol=1e-7)



def test_batched_matching_scores_a_fresh_noise_delta_and_gidm_restarts_on_it(tiny_model, photo32, one_thread):
    """A fresh-noise delta's eps has one row per step, not per image: scoring candidates (GIDM's `restarts`)
    broadcasts it to each candidate (it crashed on such a delta) and gives the matcher's own losses."""
    training = LocalTraining(steps=3, lr=1e-3, noise="fresh")
    config = attack_config("gidm", latent_iterations=2, pixel_iterations=2, restarts=3, ddim_steps=1)
    played = play(tiny_model, photo32, threat_preset("paper"), config, client_seed=4, training=training)
    matcher = GradientMatcher(tiny_model, played.update)
    update = played.update
    images = torch.stack([photo32 * 0.5, photo32])
    separate = torch.stack([matcher(x, update.eps, update.t, create_graph=False).detach() for x in images])
    assert torch.allclose(batched_matching(matcher, images, update.eps, update.t), separate)
    assert separate[1] < 1e-6 * separate[0]  # the truth re-simulates the delta
    assert played.run.run_to_end().status == "done"

def test_halving_plan_and_cost():
    assert halving_plan(1) == () and cost_factor(1) == 1.0
    assert halving_plan(4) == (0.15, 0.3) and cost_factor(4) == pytest.approx(1.6)
    assert halving_plan(8) == (0.15, 0.3, 0.6) and cost_factor(8) == pytest.approx(2.8)
    with pytest.raises(ConfigError, match="starts"):
        attack_config("gidm-plus", starts=0)


PLANTED = 2  # the start whose basin is deepest


def _planted_attack(ctx: AttackContext):
    """A toy attack: descend (x - 1)^2 + floor from a seeded start, with floor 0 for the planted start only. The
    planted start's seed is derived exactly as starts.py derives it, so nothing but its loss singles it out."""
    floor = 0.0 if ctx.config.attack_seed == derive(7, PLANTED) else 1.0
    x = ctx.randn((1,)).mul(3).requires_grad_(True)

    def objective() -> Objective:
        loss = (x - 1).pow(2).sum() + floor
        return Objective(loss, loss, {}, Guess(torch.zeros(ctx.shape) + x.detach()))

    yield from ctx.optimise("pixel", [x], objective, ctx.config.pixel_iterations, 0.05)


def test_successive_halving_keeps_the_planted_best_start(tiny_model, photo32):
    played = play(tiny_model, photo32, threat_preset("paper"), attack_config("dlg"), client_seed=0)
    config = attack_config("dlg", starts=4, pixel_iterations=100, attack_seed=7, optimizer="adam", report_every=5)
    run = Run(with_starts(_planted_attack), AttackContext(tiny_model, played.update, threat_preset("paper"), config))
    events = list(run)
    result = run.result
    assert result.status == "done"
    assert result.matching_loss < 0.5  # the planted start's floor is 0, every other start's is 1
    assert result.matching_loss == min(row["matching"] for row in result.history)
    per_start = {k: sum(row["start"] == k for row in result.history) for k in range(4)}
    assert per_start[PLANTED] == 100  # it ran its whole plan ...
    assert sorted(per_start.values())[:2] == [15, 15]  # ... two starts were dropped at 15 % ...
    assert sorted(per_start.values())[2] == 30  # ... and one at 30 %: 160 evaluations in all, 1.6 runs
    assert result.iterations == len(result.history) == planned_evaluations(4, 100) == 160
    assert [row["iteration"] for row in result.history] == list(range(result.iterations))
    assert f"start {PLANTED + 1} of 4 leads" in events[-2].message


def test_a_time_budget_covers_all_starts(tiny_model, photo32):
    config = attack_config("dlg", starts=4, pixel_iterations=1000, seconds=2.0, clock="cpu", report_every=1)
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), config, client_seed=0)
    result = played.run.run_to_end()
    assert result.status == "done"
    assert 2.0 <= result.seconds < 2.0 + 1.0  # a start overshoots by at most one L-BFGS step
    assert len({row["start"] for row in result.history}) == 4


def _small(method: str, **overrides):
    budget = dict(latent_iterations=10) if method == "gidm-latent" else dict(pixel_iterations=10)
    if method in ("gidm", "gidm-plus"):
        budget = dict(latent_iterations=5, pixel_iterations=5)
    return attack_config(method, ddim_steps=1, report_every=1, **budget, **overrides)


@pytest.mark.parametrize("method", list(ATTACKS))
def test_every_method_keeps_the_attack_contract_with_several_starts(tiny_model, photo32, method, monkeypatch):
    drawn: dict[int, list[torch.Tensor]] = {0: [], 12345: []}
    original = AttackContext.randn
    for client_seed, draws in drawn.items():
        def recording(self, shape=None, draws=draws):
            value = original(self, shape)
            draws.append(value.clone())  # the attack then optimises the drawn tensor in place
            return value

        monkeypatch.setattr(AttackContext, "randn", recording)
        config = _small(method, starts=3, optimizer="adam")
        played = play(tiny_model, photo32, threat_preset("private-eps-t"), config, client_seed=client_seed)
        events = list(played.run)
        result = played.run.result
        assert result.status == "done"
        assert result.iterations == len(result.history) == planned_evaluations(3, config.total_iterations)
        assert [row["iteration"] for row in result.history] == list(range(result.iterations))
        assert [e.iteration for e in events] == sorted(e.iteration for e in events)
        assert result.matching_loss == min(row["matching"] for row in result.history)
        winner = min(result.history, key=lambda row: row["matching"])["start"]
        phases = list(dict.fromkeys(row["phase"] for row in result.history if row["start"] == winner))
        assert tuple(phases) == REGISTRY[method].phases
    # The starts' draws come from the attacker's stream alone: the client's seed changes none of them.
    assert len(drawn[0]) == len(drawn[12345]) >= 3
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], drawn[12345]))


def test_stop_ends_a_multi_start_run_within_one_evaluation(tiny_model, photo32, monkeypatch):
    calls, holder = {"n": 0}, {}
    original = GradientMatcher.distance_to

    def counting(self, grads):
        calls["n"] += 1
        if calls["n"] == 7:  # inside the second start
            holder["run"].stop()
        return original(self, grads)

    monkeypatch.setattr(GradientMatcher, "distance_to", counting)
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), _small("gidm-plus", starts=4), client_seed=3)
    holder["run"] = played.run
    events = list(played.run)
    assert events[-1].kind == "stopped" and played.run.result.iterations == 7


def test_a_start_that_converges_ends_itself_not_the_run(tiny_model, photo32):
    config = attack_config("dlg", starts=2, pixel_iterations=200, plateau=5, optimizer="adam", lr=1e-9)
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), config, client_seed=0)
    result = played.run.run_to_end()
    assert result.status == "done"
    assert {row["start"] for row in result.history} == {0, 1}  # the first start's plateau did not end the run
    assert result.iterations < planned_evaluations(2, 200)
