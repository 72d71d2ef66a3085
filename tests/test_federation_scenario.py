"""A federation built from a Scenario: the clients train, and the server attacks, exactly as the saved round says."""

import sys

import pytest

from gidm_core.cli import main
from gidm_core.config import ConfigError, DefenceConfig, LocalTraining, ThreatModel, attack_config, threat_preset
from gidm_core.federation.config import FederationConfig
from gidm_core.scenario import Scenario

ROUND = Scenario(model="faces32", images=("face-05", "face-17"), client_seed=3,
                 training=LocalTraining(steps=3, lr=1e-2, optimizer="adamw", weight_decay=0.01, local_batch=1,
                                        noise="fresh", clip=1.0),
                 threat=threat_preset("private-eps-t"),
                 attack=attack_config("gidm", pixel_iterations=50, lr=0.05, distance="cosine", attack_seed=7))


def test_the_federation_trains_threatens_and_attacks_as_the_scenario_says():
    config = FederationConfig.from_scenario(ROUND, model_config="tiny-32", batch_size=2)
    assert config.training == ROUND.training
    assert config.threat_model == ROUND.threat
    assert config.attack_config == ROUND.attack
    # and it survives the flat trip through a Flower ConfigRecord
    assert FederationConfig.from_mapping(config.to_record()).attack_config == ROUND.attack


def test_fedsgd_becomes_one_sgd_step():
    config = FederationConfig.from_scenario(Scenario(), model_config="tiny-32")
    assert config.training == LocalTraining() and config.attack_options == ""


@pytest.mark.parametrize("scenario, field", [
    (Scenario(threat=ThreatModel(defence=DefenceConfig(clip=1.0, sigma=0.1))), "threat"),
    (Scenario(training=LocalTraining(optimizer="adam", betas=(0.5, 0.9))), "training")])
def test_what_a_run_config_cannot_carry_is_refused(scenario, field):
    with pytest.raises(ConfigError) as refused:
        FederationConfig.from_scenario(scenario, model_config="tiny-32")
    assert refused.value.field == field and "\n" not in str(refused.value)


@pytest.mark.parametrize("options", ["{", "[1]", '{"magic": 1}', '{"lr": "fast"}', '{"pixel_iterations": 5}'])
def test_bad_attack_options_are_one_config_error(options):
    with pytest.raises(ConfigError) as refused:
        FederationConfig(model_config="tiny-32", attack_options=options)
    assert refused.value.field == "attack_options"


def test_federate_scenario_takes_the_round_and_refuses_flags_it_sets(tmp_path, capsys, monkeypatch):
    ROUND.save(tmp_path / "scenario.json")
    argv = ["federate", "--out", str(tmp_path / "f"), "--model-config", "tiny-32", "--scenario",
            str(tmp_path / "scenario.json")]
    assert main([*argv, "--client-lr", "0.1", "--method", "gidm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--client-lr, --method" in err
    monkeypatch.setitem(sys.modules, "flwr.simulation", None)  # stop right after the config is built
    assert main(argv) == 2
    assert "pip install -r requirements-scale.txt" in capsys.readouterr().err
