"""The contract every attack in `ATTACKS` keeps, for every optimiser: one parametrised suite, like diffusers' shared
scheduler tests. An attack sees only what the server sees (its random draws owe nothing to the client's secrets),
stops within one evaluation, answers with the lowest matching loss it saw, and counts iterations one by one."""

from __future__ import annotations

import pytest
import torch

from gidm_core.attacks import ATTACKS
from gidm_core.attacks.base import AttackContext
from gidm_core.attacks.matching import GradientMatcher
from gidm_core.config import OPTIMIZERS, attack_config, threat_preset
from gidm_core.methods import REGISTRY
from gidm_core.protocol import play

PRIVATE = threat_preset("private-eps-t")
CASES = [(method, optimizer) for method in ATTACKS for optimizer in ("lbfgs", "adam")]
assert {optimizer for _, optimizer in CASES} < set(OPTIMIZERS)


def _config(method: str, optimizer: str, budget: int, **overrides):
    iterations = dict(latent_iterations=budget) if method == "gidm-latent" else dict(pixel_iterations=budget)
    if method in ("gidm", "gidm-plus"):  # both phases (GIDM+: the latent phase, then its joint and residual stages)
        iterations = dict(latent_iterations=budget // 2, pixel_iterations=budget - budget // 2)
    return attack_config(method, optimizer=optimizer, ddim_steps=1, report_every=1, **iterations, **overrides)


def _draws(model, x0, method, client_seed, monkeypatch):
    """Every tensor the attacker drew from its random stream during a short run against a private client."""
    drawn: list[torch.Tensor] = []
    original = AttackContext.randn

    def recording(self, shape=None):
        value = original(self, shape)
        drawn.append(value.clone())
        return value

    monkeypatch.setattr(AttackContext, "randn", recording)
    played = play(model, x0, PRIVATE, _config(method, "adam", 2), client_seed=client_seed)
    played.run.run_to_end()
    monkeypatch.setattr(AttackContext, "randn", original)
    return drawn, played.batch


@pytest.mark.parametrize("method", list(ATTACKS))
def test_the_attackers_draws_owe_nothing_to_the_clients_secrets(tiny_model, photo32, method, monkeypatch):
    # Equal seeds for client and attacker: the case that once handed the attacker the client's eps.
    drawn, batch = _draws(tiny_model, photo32, method, 0, monkeypatch)
    other, other_batch = _draws(tiny_model, photo32, method, 12345, monkeypatch)
    assert drawn, "every attack starts from seeded draws"
    assert not torch.equal(batch.eps, other_batch.eps)
    # The client's seed changed its secrets but not one of the attacker's draws ...
    assert len(drawn) == len(other) and all(torch.equal(a, b) for a, b in zip(drawn, other))
    # ... and no draw resembles the client's noise (independent N(0,1) fields: |corr| ~ 1/sqrt(3072) ~ 0.02).
    for value in drawn:
        if value.shape == batch.eps.shape:
            corr = torch.corrcoef(torch.stack([value.flatten(), batch.eps.flatten()]))[0, 1]
            assert abs(float(corr)) < 0.1


@pytest.mark.parametrize("method,optimizer", CASES)
def test_stop_ends_the_run_within_one_evaluation(tiny_model, photo32, method, optimizer, monkeypatch):
    calls = {"n": 0}
    original = GradientMatcher.distance_to
    holder = {}

    def counting(self, grads):
        calls["n"] += 1
        if calls["n"] == 5:
            holder["run"].stop()  # as a user's Stop arriving from another thread mid-evaluation
        return original(self, grads)

    monkeypatch.setattr(GradientMatcher, "distance_to", counting)
    played = play(tiny_model, photo32, PRIVATE, _config(method, optimizer, 40), client_seed=3)
    holder["run"] = played.run
    events = list(played.run)
    assert events[-1].kind == "stopped"
    assert played.run.result.status == "stopped"
    assert played.run.result.iterations == 5  # the evaluation in flight finishes; no further one starts


@pytest.mark.parametrize("method,optimizer", CASES)
def test_answer_is_the_lowest_matching_loss_and_iterations_count_up(tiny_model, photo32, method, optimizer):
    config = _config(method, optimizer, 12)
    played = play(tiny_model, photo32, PRIVATE, config, client_seed=1)
    events = list(played.run)
    result = played.run.result
    assert result.status == "done"
    assert result.iterations == config.total_iterations == len(result.history) == 12
    assert [row["iteration"] for row in result.history] == list(range(12))
    assert result.matching_loss == min(row["matching"] for row in result.history)
    seen = [e.iteration for e in events]
    assert seen == sorted(seen) and seen[-1] == 12
    # The phases it ran are its registry entry's, in order (with eps private, GIDM+ runs all three).
    phases = list(dict.fromkeys(row["phase"] for row in result.history))
    assert tuple(phases) == REGISTRY[method].phases


def test_every_registered_method_runs_the_code_its_entry_names():
    assert list(ATTACKS) == list(REGISTRY)
    for name, entry in REGISTRY.items():
        module, function = entry.code.split(":")
        assert (ATTACKS[name].__module__, ATTACKS[name].__name__) == (f"gidm_core.attacks.{module}", function)
