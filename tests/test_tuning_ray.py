"""`tune --ray`: trials run as Ray tasks give the same trials as this process would (a local Ray of 2 CPUs, the
tiny random UNet, one torch thread, iteration budgets; most of the time is Ray starting on a busy machine)."""

from __future__ import annotations

import pytest

from gidm_core.client import PrivateBatch, share
from gidm_core.config import threat_preset
from gidm_core.images import load_named_images
from gidm_core.tuning import RayPlan, TuneConfig, run_trial, tune
from gidm_core.tuning.space import overrides
from gidm_core.tuning.trial import Referee

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread")]


def test_ray_trials_equal_the_same_trials_in_this_process(tiny_model):
    threat = threat_preset("paper")
    batch = PrivateBatch.draw(load_named_images(["face-05"], 32), tiny_model.num_train_timesteps, seed=3)
    update = share(tiny_model, batch, threat, seed=3)
    config = TuneConfig(method="gidm", trials=3, iterations=6)
    records = list(tune(tiny_model, update, threat, config, ray=RayPlan("random:tiny-32", workers=2, threads=1)))
    assert sorted(r.number for r in records) == [0, 1, 2] and all(r.state == "COMPLETE" for r in records)
    referee = Referee(tiny_model, update, threat)
    for record in records:
        here = run_trial(tiny_model, update, threat, config.attack(record.outcome.params), record.outcome.params,
                         referee)
        assert here.matching_loss == pytest.approx(record.outcome.matching_loss, rel=1e-6)
    first = next(r for r in records if r.number == 0)  # Ray returns trials as they finish, not in order
    assert overrides("gidm", first.outcome.params, 10)["latent_iterations"] == 1  # trial 0 is the default: 10 %
