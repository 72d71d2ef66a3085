"""A scenario describes one attacked round completely: it survives JSON, refuses what it does not know, and the
CLI replays a saved run to the same numbers."""

from __future__ import annotations

import json
import re

import pytest
import torch
from test_cli import PHOTO, cli

from gidm_core.config import ConfigError, DefenceConfig, LocalTraining, ThreatModel, attack_config
from gidm_core.models import load_model
from gidm_core.protocol import play_scenario
from gidm_core.scenario import Scenario

RICH = Scenario(model="random:tiny-32", images=("face-05", "face-17"), size=32, client_seed=3, t=(10, 700),
                training=LocalTraining(steps=2, optimizer="adamw", weight_decay=0.01, clip=1.0),
                threat=ThreatModel(knows_eps=False, knows_t=False, prior="random:tiny-32",
                                   defence=DefenceConfig(clip=1.0, sigma=0.01)),
                attack=attack_config("gidm-plus", seconds=5.0, attack_seed=9, starts=2))


def test_a_scenario_survives_json():
    text = json.dumps(RICH.to_dict())
    assert Scenario.from_dict(json.loads(text)) == RICH
    assert Scenario.from_dict(Scenario().to_dict()) == Scenario()


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(colour="red"), "unknown scenario field(s) colour"),
    (lambda d: d["attack"].update(lr_warmup=3), "unknown attack field(s) lr_warmup"),
    (lambda d: d["threat"]["defence"].update(sigma=-1), "noise sigma must be >= 0"),
    (lambda d: d.update(version=0), "scenario version 0"),
    (lambda d: d.update(images=[]), "at least one private image"),
    (lambda d: d.update(t=[1, 2, 3]), "one per image"),
])
def test_a_bad_scenario_is_one_line(change, message):
    values = RICH.to_dict()
    change(values)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Scenario.from_dict(values)


def test_the_prior_is_loaded_only_when_a_latent_phase_uses_it():
    loads = []

    def load(spec):
        loads.append(spec)
        return load_model("random:tiny-32", "cpu")  # the spec only has to reach the loader

    latent = Scenario(model="random:tiny-32", images=("face-05",), threat=ThreatModel(prior="my-prior"),
                      attack=attack_config("gidm", latent_iterations=1, pixel_iterations=1))
    play_scenario(latent, load)
    assert loads == ["random:tiny-32", "my-prior"]
    loads.clear()
    play_scenario(Scenario(model="random:tiny-32", threat=latent.threat,
                           attack=attack_config("dlg", pixel_iterations=1)), load)
    assert loads == ["random:tiny-32"]


def test_given_images_replace_the_named_ones():
    x0 = torch.zeros(1, 3, 32, 32)
    played = play_scenario(Scenario(model="random:tiny-32", attack=attack_config("dlg", pixel_iterations=1)),
                           lambda spec: load_model(spec, "cpu"), images=x0)
    assert torch.equal(played.batch.x0, x0)


def test_the_cli_replays_a_saved_run_to_the_same_numbers(tmp_path):
    first, again = tmp_path / "first", tmp_path / "again"
    done = cli("attack", "--model", "random:tiny-32", "--image", str(PHOTO), "--method", "dlg", "--pixel-iterations",
               "4", "--client-seed", "5", "--attack-seed", "2", "--local-steps", "2", "--out", str(first))
    assert done.returncode == 0, done.stderr
    saved = Scenario.load(first / "scenario.json")
    assert saved.client_seed == 5 and saved.attack.attack_seed == 2 and saved.training.steps == 2
    done = cli("attack", "--scenario", str(first / "scenario.json"), "--out", str(again))
    assert done.returncode == 0, done.stderr
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (first, again))
    assert a["psnr"] == b["psnr"] and a["matching_loss"] == b["matching_loss"] and a["t_true"] == b["t_true"]
    refused = cli("attack", "--scenario", str(first / "scenario.json"), "--method", "ig")
    assert refused.returncode == 2 and "change it in the file, not with --method" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
