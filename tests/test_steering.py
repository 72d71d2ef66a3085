"""Steering a running attack (gidm_core/attacks/steering.py): each action changes exactly what it should, from the
evaluation it is applied at, and the logged schedule replays the live run number for number."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from gidm_core.attacks.steering import SteerAction, Steering, load_schedule
from gidm_core.config import ConfigError, attack_config, threat_preset
from gidm_core.protocol import play

PAPER = threat_preset("paper")


def _config(method="gidm", **overrides):
    return attack_config(method, **{**dict(latent_iterations=6, ddim_steps=1, pixel_iterations=14, optimizer="adam",
                                           report_every=1), **overrides})


def _run(model, x0, config, steering=None, on_event=None):
    played = play(model, x0, PAPER, config, t=[500], steering=steering)
    events = []
    for event in played.run:
        events.append(event)
        if on_event is not None:
            on_event(event)
    return played.run.result, events


def _losses(result):
    return [row["matching"] for row in result.history]


def _schedule(*actions):
    return [SteerAction(action, value, at) for at, action, value in actions]


def test_a_learning_rate_change_at_k_changes_only_what_follows_k(tiny_model, photo32):
    config = _config()
    plain, _ = _run(tiny_model, photo32, config)
    steered, events = _run(tiny_model, photo32, config, Steering(config, _schedule((9, "lr", 0.5)), live=False))
    # Evaluation 9 still sees the step taken at the old rate; the step after it uses the new one.
    assert _losses(steered)[:10] == _losses(plain)[:10]
    assert _losses(steered)[10] != _losses(plain)[10]
    assert steered.iterations == plain.iterations == 20
    marks = [e for e in events if e.kind == "steer"]
    assert [(e.iteration, e.phase) for e in marks] == [(9, "pixel")] and "0.5" in marks[0].message
    assert steered.steering == [{"at": 9, "action": "lr", "value": 0.5, "phase": "pixel"}]


def test_next_phase_and_extend_move_the_phase_boundaries_by_what_they_say(tiny_model, photo32):
    config = _config(optimizer="lbfgs")
    plain, _ = _run(tiny_model, photo32, config)
    assert plain.phase_starts == {"latent": 0, "pixel": 6}
    skipped, _ = _run(tiny_model, photo32, config, Steering(config, _schedule((3, "next_phase", None)), live=False))
    assert skipped.phase_starts == {"latent": 0, "pixel": 3} and skipped.iterations == 3 + 14
    assert _losses(skipped)[:3] == _losses(plain)[:3]
    extended, _ = _run(tiny_model, photo32, config, Steering(config, _schedule((2, "extend", 4)), live=False))
    assert extended.phase_starts == {"latent": 0, "pixel": 10} and extended.iterations == 10 + 14
    assert _losses(extended)[:6] == _losses(plain)[:6], "an extension changes nothing before the phase's old end"


def test_the_logged_schedule_replays_the_live_run_number_for_number(tiny_model, photo32):
    config = _config()
    live = Steering(config)

    def steer(event):  # requests arrive while the run goes; each lands at the next evaluation
        if event.kind == "progress" and event.iteration == 2:
            live.request("next_phase")
        elif event.kind == "progress" and event.iteration == 7:
            live.request("lr", 0.02)
            live.request("extend", 3)

    steered, _ = _run(tiny_model, photo32, config, live, steer)
    assert [(a["at"], a["action"]) for a in steered.steering] == [(3, "next_phase"), (8, "lr"), (8, "extend")]
    assert steered.iterations == 3 + 14 + 3
    replay = Steering(config, [SteerAction(a["action"], a["value"], a["at"]) for a in steered.steering], live=False)
    replayed, _ = _run(tiny_model, photo32, config, replay)
    assert _losses(replayed) == _losses(steered)
    assert (replayed.reconstruction == steered.reconstruction).all()


def test_pause_holds_the_run_off_its_clock_and_resume_continues_it_unchanged(tiny_model, photo32):
    config = _config("dlg", pixel_iterations=12)
    plain, _ = _run(tiny_model, photo32, config)
    steering = Steering(config)
    seen = []

    def pause_at_four(event):
        seen.append(event.iteration)
        if event.kind == "progress" and event.iteration == 4:
            steering.request("pause")
            threading.Timer(1.5, steering.request, args=("resume",)).start()

    began = time.perf_counter()
    paused, _ = _run(tiny_model, photo32, config, steering, pause_at_four)
    assert time.perf_counter() - began >= 1.5
    assert paused.seconds < plain.seconds + 1.0, "the pause is not attack time"
    assert _losses(paused) == _losses(plain)
    assert [(a["at"], a["action"]) for a in paused.steering] == [(5, "pause"), (5, "resume")]


def test_stop_while_paused_ends_the_run_with_its_best_guess(tiny_model, photo32):
    config = _config("dlg", pixel_iterations=50)
    steering = Steering(config)
    played = play(tiny_model, photo32, PAPER, config, t=[500], steering=steering)
    for event in played.run:
        if event.iteration == 0:
            steering.request("pause")
            threading.Timer(0.5, played.run.stop).start()
    result = played.run.result
    assert result.status == "stopped" and result.iterations == 1 and result.reconstruction.shape == photo32.shape


def test_bad_steering_is_refused_in_one_line():
    lbfgs, adam = attack_config("gidm"), _config()
    with pytest.raises(ConfigError, match="L-BFGS"):
        Steering(lbfgs).request("lr", 0.1)
    for action, value, match in (("lr", -1, "learning rate"), ("lr", float("nan"), "learning rate"),
                                 ("extend", 2.5, "whole number"), ("extend", 0, "whole number"),
                                 ("jump", None, "unknown steering action"), ("next_phase", 3, "takes no value")):
        with pytest.raises(ConfigError, match=match):
            Steering(adam).request(action, value)
    with pytest.raises(ConfigError, match="not paused"):
        Steering(adam).request("resume")
    with pytest.raises(ConfigError, match="single start"):
        Steering(attack_config("gidm", starts=2)).request("next_phase")


@pytest.mark.parametrize("text, match", [
    ("not json", "not JSON"), ('{"at": 1}', "JSON list"), ('[{"action": "lr", "value": 0.1}]', "entry 0"),
    ('[{"at": 1, "action": "lr", "value": 0.1}, {"at": -1, "action": "pause"}]', "entry 1: steering 'at'")])
def test_a_bad_schedule_file_is_refused_naming_the_entry(tmp_path, text, match):
    path = tmp_path / "schedule.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_schedule(path, _config())


def test_the_cli_replays_a_schedule_and_refuses_a_bad_one(tmp_path):
    schedule = tmp_path / "schedule.json"
    schedule.write_text(json.dumps([{"at": 2, "action": "next_phase"}, {"at": 6, "action": "extend", "value": 3}]))
    base = [sys.executable, "-m", "gidm_core", "attack", "--model", "random:tiny-32", "--image", "face-05",
            "--method", "gidm", "--latent-iterations", "5", "--ddim-steps", "1", "--pixel-iterations", "8"]
    done = subprocess.run([*base, "--steer", str(schedule), "--out", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-500:]
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert report["iterations"] == 2 + 8 + 3 and report["phase_starts"] == {"latent": 0, "pixel": 2}
    assert [a["action"] for a in report["steering"]] == ["next_phase", "extend"]
    schedule.write_text('[{"at": 2, "action": "lr", "value": 0.1}]')
    refused = subprocess.run([*base, "--steer", str(schedule)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0 and "L-BFGS" in refused.stderr
