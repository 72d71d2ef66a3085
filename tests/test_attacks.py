"""The attacks reconstruct, stream, choose by matching loss, stop cleanly and repeat exactly under one seed."""

from __future__ import annotations

import threading

import pytest
import torch

from gidm_core.attacks.matching import GradientMatcher
from gidm_core.config import attack_config, threat_preset
from gidm_core.metrics import psnr, to_unit
from gidm_core.protocol import play

PAPER = threat_preset("paper")


def _attack(model, x0, method, threat=PAPER, t=500, stop=None, **overrides):
    played = play(model, x0, threat, attack_config(method, **overrides), t=[t] * x0.shape[0], stop=stop)
    events = list(played.run)
    return played.run.result, events, played.batch


def _psnr(result, x0) -> float:
    return psnr(to_unit(result.reconstruction), to_unit(x0))


def test_dlg_reconstructs_a_photo(tiny_model, photo32):
    result, _, _ = _attack(tiny_model, photo32, "dlg", pixel_iterations=150, report_every=50)
    assert _psnr(result, photo32) >= 30


def test_gidm_reconstructs_and_switches_phase_where_configured(tiny_model, photo32):
    result, events, _ = _attack(tiny_model, photo32, "gidm", latent_iterations=12, ddim_steps=2,
                                pixel_iterations=150, report_every=4)
    assert _psnr(result, photo32) >= 30
    assert result.phase_starts == {"latent": 0, "pixel": 12}
    first_pixel = next(e for e in events if e.phase == "pixel")
    assert first_pixel.kind == "phase" and first_pixel.iteration == 12
    # Phase 2 starts from phase 1's best image (the snapshot), not from fresh noise.
    assert torch.allclose(first_pixel.reconstruction, result.snapshots["latent"].clamp(-1, 1), atol=1e-6)
    assert [e.phase for e in events if e.kind == "phase"] == ["latent", "pixel"]


def test_gidm_latent_runs_phase_one_only(tiny_model, photo32):
    result, events, _ = _attack(tiny_model, photo32, "gidm-latent", latent_iterations=6, ddim_steps=2,
                                report_every=2)
    assert set(result.phase_starts) == {"latent"}
    assert result.iterations == 6
    assert {e.phase for e in events} == {"latent", "final"}


def test_events_arrive_at_the_configured_interval(tiny_model, photo32):
    _, events, _ = _attack(tiny_model, photo32, "dlg", pixel_iterations=23, report_every=5)
    assert [e.iteration for e in events] == [0, 5, 10, 15, 20, 23]
    assert [e.kind for e in events] == ["phase"] + ["progress"] * 4 + ["done"]
    assert all(e.reconstruction.shape == photo32.shape for e in events)
    assert events[-1].elapsed >= events[0].elapsed


def test_result_is_the_lowest_matching_loss_seen(tiny_model, photo32):
    played = play(tiny_model, photo32, PAPER, attack_config("ig", pixel_iterations=30, optimizer="adam", lr=0.3,
                                                            lr_schedule="constant"), t=[500])
    result, batch = played.run.run_to_end(), played.batch
    losses = [row["matching"] for row in result.history]
    assert result.matching_loss == min(losses)
    # Re-evaluating the chosen image gives the recorded loss: it is that guess, not the last one.
    matcher = GradientMatcher(tiny_model, played.update, "cosine")
    again = float(matcher(result.reconstruction, batch.eps, batch.t))
    assert again == pytest.approx(result.matching_loss, rel=1e-3, abs=1e-6)


def test_same_seed_same_numbers(tiny_model, photo32):
    a, _, _ = _attack(tiny_model, photo32, "gidm", latent_iterations=3, ddim_steps=2, pixel_iterations=5)
    b, _, _ = _attack(tiny_model, photo32, "gidm", latent_iterations=3, ddim_steps=2, pixel_iterations=5)
    assert [r["matching"] for r in a.history] == [r["matching"] for r in b.history]
    assert torch.equal(a.reconstruction, b.reconstruction)
    c, _, _ = _attack(tiny_model, photo32, "gidm", latent_iterations=3, ddim_steps=2, pixel_iterations=5, attack_seed=1)
    assert not torch.equal(a.reconstruction, c.reconstruction)


def test_stop_from_the_event_consumer_ends_the_run_and_keeps_the_best(tiny_model, photo32):
    # Adam steps once per evaluation, so its events reach the consumer at once (L-BFGS hands them over after each
    # line search; the contract tests check that Stop ends every optimiser within one evaluation).
    config = attack_config("dlg", pixel_iterations=500, report_every=2, optimizer="adam")
    run = play(tiny_model, photo32, PAPER, config, t=[500], stop=threading.Event()).run
    events = []
    for event in run:
        events.append(event)
        if event.iteration >= 6:
            run.stop()
    assert events[-1].kind == "stopped" and "stopped" in events[-1].message
    assert run.result.status == "stopped"
    assert 6 <= run.result.iterations <= 7  # within one step of the request
    assert run.result.reconstruction.shape == photo32.shape


def test_nan_ends_the_run_with_a_message(tiny_model, photo32, monkeypatch):
    calls = {"n": 0}
    original = GradientMatcher.distance_to

    def poisoned(self, grads):
        calls["n"] += 1
        value = original(self, grads)
        return value * float("nan") if calls["n"] > 4 else value

    monkeypatch.setattr(GradientMatcher, "distance_to", poisoned)
    result, events, _ = _attack(tiny_model, photo32, "dlg", pixel_iterations=20, report_every=1)
    assert events[-1].kind == "error" and "nan" in events[-1].message.lower()
    assert result.status == "error" and result.iterations == 4
    assert torch.isfinite(result.reconstruction).all()


def test_private_t_is_recovered_inside_attacks(tiny_model, photo32):
    threat = threat_preset("private-eps-t")
    result, events, batch = _attack(tiny_model, photo32, "dlg", threat=threat, t=321, pixel_iterations=3)
    assert result.t_estimate == (321,)
    assert events[0].phase == "timestep" and "321" in events[0].message
    assert result.eps_estimate is not None and result.eps_estimate.shape == photo32.shape


def test_timestep_search_fallback_when_the_layer_is_unreadable(tiny_model, photo32, monkeypatch):
    import gidm_core.attacks.secrets as secrets

    monkeypatch.setattr(secrets, "recover_timesteps", lambda model, update: None)
    monkeypatch.setattr(secrets, "SEARCH_CANDIDATES", 5)
    monkeypatch.setattr(secrets, "SEARCH_STEPS", 4)
    threat = threat_preset("private-eps-t")
    result, events, _ = _attack(tiny_model, photo32, "dlg", threat=threat, t=999, pixel_iterations=2)
    assert "matching-loss search" in events[0].message
    grid = torch.linspace(0, 999, 5).round().long().tolist()  # the search ranks these candidates, nothing else
    assert len(result.t_estimate) == 1 and result.t_estimate[0] in grid
    assert f"t = {list(result.t_estimate)}" in events[0].message


def test_restarts_start_from_the_best_scoring_latent(tiny_model, photo32):
    one, _, _ = _attack(tiny_model, photo32, "gidm-latent", latent_iterations=1, ddim_steps=1)
    best_of_4, _, _ = _attack(tiny_model, photo32, "gidm-latent", latent_iterations=1, ddim_steps=1, restarts=4)
    # The first candidate of the 4 is the single run's start, so the best of 4 can only match as well or better.
    assert best_of_4.history[0]["matching"] <= one.history[0]["matching"]


def test_time_spent_by_the_consumer_is_not_the_attacks(tiny_model, photo32):
    import time

    run = play(tiny_model, photo32, PAPER, attack_config("dlg", pixel_iterations=4, report_every=1), t=[500]).run
    started = time.perf_counter()
    events = []
    for event in run:
        events.append(event)
        time.sleep(0.3)  # a slow consumer: scoring, a UI, a network
    wall = time.perf_counter() - started
    assert len(events) == 5
    assert run.result.seconds < wall - 4 * 0.3
    assert events[-1].elapsed == pytest.approx(run.result.seconds, abs=0.05)


def test_stop_during_the_timestep_search_ends_the_run_at_once(tiny_model, photo32, monkeypatch):
    import gidm_core.attacks.secrets as secrets

    monkeypatch.setattr(secrets, "recover_timesteps", lambda model, update: None)
    calls = {"n": 0}
    original = GradientMatcher.__call__
    holder = {}

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            holder["run"].stop()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GradientMatcher, "__call__", counting)
    played = play(tiny_model, photo32, threat_preset("private-eps-t"), attack_config("dlg", pixel_iterations=5))
    holder["run"] = played.run
    events = list(played.run)
    assert calls["n"] == 3  # the search (12 candidates x 15 steps) did not go on
    assert played.run.result is None
    assert events[-1].kind == "error" and "stopped by the user" in events[-1].message
