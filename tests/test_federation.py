"""The Flower federation under attack: a real run (2 clients, 2 rounds, Ray) on a tiny random-init UNet, where the
curious server's attack recovers a client's face; the client's update is exactly the one the attack simulates; the
truth stays with the evaluator; the streams are independent; bad input is one line, exit 2."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from gidm_core import client
from gidm_core.cli import main
from gidm_core.client import client_update
from gidm_core.config import ConfigError
from gidm_core.federation.batches import client_seed, private_batch
from gidm_core.federation.config import FederationConfig
from gidm_core.models import load_model
from gidm_core.seeds import stream
from gidm_core.training import trainer

pytest.importorskip("flwr")
from gidm_core.federation import client_app  # noqa: E402  (needs flwr)
from gidm_core.federation.model import build_model, initial_state  # noqa: E402

TINY = FederationConfig(model_config="tiny-32", clients=2, rounds=2, local_steps=1, client_lr=0.01, method="dlg",
                        pixel_iterations=120)


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    """One federation through the CLI: (exit code, its output folder)."""
    out = tmp_path_factory.mktemp("federation")
    argv = ["federate", "--out", str(out), "--model-config", "tiny-32", "--clients", "2", "--rounds", "2",
            "--local-steps", "1", "--client-lr", "0.01", "--method", "dlg", "--pixel-iterations", "120", "--cpus", "2"]
    return main(argv), out


@pytest.mark.ray
@pytest.mark.slow
def test_the_curious_server_reconstructs_a_clients_image(federation):
    code, out = federation
    records = json.loads((out / "leakage.json").read_text())["records"]
    assert code == 0
    assert max(r["psnr"] for r in records) >= 30, [round(r["psnr"], 1) for r in records]


@pytest.mark.ray
@pytest.mark.slow
def test_leakage_has_one_scored_record_per_round_and_client(federation):
    _, out = federation
    summary = json.loads((out / "leakage.json").read_text())
    records = summary["records"]
    assert [(r["round"], r["client"]) for r in records] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for r in records:
        assert {"psnr", "ssim", "lpips", "global_loss"} <= r.keys() and r["update_kind"] == "fedavg"
        assert len(r["t_true"]) == r["batch_size"] and all(0 <= t < 1000 for t in r["t_true"])
        assert r["local_steps"] == 1 and r["iterations"] == 120 and (out / r["reconstruction"]).is_file()
    assert set(summary["global_loss_after_round"]) == {"0", "1", "2"}
    assert (out / "leakage_vs_round.png").is_file() and (out / "reconstructions_by_round.png").is_file()


@pytest.mark.ray
@pytest.mark.slow
def test_each_rounds_checkpoint_is_a_model_the_attack_loads(federation):
    _, out = federation
    model = load_model(str(out / "round-0002"), allow_local=True)
    assert model.image_size == 32 and model.num_train_timesteps == 1000 and not model.unet.training


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_clients_delta_is_the_update_the_attack_simulates(optimizer):
    """The ClientApp's delta equals client_update on the same batch and per-step draws, for E = 3."""
    config = FederationConfig(model_config="tiny-32", clients=2, local_steps=3, client_lr=0.1,
                              client_optimizer=optimizer)
    state = initial_state(config)
    reply = client_app.local_round(config, 1, 2, state)
    model = build_model(config, state, "check")
    batch = private_batch(config, 1, 2, model.num_train_timesteps)
    expected = client_update(model, batch.x0, batch.eps, batch.t, training=config.training)
    sent = reply[client_app.DELTA].to_torch_state_dict()
    names = [name for name, _ in model.unet.named_parameters()]
    error = torch.sqrt(sum((sent[n] - e).pow(2).sum() for n, e in zip(names, expected)))
    assert error / torch.sqrt(sum(e.pow(2).sum() for e in expected)) < 1e-5
    assert torch.equal(torch.tensor(reply[client_app.SECRETS]["t"]), batch.t)  # the paper's threat reveals t


REALISTIC = FederationConfig(model_config="tiny-32", clients=2, local_steps=3, client_lr=1e-2, client_optimizer="adamw",
                             weight_decay=0.01, batch_size=2, local_batch=1, noise="fresh", client_clip=1.0,
                             dropout=0.1)


@pytest.mark.parametrize("threat", ["paper", "private-eps-t"])
def test_a_realistic_clients_reply_is_what_the_server_can_replay(threat):
    """AdamW, mini-batches, fresh noise, clipping and dropout: under the paper's threat the server rebuilds every
    per-step secret from the reply and its re-simulation on the true images is the delta; under private-eps-t the
    reply carries none of them."""
    from gidm_core.attacks.matching import GradientMatcher
    from gidm_core.federation.strategy import shared_update

    config = FederationConfig(**{**REALISTIC.to_record(), "threat": threat})
    state = initial_state(config)
    reply = client_app.local_round(config, 0, 1, state)
    model = build_model(config, state, "check")
    batch = private_batch(config, 0, 1, model.num_train_timesteps)
    update = shared_update(reply, model, config)
    sent = client_update(model, batch.x0, batch.eps, batch.t, training=config.training, schedule=batch.schedule)
    assert all(torch.equal(a, b) for a, b in zip(update.gradients, sent))
    assert batch.eps.shape[0] == 3 and len(batch.schedule.dropout_seeds) == 3  # E x B fresh secrets
    if threat == "paper":
        assert torch.equal(update.schedule.order, batch.schedule.order)
        assert update.schedule.dropout_seeds == batch.schedule.dropout_seeds
        matcher = GradientMatcher(model, update)
        at_truth = matcher(batch.x0, update.eps, update.t, create_graph=False).detach()
        assert float(at_truth) < 1e-6 * float(matcher(batch.x0.flip(0), update.eps, update.t, False).detach())
    else:
        assert client_app.SECRETS not in reply and update.schedule.dropout_seeds == () and update.eps is None


def test_private_eps_and_t_stay_on_the_client():
    config = FederationConfig(model_config="tiny-32", threat="private-eps-t")
    reply = client_app.local_round(config, 0, 1, initial_state(config))
    assert client_app.SECRETS not in reply and list(reply.array_records) == [client_app.DELTA]


def test_the_attacked_and_flower_clients_share_one_update_function():
    """The Flower client sends what `client.client_update` computes, the function the attack re-simulates; the
    trainer of the bundled models runs `client.train_locally` (torch's optimiser, tested equal to it)."""
    assert client_app.client_update is client.client_update and trainer.train_locally is client.train_locally


def test_batches_are_the_clients_own_and_repeatable():
    first, again = private_batch(TINY, 0, 1, 1000), private_batch(TINY, 0, 1, 1000)
    assert torch.equal(first.x0, again.x0) and torch.equal(first.eps, again.eps)
    other_round, other_client = private_batch(TINY, 0, 2, 1000), private_batch(TINY, 1, 1, 1000)
    assert not torch.equal(first.eps, other_round.eps) and not torch.equal(first.x0, other_client.x0)


@pytest.mark.parametrize("attack_seed", [0, "client's"])
def test_the_attackers_stream_is_independent_of_the_clients(attack_seed):
    """Even an attacker seeded with the client's own seed draws other numbers than the client's eps."""
    seed = client_seed(TINY, 0, 1)
    batch = private_batch(TINY, 0, 1, 1000)
    attacker = stream(seed if attack_seed == "client's" else attack_seed, "attacker")
    guess = torch.randn(batch.eps.shape, generator=attacker)
    correlation = torch.corrcoef(torch.stack([guess.flatten(), batch.eps.flatten()]))[0, 1]
    assert abs(float(correlation)) < 0.1


@pytest.mark.parametrize("argv", [["--clients", "0"], ["--method", "magic"], ["--attack", "magic"], ["--model-config",
                                                                                                     "huge-32"],
                                  ["--local-steps", "0"], ["--clients", "60", "--batch-size", "4"],
                                  ["--client-optimizer", "rmsprop"]])
def test_bad_input_is_one_line_exit_2(argv, tmp_path, capsys):
    assert main(["federate", "--out", str(tmp_path / "f"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("fields, field", [({"local_steps": 0}, "local_steps"), ({"client_lr": -1.0}, "client_lr"),
                                           ({"client_optimizer": "rmsprop"}, "client_optimizer")])
def test_bad_local_training_names_the_federations_own_field(fields, field):
    with pytest.raises(ConfigError) as refused:
        FederationConfig(**fields)
    assert refused.value.field == field


def test_without_flower_the_command_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr.simulation", None)  # import fails as if flwr were missing
    assert main(["federate", "--out", str(tmp_path / "f")]) == 2
    assert "pip install -r requirements-scale.txt" in capsys.readouterr().err


def test_the_deployments_run_config_lists_every_federation_field_with_its_default():
    """`flwr run` refuses a --run-config key that deploy/flower/pyproject.toml does not list: a FederationConfig field
    missing there could never be set on a deployment, and a stale one would be refused by the ServerApp."""
    import tomllib
    from dataclasses import asdict
    from pathlib import Path

    deploy = Path(__file__).resolve().parent.parent / "deploy" / "flower" / "pyproject.toml"
    listed = tomllib.loads(deploy.read_text())["tool"]["flwr"]["app"]["config"]
    assert listed.pop("out")  # the ServerApp's output folder, the one key that is not the federation's
    assert listed == asdict(FederationConfig())
