"""Bad input on the command line: one line on stderr and exit code 2, before any model loads, and no output folder.

Each case runs the CLI's `main` in-process (well under a second: validation fails before the attack); two cases run
the real `python -m gidm_core` to prove the process's exit code and stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gidm_core import images, models
from gidm_core.cli import main
from gidm_core.images import load_image

ROOT = Path(__file__).resolve().parent.parent
PHOTO = str(ROOT / "tests" / "data" / "lpips" / "ex_ref.png")

# (kind, extra flags, text the one line must contain). Each kind is a different way to get an input wrong.
CASES = [
    ("t at T", ["--t", "1000"], "timesteps must be in [0, 999]"),
    ("negative t", ["--t", "-1"], "--t must be >= 0"),
    ("two t for one image", ["--t", "5", "--t", "6"], "--t given 2 times for 1 image"),
    ("dlg with 0 iterations", ["--method", "dlg", "--pixel-iterations", "0"], "dlg would do nothing"),
    ("gidm-plus with 0 + 0 iterations", ["--method", "gidm-plus", "--pixel-iterations", "0", "--latent-iterations", "0"],
     "gidm-plus would do nothing"),
    ("gidm with 0 + 0 iterations", ["--method", "gidm", "--pixel-iterations", "0", "--latent-iterations", "0"],
     "gidm would do nothing"),
    ("DDIM K above T", ["--ddim-steps", "5000"], "at most the prior's 1000 training timesteps"),
    ("seed beyond 64 bits", ["--client-seed", str(2**70)], "--client-seed must be in [0, 2**63 - 1]"),
    ("seed at 2**63", ["--client-seed", str(2**63)], "--client-seed must be in [0, 2**63 - 1]"),
    ("negative seed", ["--client-seed", "-1"], "--client-seed must be in"),
    ("negative attack seed", ["--attack-seed", "-5"], "--attack-seed must be in"),
    ("cuda without a GPU", ["--device", "cuda"], "no CUDA GPU"),
    ("unknown device", ["--device", "tpu"], "choose cpu, cuda"),
    ("out is a file", ["--out", PHOTO], "is a file, not a folder"),
    ("out under a file", ["--out", PHOTO + "/run"], "is a file, not a folder"),
    ("out in /proc", ["--out", "/proc/gidm-run"], "a system folder"),
    ("out in /sys", ["--out", "/sys/gidm-run"], "a system folder"),
    ("size 0", ["--size", "0"], "image size 0 is out of bounds"),
    ("size bomb", ["--size", "100000"], "image size 100000 is out of bounds: 1 to 256 px"),
    ("size not a number", ["--size", "abc"], "invalid int value"),
    ("size not a multiple", ["--size", "33"], "must be a positive multiple of 2"),
    ("lr inf", ["--lr", "inf"], "learning rate must be a finite number"),
    ("residual share 1", ["--method", "gidm-plus", "--residual-share", "1"], "residual share must be in [0, 1)"),
    ("lr nan", ["--lr", "nan"], "learning rate must be a finite number"),
    ("lr 0", ["--lr", "0"], "learning rate must be > 0"),
    ("latent lr inf", ["--latent-lr", "inf"], "latent learning rate must be a finite number"),
    ("clip inf", ["--clip", "inf"], "clip norm must be a finite number"),
    ("sigma inf", ["--sigma", "inf"], "noise sigma must be a finite number"),
    ("sigma negative", ["--sigma", "-0.1"], "noise sigma must be >= 0"),
    ("TV weight inf", ["--tv-weight", "inf"], "TV weight must be a finite number"),
    ("keep 0", ["--keep", "0"], "top-k keep fraction must be in (0, 1]"),
    ("report every 0", ["--report-every", "0"], "report_every must be >= 1"),
    ("restarts 0", ["--restarts", "0"], "restarts must be >= 1"),
    ("unknown distance", ["--distance", "l3"], "unknown distance 'l3'"),
    ("unknown optimizer", ["--optimizer", "newton"], "unknown optimizer 'newton'"),
    ("unknown schedule", ["--lr-schedule", "step"], "unknown lr schedule 'step'"),
    ("unknown layer weighting", ["--layer-weights", "random"], "unknown layer weighting 'random'"),
    ("unknown method", ["--method", "magic"], "unknown method 'magic'"),
    ("unknown threat", ["--threat", "nope"], "unknown threat preset 'nope'"),
    ("unknown flag", ["--iterationz", "3"], "unrecognized arguments"),
    ("random model size bomb", ["--model", "random:tiny-100000"], "image size 100000 is out of bounds"),
    ("random prior size bomb", ["--prior", "random:tiny-100000"], "image size 100000 is out of bounds"),
    ("unknown random architecture", ["--model", "random:huge-32"], "unknown random architecture 'huge'"),
    ("malformed random spec", ["--model", "random:tiny-x"], "bad random model spec"),
    ("unknown model name", ["--model", "nonexistent_model"], "unknown model 'nonexistent_model'"),
    ("hub id offline", ["--model", "nobody/no-such-model"], "no network"),
    ("local folder that is not a model", ["--model", str(ROOT / "tests")], "is not a diffusers model folder"),
    ("missing image", ["--image", "/nonexistent.png"], "image not found"),
    ("image is a folder", ["--image", str(ROOT)], "image not found"),
    ("image not an image", ["--image", __file__], "not a readable image"),
    ("too many images", ["--image", PHOTO] * 65, "at most 64 images"),
    ("local steps 0", ["--local-steps", "0"], "local steps must be an integer in [1, 32]"),
    ("local steps bomb", ["--local-steps", "100000"], "local steps must be an integer in [1, 32]"),
    ("client lr 0", ["--local-steps", "2", "--client-lr", "0"], "client learning rate must be > 0"),
    ("client lr nan", ["--local-steps", "2", "--client-lr", "nan"], "client learning rate must be a finite number"),
    ("client lr without local steps", ["--client-lr", "0.01"], "--client-lr needs --local-steps"),
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("kind, flags, message", CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_gets_one_line_exit_2_and_no_folder(kind, flags, message, tmp_path, capsys, monkeypatch):
    loads: list[str] = []
    real_load = models.load_model
    monkeypatch.setattr(models, "load_model", lambda spec, *a, **k: loads.append(spec) or real_load(spec, *a, **k))
    out = tmp_path / "run"
    argv = ["attack", "--model", "random:tiny-32", "--image", PHOTO, "--pixel-iterations", "1", "--out", str(out), *flags]
    code, lines = _run(argv, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and message in lines[0], lines
    assert not out.exists(), "a refused run must leave no output folder"
    # These need the model's own T, size rule or files, or the network (refused in load_model, nothing loaded).
    after_load = ("t at T", "DDIM K above T", "size not a multiple", "local folder that is not a model",
                  "hub id offline")
    if kind not in after_load:
        assert loads == [], f"{kind}: refused only after loading {loads}"


def test_there_are_at_least_forty_kinds():
    assert len({c[0] for c in CASES}) >= 40


def test_a_run_that_ends_without_a_result_leaves_no_folder(tmp_path, capsys, monkeypatch):
    """The folder is made once a result exists: an attack that yields nothing must not leave an empty one."""
    from gidm_core import protocol

    monkeypatch.setattr(protocol.Round, "events", lambda self: iter(()))  # the attack never produces a guess
    out = tmp_path / "run"
    code, _ = _run(["attack", "--model", "random:tiny-32", "--image", PHOTO, "--method", "dlg", "--pixel-iterations",
                    "1", "--out", str(out)], capsys)
    assert code == 1 and not out.exists()


def test_out_of_memory_becomes_one_line_naming_the_size(tmp_path, capsys, monkeypatch):
    from gidm_core import protocol

    def exhausted(self):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 1099511627776 bytes")
        yield  # pragma: no cover

    monkeypatch.setattr(protocol.Round, "events", exhausted)
    code, lines = _run(["attack", "--model", "random:tiny-32", "--image", PHOTO, "--size", "64", "--pixel-iterations",
                        "1", "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "out of memory at image size 64 px" in lines[-1], lines  # after the progress bar
    assert not any("Traceback" in line for line in lines)
    assert not (tmp_path / "run").exists()


def test_an_image_between_the_limit_and_twice_it_is_refused(tmp_path, monkeypatch):
    """Pillow raises its bomb error only above twice MAX_IMAGE_PIXELS; between 1x and 2x it merely warned."""
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    path = tmp_path / "big.png"
    Image.new("L", (150, 100)).save(path)  # 15,000 pixels: over the limit, under twice it
    with pytest.raises(images.ImageLoadError, match="too large"):
        load_image(path, 32)


def test_a_16_bit_grayscale_png_keeps_its_brightness(tmp_path):
    """Pillow's convert("L") clips 16-bit values at 255: a mid-grey 16-bit PNG came out almost white."""
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    image = load_image(path, 32, channels=1)
    assert abs(float(image.mean())) < 0.02, "a 0..65535 ramp averages to mid-grey (0 in [-1, 1])"
    assert float(image.min()) < -0.9 and float(image.max()) > 0.9


def test_local_folders_are_off_unless_allowed_and_never_probed(monkeypatch):
    monkeypatch.delenv("GIDM_ALLOW_LOCAL_MODELS", raising=False)
    existing, missing = str(ROOT / "assets" / "models" / "faces32" / "final"), str(ROOT / "no" / "such" / "dir")
    messages = []
    for spec in (existing, missing):
        with pytest.raises(models.ModelLoadError) as refused:
            models.load_model(spec)
        messages.append(str(refused.value).replace(spec, "<spec>"))
    assert messages[0] == messages[1], "the answer must not reveal whether the path exists"
    assert "GIDM_ALLOW_LOCAL_MODELS" in messages[0]
    monkeypatch.setenv("GIDM_ALLOW_LOCAL_MODELS", "1")
    assert models.check_spec(existing) == "local"


def test_hub_ids_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("GIDM_HUB_MODELS", "0")
    with pytest.raises(models.ModelLoadError, match="hub ids are off"):
        models.check_spec("google/ddpm-cifar10-32")


class _Sibling:
    def __init__(self, name: str, size: int) -> None:
        self.rfilename, self.size = name, size


@pytest.mark.parametrize("files, config, message", [
    ({"unet/config.json": 1, "unet/diffusion_pytorch_model.safetensors": 10**6}, "UNet2DConditionModel",
     "not a UNet2DModel"),
    ({"config.json": 1, "diffusion_pytorch_model.bin": 10**6}, "UNet2DModel", "pickled weights are refused"),
    ({"config.json": 1, "diffusion_pytorch_model.safetensors": 10**10}, "UNet2DModel", "over this server's"),
    ({"model_index.json": 1}, "UNet2DModel", "no UNet config"),
])
def test_hub_models_are_checked_before_any_weights_download(files, config, message, tmp_path, monkeypatch):
    import huggingface_hub

    downloads: list[str] = []
    config_file = tmp_path / "config.json"
    config_file.write_text(f'{{"_class_name": "{config}"}}')
    monkeypatch.setattr(models, "_hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo, files_metadata: type("Info", (), {"siblings": [
                            _Sibling(name, size) for name, size in files.items()]})())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: str(config_file))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: downloads.append(a) or "")
    with pytest.raises(models.ModelLoadError, match=message):
        models.load_model("someone/some-model")
    assert downloads == []


@pytest.mark.parametrize("flags, message", [
    (["--t", "-1"], "--t must be >= 0"),
    (["--size", "abc"], "invalid int value"),
])
def test_the_real_process_prints_one_line_and_exits_2(flags, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "gidm_core", "attack", "--model", "random:tiny-32", "--image",
                           PHOTO, "--out", str(tmp_path / "run"), *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                       "HF_HUB_OFFLINE": "1"})
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
    assert not (tmp_path / "run").exists()


def test_a_valid_hub_unet_downloads_only_its_weights_and_configs(tmp_path, monkeypatch):
    import huggingface_hub

    files = {"unet/config.json": 1, "unet/diffusion_pytorch_model.safetensors": 10**6,
             "unet/diffusion_pytorch_model.bin": 10**6, "scheduler/scheduler_config.json": 1,
             "text_encoder/model.safetensors": 10**9}
    config_file = tmp_path / "config.json"
    config_file.write_text('{"_class_name": "UNet2DModel"}')
    asked: list = []
    monkeypatch.setattr(models, "_hub_reachable", lambda: True)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo, files_metadata: type("Info", (), {"siblings": [
                            _Sibling(name, size) for name, size in files.items()]})())
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name: str(config_file))
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo, allow_patterns: asked.append(sorted(allow_patterns)) or str(tmp_path / "none"))
    with pytest.raises(models.ModelLoadError):  # the fake download folder is empty
        models.load_model("someone/some-unet")
    assert asked == [["scheduler/scheduler_config.json", "unet/config.json",
                      "unet/diffusion_pytorch_model.safetensors"]]


def test_prior_attacked_still_names_the_attacked_model(tmp_path, capsys):
    """The pre-load spec check must not treat the threat model's own word "attacked" as a model spec."""
    out = tmp_path / "run"
    code, lines = _run(["attack", "--model", "random:tiny-32", "--image", PHOTO, "--prior", "attacked", "--method",
                        "dlg", "--pixel-iterations", "1", "--out", str(out)], capsys)
    assert code == 0 and (out / "metrics.json").is_file(), lines


@pytest.mark.parametrize("overrides, field", [
    (dict(lr=-1.0), "lr"), (dict(latent_lr=float("nan")), "latent_lr"), (dict(ddim_steps=0), "ddim_steps"),
    (dict(distance="manhattan"), "distance"), (dict(attack_seed=-3), "attack_seed"), (dict(pixel_iterations=0), "pixel_iterations"),
])
def test_a_config_error_names_its_field(overrides, field):
    """A front end points at the control from `err.field`, never by parsing the message."""
    from gidm_core.config import ConfigError, attack_config

    with pytest.raises(ConfigError) as refused:
        attack_config("dlg", **overrides)
    assert refused.value.field == field


def test_a_defence_error_names_its_field():
    from gidm_core.config import ConfigError, DefenceConfig

    with pytest.raises(ConfigError) as refused:
        DefenceConfig(keep=0.0)
    assert refused.value.field == "keep"
