"""The attacker's tuner: reproducible under its seed, ranked by matching loss alone (never the truth), resumable
from its storage, and refusing bad input in one line.

Tiny random UNet at 32 px (`random:tiny-32`), one face, FedSGD with eps and t known, a few trials of 6-8
evaluations each (iteration budgets, so runs are deterministic with one torch thread).
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import pytest
import torch

from gidm_core.attacks.matching import GradientMatcher
from gidm_core.cli import main
from gidm_core.client import PrivateBatch, share
from gidm_core.config import attack_config, threat_preset
from gidm_core.images import load_named_images
from gidm_core.methods import METHODS
from gidm_core.metrics import psnr
from gidm_core.tuning import SPACES, TrialOutcome, TuneConfig, best, default_params, run_trial, tune
from gidm_core.tuning import study as study_module
from gidm_core.tuning.trial import Referee

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shared(tiny_model):
    """(client's batch, shared update): made once; the tuner gets only the update."""
    threat = threat_preset("paper")
    batch = PrivateBatch.draw(load_named_images(["face-05"], 32), tiny_model.num_train_timesteps, seed=3)
    return batch, share(tiny_model, batch, threat, seed=3)


def _study(model, update, trials=3, seed=0, **kwargs):
    config = TuneConfig(method="gidm", trials=trials, iterations=6, attack_seed=seed)
    return list(tune(model, update, threat_preset("paper"), config, **kwargs))


def test_every_method_has_a_space_and_its_defaults_are_a_point_of_it():
    assert tuple(SPACES) == METHODS
    for method in METHODS:
        default = attack_config(method)
        point = TuneConfig(method=method).attack(default_params(method), report_every=default.report_every)
        point = replace(point, seconds=0.0, clock=default.clock)
        if not default.uses_pixel_phase:  # GIDM-latent has no pixel phase to count
            point = replace(point, pixel_iterations=default.pixel_iterations)
        assert point == default, method


def test_same_seed_same_study_and_the_pick_is_the_lowest_matching_loss(tiny_model, shared):
    batch, update = shared
    first, again = _study(tiny_model, update), _study(tiny_model, update)
    assert [(r.outcome.params, r.outcome.matching_loss, r.state) for r in first] == [
        (r.outcome.params, r.outcome.matching_loss, r.state) for r in again]
    assert first[0].outcome.params == default_params("gidm")  # the defaults are always trial 0
    assert len({str(r.outcome.params) for r in first}) == 3
    other = _study(tiny_model, update, trials=2, seed=1)
    assert other[1].outcome.params != first[1].outcome.params
    # The study's value is the matching loss of the trial's answer, recomputed here from the update alone.
    referee = GradientMatcher(tiny_model, update, "l2", "normalized")
    for record in first:
        o = record.outcome
        recomputed = float(referee(o.reconstruction, update.eps, update.t, create_graph=False))
        assert o.matching_loss == pytest.approx(recomputed, rel=1e-5)
    chosen = best(first)
    assert chosen.outcome.matching_loss == min(r.outcome.matching_loss for r in first if r.state == "COMPLETE")


def test_a_planted_study_picks_by_matching_loss_where_psnr_disagrees(tiny_model, shared, monkeypatch):
    """Each planted trial answers with the truth blurred by noise whose size falls with K (PSNR best at large K),
    and reports a matching loss that rises with K: the study must follow the loss, to K = 1."""
    batch, update = shared
    truth = batch.x0

    def planted(model, update, threat, config, params, referee, prior=None, judge=None, stop=None):
        k = params["ddim_steps"]
        answer = (truth + torch.randn(truth.shape, generator=torch.Generator().manual_seed(k)) / k).clamp(-1, 1)
        return TrialOutcome(params, float(k), float(k), 10, 0.1, "done", "", [], answer)

    monkeypatch.setattr(study_module, "run_trial", planted)
    records = _study(tiny_model, update, trials=8)
    scores = {r.number: psnr((r.outcome.reconstruction + 1) / 2, (truth + 1) / 2) for r in records}
    chosen, psnr_best = best(records), max(records, key=lambda r: scores[r.number])
    assert chosen.outcome.params["ddim_steps"] == min(r.outcome.params["ddim_steps"] for r in records) == 1
    assert psnr_best.outcome.params["ddim_steps"] > 1 and scores[psnr_best.number] > scores[chosen.number]


def test_a_judged_trial_is_pruned_at_its_first_checkpoint_and_still_answers(tiny_model, shared):
    _, update = shared
    threat = threat_preset("paper")
    config = attack_config("dlg", pixel_iterations=40, report_every=2)
    seen = []
    outcome = run_trial(tiny_model, update, threat, config, {}, Referee(tiny_model, update, threat),
                        judge=lambda step, value: seen.append((step, value)) or True)
    assert outcome.pruned and len(seen) == 1 and 25 <= seen[0][0] < 50
    assert outcome.iterations < 20 and math.isfinite(outcome.matching_loss) and outcome.reconstruction is not None


def _cli(tmp_path, *extra, out="out"):
    budget = [] if "--seconds-per-trial" in extra else ["--iterations-per-trial", "8"]
    return main(["tune", "--model", "random:tiny-32", "--image", "face-05", "--method", "dlg", *budget,
                 "--out", str(tmp_path / out), *extra])


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_storage_resumes_the_study_and_refuses_other_settings(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    assert _cli(tmp_path, "--trials", "2", "--storage", storage, out="a") == 0
    assert _cli(tmp_path, "--trials", "3", "--storage", storage, out="b") == 0
    first, resumed = _rows(tmp_path / "a" / "trials.csv"), _rows(tmp_path / "b" / "trials.csv")
    assert len(first) == 2 and len(resumed) == 3 and resumed[:2] == first  # two loaded, one new trial run
    evaluated = _rows(tmp_path / "b" / "evaluator.csv")
    assert [row["trial"] for row in evaluated] == ["2"]  # earlier trials' answers are not stored: not rescored
    capsys.readouterr()
    assert _cli(tmp_path, "--trials", "3", "--storage", storage, "--attack-seed", "5", out="c") == 2
    err = capsys.readouterr().err.strip()
    assert "was made with other settings (attack_seed)" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--trials", "0"], "trials must be an integer in [1, 500]"),
    (["--seconds-per-trial", "-1"], "--seconds-per-trial must be a finite number > 0"),
    (["--seconds-per-trial", "nan"], "--seconds-per-trial must be a finite number > 0"),
    (["--seconds-per-trial", "5", "--iterations-per-trial", "5"], "not both"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--storage", "sqlite:////no/such/folder/study.db"], "the folder /no/such/folder does not exist"),
    (["--storage", "nosuchdb://x"], "--storage nosuchdb://x: cannot open the study there"),
    (["--workers", "3"], "--workers and --address need --ray"),
    (["--threat", "nope"], "unknown threat preset 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, message):
    assert _cli(tmp_path, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "trials.csv").exists()
