"""The peer (`attacks/peer.py`): breaching attacks this project's problem through a torch-only wrapper whose loss
gradient is exactly the client's update, on the same rounds and budgets as ours (`bench --suite peer`). The tests
that run breaching itself skip, with the reason, where the optional requirements-peer.txt is not installed."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from gidm_core.attacks.peer import DenoisingResidual, breaching_attack, residual_loss
from gidm_core.bench.grid import PEER_SECONDS, build_suite
from gidm_core.cli import main
from gidm_core.client import PrivateBatch, client_update, share
from gidm_core.config import LocalTraining, ThreatModel, threat_preset
from gidm_core.errors import UsageError
from gidm_core.methods import PEER_METHODS
from gidm_core.models import random_model

HAS_BREACHING = importlib.util.find_spec("breaching") is not None
needs_breaching = pytest.mark.skipif(not HAS_BREACHING, reason="breaching is not installed (optional: "
                                     "pip install -r requirements-peer.txt)")


def _wrapper_gradient(module: torch.nn.Module, x0: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(residual_loss(module(x0), labels=torch.zeros(1)), list(module.parameters()))


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_wrappers_gradient_is_the_clients_update(kind, photo32):
    model = random_model("tiny", 32, kind)
    x0 = torch.cat([photo32, photo32.flip(-1)])
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([40, 700])
    module = DenoisingResidual(model, eps, t)
    assert [n.removeprefix("unet.") for n, _ in module.named_parameters()] == [
        n for n, _ in model.unet.named_parameters()]  # breaching pairs gradients with parameters by position
    expected = client_update(model, x0, eps, t)
    for got in (_wrapper_gradient(module, x0), _wrapper_gradient(copy.deepcopy(module), x0)):  # breaching copies it
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-8)
    other = _wrapper_gradient(DenoisingResidual(model, eps, torch.tensor([41, 700])), x0)
    assert not all(torch.allclose(a, b, rtol=1e-5, atol=1e-8) for a, b in zip(other, expected))


def test_the_peer_suite_gives_every_method_the_same_rounds_and_time(capsys):
    (row,), probes = build_suite("peer")
    assert not probes and {c.method for c in row.cells} == {"ig", "dlg", "gidm", *PEER_METHODS}
    shared = {(c.model, c.images, c.client_seeds, c.t, c.knows_eps, c.knows_t, c.defence, c.seconds, c.control)
              for c in row.cells}
    assert len(shared) == 1 and row.cells[0].seconds == PEER_SECONDS and len(row.cells[0].groups()) >= 2
    assert main(["bench", "--list", "--suite", "peer", "--out", "unused"]) == 0  # listing needs no breaching
    assert "6 cells in 1 rows" in capsys.readouterr().out


def test_without_breaching_the_peer_suite_says_in_one_line_how_to_install_it(monkeypatch, capsys, tmp_path):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "breaching" else
                        find_spec(name, *a))
    out = tmp_path / "peer"
    assert main(["bench", "--suite", "peer", "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -r requirements-peer.txt" in err
    assert not (out / "cells").exists()  # refused before any work


def test_breaching_gets_only_what_the_threat_model_reveals(tiny_model, photo32):
    private = threat_preset("private-eps-t")
    batch = PrivateBatch.draw(photo32, tiny_model.num_train_timesteps, seed=0, t=[100])
    with pytest.raises(UsageError, match="eps and t known"):
        breaching_attack(tiny_model, share(tiny_model, batch, private), "breaching-dlg", 1.0, attack_seed=1000)
    fedavg = LocalTraining(steps=2)
    update = share(tiny_model, PrivateBatch.draw(photo32, 1000, seed=0, t=[100], training=fedavg), ThreatModel(),
                   training=fedavg)
    with pytest.raises(UsageError, match="FedSGD"):
        breaching_attack(tiny_model, update, "breaching-dlg", 1.0, attack_seed=1000)


@needs_breaching
def test_breaching_poses_the_problem_whose_minimum_is_the_victim(tiny_model, photo32):
    """breaching's own gradient-matching objective, on its own copy of the wrapper and payload, is ~0 at the
    victim and far from 0 a little away from it: it is handed this project's problem, not another."""
    from breaching.attacks import prepare_attack
    from breaching.attacks.auxiliaries.objectives import Euclidean

    from gidm_core.attacks.peer import _attack_config, payloads

    batch = PrivateBatch.draw(photo32, tiny_model.num_train_timesteps, seed=0, t=[100])
    update = share(tiny_model, batch, ThreatModel())
    module = DenoisingResidual(tiny_model, update.eps, update.t).eval()
    cfg = _attack_config("invertinggradients", [])
    server, shared = payloads(module, list(update.gradients), update)
    attacker = prepare_attack(module, residual_loss, cfg, dict(device=torch.device("cpu"), dtype=torch.float))
    models, labels, _ = attacker.prepare_attack(server, shared)
    objective = Euclidean()
    objective.initialize(residual_loss, cfg.impl, None)
    at = {name: objective(models[0], shared[0]["gradients"], x.clone().requires_grad_(), labels)[0].item()
          for name, x in (("victim", batch.x0), ("near", batch.x0 + 0.05 * torch.randn_like(batch.x0)))}
    assert at["victim"] < 1e-6 * at["near"], at


@needs_breaching
def test_breaching_answers_within_its_budget(tiny_model, photo32, one_thread):
    update = share(tiny_model, PrivateBatch.draw(photo32, 1000, seed=0, t=[100]), ThreatModel())
    result = breaching_attack(tiny_model, update, "breaching-modern", 3.0, attack_seed=1000)
    assert result.reconstruction.shape == photo32.shape and torch.isfinite(result.reconstruction).all()
    assert result.evaluations > 5 and result.seconds <= 3.0 + 1.0 and 1 <= result.max_iterations < 24_000
    assert result.config["regularization"]["features"]["scale"] == 0  # the classifier-only term is off


def test_the_report_pairs_each_project_method_with_each_peer():
    from gidm_core.bench.report import _table, peer_table
    from tests.test_bench import _planted

    results = _planted([("peer row", {"seconds": 30}, {"dlg": [30, 32, 31, 33], "gidm": [40, 41, 40, 41],
                                                           "breaching-dlg": [20, 22, 21, 23],
                                                           "breaching-ig": [31, 12, 30, 13]})], group="peer")
    header = _table(results["rows"], lambda e: f"{e['psnr']['mean']:.1f}")[0]
    assert header.endswith("| breaching IG | breaching DLG |")  # the project's methods, then the peers present
    lines = peer_table(results["rows"], results["cells"])
    assert lines[2] == "| setting | method | minus breaching IG | minus breaching DLG |"
    dlg, gidm = lines[4], lines[5]
    assert dlg.startswith("| peer row | DLG | ") and "+10.0 [+10.0, +10.0], n = 4 |" in dlg  # DLG - breaching DLG
    assert gidm == "| peer row | GIDM | +19.0 [+9.5, +28.5], n = 4 | +19.0 [+18.2, +19.8], n = 4 |"
    assert peer_table(_planted([("no peers", {}, {"dlg": [30, 31]})])["rows"], {}) == []
