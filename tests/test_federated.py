"""The FedAvg trainer: it learns, it uses the client's own loss, it checkpoints in the diffusers layout and resumes
exactly, and its CLI reports progress. Tiny configs (16 px, 0.16 M parameters) keep the file to seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import DDPMPipeline, UNet2DModel

from gidm_core import client, diffusion
from gidm_core.training import trainer as trainer_module
from gidm_core.cli import main
from gidm_core.faces import HELD_OUT_FACES, Augmenter, held_out_faces, load_dataset, pixel_hash
from gidm_core.training.trainer import FedAvgTrainer, TrainConfig, shards
from gidm_core.models import load_model

TINY = dict(arch="tiny", size=16, clients=3, local_steps=4, batch_size=8, lr=3e-3, rounds=8, checkpoint_every=4)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_lowers_the_diffusion_loss():
    trainer = FedAvgTrainer(TrainConfig(**TINY))
    before = trainer.eval_loss(ema=False)
    entries = list(trainer.run())
    after = trainer.eval_loss(ema=False)
    assert [e["round"] for e in entries] == list(range(1, 9))
    assert after < 0.6 * before, (before, after)
    assert entries[-1]["loss"] < entries[0]["loss"]


def test_clients_train_with_the_attacked_clients_loss(monkeypatch):
    # One code path: the trainer, the attacked client and the attacks share diffusion.diffusion_loss.
    assert trainer_module.diffusion_loss is diffusion.diffusion_loss is client.diffusion_loss
    calls = []

    def counting(model, x0, eps, t, weights=None):
        calls.append(x0.shape)
        return diffusion.diffusion_loss(model, x0, eps, t, weights)

    # The trainer's clients run client.train_locally, the loop the Flower ClientApp runs too.
    monkeypatch.setattr(client, "diffusion_loss", counting)
    trainer = FedAvgTrainer(TrainConfig(**{**TINY, "rounds": 2}))
    list(trainer.run())
    assert len(calls) == 2 * 3 * 4 and calls[0] == (8, 3, 16, 16)


def test_fedavg_averages_the_clients_weights(monkeypatch):
    trainer = FedAvgTrainer(TrainConfig(**{**TINY, "rounds": 1}))
    returned = []
    original = trainer.local_update

    def spy(c):
        weights, loss = original(c)
        returned.append((len(trainer.shards[c]), weights))
        return weights, loss

    monkeypatch.setattr(trainer, "local_update", spy)
    trainer.step_round()
    total = sum(n for n, _ in returned)
    key = "conv_in.weight"
    expected = sum(n / total * w[key] for n, w in returned)
    assert torch.allclose(trainer.global_state[key], expected, atol=1e-6)
    assert not torch.equal(returned[0][1][key], returned[1][1][key])  # clients really differ


def test_client_sampling_is_seeded_and_partial():
    config = TrainConfig(**{**TINY, "clients": 4, "clients_per_round": 2, "rounds": 3, "local_steps": 1})
    first = [e["clients"] for e in FedAvgTrainer(config).run()]
    again = [e["clients"] for e in FedAvgTrainer(config).run()]
    assert first == again and all(len(c) == 2 for c in first)


def test_shards_are_disjoint_and_cover_the_data():
    parts = shards(92, 4, seed=0)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(92)) and [len(p) for p in parts] == [23, 23, 23, 23]
    assert not np.array_equal(np.concatenate(shards(92, 4, seed=1)), joined)


def test_checkpoint_is_a_diffusers_pipeline_and_resume_is_exact(tmp_path):
    config = TrainConfig(**{**TINY, "rounds": 4, "checkpoint_every": 2})
    straight = FedAvgTrainer(config, tmp_path / "a")
    list(straight.run())
    folder = tmp_path / "a" / "round-0002"
    assert (folder / "model_index.json").is_file() and (folder / "scheduler" / "scheduler_config.json").is_file()
    unet = UNet2DModel.from_pretrained(folder / "unet", use_safetensors=True)
    assert unet.config.sample_size == 16
    pipe = DDPMPipeline.from_pretrained(folder)
    assert pipe.scheduler.config.num_train_timesteps == 1000 and pipe.scheduler.config.prediction_type == "epsilon"
    model = load_model(str(folder), allow_local=True)  # local folders are opt-in outside the CLI
    assert model.unet.dtype == torch.float32 and not model.unet.training

    resumed = FedAvgTrainer.resume(folder, tmp_path / "b")
    assert resumed.round == 2
    list(resumed.run())
    assert resumed.round == 4
    assert _same_state(resumed.global_state, straight.global_state)
    assert _same_state(resumed.ema_state, straight.ema_state)

    record = json.loads((tmp_path / "a" / "round-0004" / "training.json").read_text())
    assert record["round"] == 4 and len(record["history"]) == 4
    assert record["training_set"]["sha256"] == load_dataset("lfw-faces").hashes()


def test_training_set_excludes_the_held_out_faces():
    train, held = load_dataset("lfw-faces"), held_out_faces()
    assert len(train) + len(held) == 100 and held.indices == HELD_OUT_FACES
    assert not set(train.hashes()) & set(held.hashes())
    assert len(set(train.hashes())) == len(train)  # no duplicate images hide a victim under two indices


def test_pixel_hash_is_the_arrays_bytes():
    a = np.zeros((2, 2), np.uint8)
    b = a.copy()
    b[1, 1] = 1
    assert pixel_hash(a) != pixel_hash(b) and pixel_hash(a) == pixel_hash(a.copy())
    with pytest.raises(ValueError):
        pixel_hash(a.astype(np.float32))


def test_augmenter_is_seeded_and_keeps_range():
    x = load_dataset("lfw-faces").tensors(16)[:4]
    a = Augmenter()(x, torch.Generator().manual_seed(0))
    b = Augmenter()(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert a.min() >= -1 and a.max() <= 1


def test_train_cli_shows_progress_resumes_and_rejects_bad_input(tmp_path, capsys):
    args = ["train", "--out", str(tmp_path / "run"), "--arch", "tiny", "--size", "16", "--clients", "2",
            "--rounds", "2", "--local-steps", "2", "--checkpoint-every", "1", "--seed", "3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "round 1/2  loss" in out and "s/round" in out and "done: 2 rounds" in out
    assert main(["train", "--out", str(tmp_path / "more"), "--resume", str(tmp_path / "run" / "round-0001"),
                 "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    assert "resuming after round 1" in out and "round 2/3" in out and "round 3/3" in out
    assert (tmp_path / "more" / "round-0003" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert main(["train", "--out", str(tmp_path / "same"), "--resume", str(tmp_path / "run" / "round-0001")]) == 0
    assert "done: 2 rounds" in capsys.readouterr().out  # without --rounds, the checkpoint's own total
    assert main(["train", "--out", str(tmp_path / "bad"), "--arch", "nope"]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "bad"), "--size", "30"]) == 2


class _Payload:
    """Unpickling this object would run `touch` on a marker file: what a crafted training_state.pt could do."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_resume_never_executes_a_pickled_payload(tmp_path):
    folder = tmp_path / "round-0001"
    folder.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"round": 1, "config": _Payload(str(marker))}, folder / trainer_module.STATE_FILE)
    with pytest.raises(Exception):
        FedAvgTrainer.resume(folder, tmp_path / "out")
    assert not marker.exists()
