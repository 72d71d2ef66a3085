"""`python -m gidm_core attack`: its outputs, and one clear line with exit code 2 for each bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "data" / "lpips" / "ex_ref.png"


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gidm_core", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})


def test_attack_writes_every_output(tmp_path):
    out = tmp_path / "run"
    done = cli("attack", "--model", "random:tiny-32", "--image", str(PHOTO), "--method", "gidm",
               "--latent-iterations", "3", "--ddim-steps", "2", "--pixel-iterations", "5", "--t", "77",
               "--client-seed", "4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "lpips", "mse", "iterations", "seconds", "t_true", "t_estimate"):
        assert key in metrics
    assert metrics["iterations"] == 8 and metrics["t_true"] == [77] == metrics["t_estimate"]
    for name in ("reconstruction.png", "original.png", "snapshot-latent.png", "snapshot-pixel.png", "loss.csv"):
        assert (out / name).is_file(), name
    rows = (out / "loss.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,phase") and len(rows) == 1 + 8
    assert "--latent-iterations 3" in metrics["command"]
    assert metrics["update"] == {"kind": "fedsgd"}


def test_attack_against_a_control_records_it(tmp_path):
    """`--control other-image` runs against another held-out face's update; metrics.json says so, and a plain run
    records "none"."""
    out = tmp_path / "run"
    done = cli("attack", "--model", "random:tiny-32", "--image", "face-05", "--method", "dlg", "--pixel-iterations",
               "2", "--t", "300", "--control", "other-image", "--clip", "1", "--sigma", "1", "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["control"] == "other-image" and "control: other-image" in metrics["threat"]
    assert metrics["dp"]["delta"] == 1e-5 and abs(metrics["dp"]["epsilon"] - 4.7285) < 1e-3  # tests/test_privacy.py
    assert "--control other-image" in metrics["command"]
    bad = cli("attack", "--image", "face-05", "--control", "random", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "invalid choice: 'random'" in bad.stderr


def test_attack_on_a_fedavg_update_records_its_local_training(tmp_path):
    out = tmp_path / "run"
    done = cli("attack", "--model", "random:tiny-32", "--image", str(PHOTO), "--method", "dlg", "--pixel-iterations",
               "2",
               "--t", "300", "--local-steps", "2", "--client-lr", "0.01", "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["update"] == {"kind": "fedavg", "steps": 2, "lr": 0.01, "optimizer": "sgd", "betas": [0.9, 0.999],
                                 "adam_eps": 1e-8, "weight_decay": 0.0, "local_batch": 0, "noise": "same",
                                 "clip": 0.0, "dropout": 0.0}
    assert len(metrics["psnr_per_image"]) == 1 and metrics["t_set_accuracy"] == 1.0


def test_attack_on_a_realistic_client_records_it(tmp_path):
    """Two local images, AdamW over mini-batches of one with fresh noise, clipping and dropout: per-image PSNR and
    the accuracy of the timestep set (E x B = 4 of them) are recorded."""
    out = tmp_path / "run"
    done = cli("attack", "--model", "random:tiny-32", "--image", str(PHOTO), "--image", "face-05", "--method", "dlg",
               "--pixel-iterations", "2", "--local-steps", "4", "--local-batch", "1",
               "--client-optimizer", "adamw", "--weight-decay", "0.01", "--noise-per-step", "fresh",
               "--client-clip", "1", "--dropout", "on", "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    update = metrics["update"]
    assert (update["optimizer"], update["local_batch"], update["noise"], update["dropout"]) == ("adamw", 1, "fresh",
                                                                                                  0.1)
    assert len(metrics["psnr_per_image"]) == 2 and len(metrics["t_true"]) == 4 and len(metrics["t_estimate"]) == 4
    assert metrics["t_set_accuracy"] == 1.0 and "t_accuracy" not in metrics  # the paper's threat reveals them


@pytest.mark.parametrize("args, message", [
    (["--image", "/nonexistent.png"], "image not found"),
    (["--image", __file__], "not a readable image"),
    (["--image", str(PHOTO), "--method", "magic"], "unknown method 'magic'"),
    (["--image", str(PHOTO), "--threat", "nope"], "unknown threat preset 'nope'"),
    (["--image", str(PHOTO), "--lr", "0"], "learning rate must be > 0"),
    (["--image", str(PHOTO), "--lr", "-1"], "learning rate must be > 0"),
    (["--image", str(PHOTO), "--ddim-steps", "0"], "DDIM steps K must be >= 1"),
    (["--image", str(PHOTO), "--size", "33"], "must be a positive multiple of 2"),
    (["--image", str(PHOTO), "--prior", "random:small-32", "--size", "30"], "must be a positive multiple of 4"),
    (["--image", str(PHOTO), "--model", "no/such-model-offline"], "no network"),
    (["--image", str(PHOTO), "--model", "nonexistent_model"], "unknown model"),
    (["--image", str(PHOTO), "--client-optimizer", "adam"], "--client-optimizer needs --local-steps"),
    (["--image", str(PHOTO), "--local-steps", "2", "--client-optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
])
def test_bad_input_gets_one_line_and_exit_2(args, message, tmp_path):
    base = ["attack", "--model", "random:tiny-32", "--pixel-iterations", "1", "--out", str(tmp_path / "x")]
    done = cli(*base, *args) if "--model" not in args else cli("attack", "--pixel-iterations", "1", *args)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_models_lists_random_architectures():
    done = cli("models")
    assert done.returncode == 0 and "random:" in done.stdout


def test_the_attackers_first_guess_at_private_eps_is_chance(tmp_path):
    """Client and attacker both at seed 0: the attacker's first eps guess must be as far from the client's eps as
    any independent draw (relative error ~sqrt(2)); the shared-stream bug made it 0."""
    out = tmp_path / "first"  # --iterations and --seed: the old spellings still work
    done = cli("attack", "--model", "random:tiny-32", "--image", str(PHOTO), "--method", "dlg", "--threat",
               "private-eps-t", "--iterations", "1", "--seed", "0", "--out", str(out))
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["client_seed"] == 0 == metrics["attack_seed"]
    assert 1.3 < metrics["eps_error"] < 1.55


@pytest.mark.parametrize("threat", [
    dict(knows_eps=False, knows_t=False, prior="random:small-32", defence=dict(clip=2.5, sigma=0.003), control="noise"),
    dict(defence=dict(keep=0.25)),
])
def test_attack_argv_reads_back_as_the_same_configs(threat):
    """The app's rerun command is `attack_argv`: parsed by the CLI it gives back exactly the configs it spelled."""
    from gidm_core.attack_command import attack_argv, configs_from_args, training_from_args
    from gidm_core.cli import build_parser
    from gidm_core.config import DefenceConfig, LocalTraining, ThreatModel, attack_config

    config = attack_config("ig", pixel_iterations=7, lr=3e-05, latent_iterations=3, latent_lr=0.125, ddim_steps=4,
                           layer_weights="normalized", tv_weight=0.5, optimizer="adam", lr_schedule="cosine",
                           restarts=2, starts=3, report_every=3, attack_seed=11)
    threat = ThreatModel(**{**threat, "defence": DefenceConfig(**threat["defence"])})
    realistic = LocalTraining(4, 1e-4, optimizer="adamw", weight_decay=0.01, local_batch=2, noise="fresh", clip=1.0,
                              dropout=0.1)
    for training in (realistic, None, LocalTraining(steps=3, lr=0.0123), LocalTraining(2, 0.5, optimizer="adam")):
        t = None if training is realistic else [400, 12]  # fresh noise draws every step's t
        argv = attack_argv(config, threat, model="random:tiny-32", images=["a.png", "face-05"], client_seed=9, size=32,
                           t=t, out="rerun", training=training)
        args = build_parser().parse_args(argv)
        assert configs_from_args(args) == (config, threat) and training_from_args(args) == training
    assert (args.image, args.client_seed, args.size, args.t, str(args.out)) == (["a.png", "face-05"], 9, 32, [400, 12],
                                                                          "rerun")
