"""The bundled assets: every model loads and runs an attack step, every image is in the manifest and usable at
32, 64 and 128 px, no victim is in any model's recorded training set, and the models fit the size budget."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gidm_core.config import attack_config, threat_preset
from gidm_core.images import IMAGES_DIR, MANIFEST, load_image, victims
from gidm_core.faces import held_out_faces, load_dataset, pixel_hash
from gidm_core.models import BUNDLED_DIR, bundled_models, bundled_specs, load_model
from gidm_core.protocol import play

EXPECTED = {"faces32": 32, "faces64": 64}
MANIFEST_DATA = json.loads(MANIFEST.read_text())
ENTRIES = MANIFEST_DATA["images"]
CHECKPOINT_DIRS = sorted(p.parent.parent for p in BUNDLED_DIR.glob("*/*/unet/config.json"))


def _records() -> list[tuple[Path, dict]]:
    return [(d, json.loads((d / "training.json").read_text())) for d in CHECKPOINT_DIRS]


def test_the_bundled_models_are_there_with_early_and_final_checkpoints():
    found = bundled_models()
    for name in EXPECTED:
        assert found.get(name) == ["early", "final"], found
        card = (BUNDLED_DIR / name / "README.md").read_text()
        assert "Command" in card and "final" in card
        for label in ("early", "final"):
            with Image.open(BUNDLED_DIR / name / f"samples-{label}.png") as image:
                assert image.width >= 64
        for label in ("early", "final"):
            assert (BUNDLED_DIR / name / label / "model_index.json").is_file()
    early, final = (json.loads((BUNDLED_DIR / "faces32" / c / "training.json").read_text())["round"]
                    for c in ("early", "final"))
    assert early < final


def test_bundled_models_fit_the_size_budget():
    total = sum(p.stat().st_size for p in BUNDLED_DIR.rglob("*") if p.is_file())
    assert total < 40 * 2**20, f"assets/models is {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("spec", bundled_specs())
def test_every_bundled_model_loads_and_runs_one_attack_step(spec):
    model = load_model(spec)
    name = spec.partition("@")[0]
    if name in EXPECTED:
        assert model.image_size == EXPECTED[name]
    assert model.unet.dtype == torch.float32 and not model.unet.training
    assert model.prediction_type == "epsilon" and model.num_train_timesteps == 1000
    assert 0.5e6 < sum(p.numel() for p in model.unet.parameters()) < 2e6  # interactive on a CPU
    x0 = load_image("face-05", model.image_size)
    run = play(model, x0, threat_preset("paper"), attack_config("dlg", pixel_iterations=1, report_every=1), t=[300]).run
    events = list(run)
    assert run.result is not None and run.result.iterations == 1, events[-1].message
    assert np.isfinite(run.result.matching_loss)


@pytest.mark.skipif("faces32" not in bundled_specs(), reason="needs the bundled faces32")
def test_gidm_with_its_defaults_recovers_a_held_out_face_from_the_trained_model():
    """Where users meet the attack: the trained faces32, a face it never saw, honest seeds, the CLI's defaults
    (40 latent + 360 pixel L-BFGS evaluations). Measured here 66.5 dB; across held-out faces and client seeds
    34.5-109 dB (README, Results)."""
    model = load_model("faces32")
    x0 = load_image("face-29", 32)
    played = play(model, x0, threat_preset("paper"), attack_config("gidm", attack_seed=1), client_seed=1, t=[100])
    result = played.run.run_to_end()
    assert played.evaluator.score_result(result)["psnr"] >= 35


def test_the_manifest_covers_every_image_and_describes_it_truly():
    on_disk = {p.name for p in IMAGES_DIR.iterdir() if p.name != "manifest.json"}
    listed = [e["file"] for e in ENTRIES]
    assert sorted(listed) == sorted(on_disk) and len(set(listed)) == len(listed)
    assert {"face", "photo", "texture"} <= {e["kind"] for e in ENTRIES}
    assert sum(e["kind"] == "face" for e in ENTRIES) >= 6
    for entry in ENTRIES:
        path = IMAGES_DIR / entry["file"]
        for key in ("name", "kind", "source", "licence"):
            assert entry[key], (entry["file"], key)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], entry["file"]
        with Image.open(path) as image:
            assert (image.width, image.height) == (entry["width"], entry["height"])
            assert pixel_hash(np.asarray(image)) == entry["pixels_sha256"]
    assert [v.name for v in victims()] == [e["name"] for e in ENTRIES]


@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_victim_loads_at_each_size(size):
    for v in victims():
        x = load_image(v.name, size)
        assert x.shape == (1, 3, size, size) and x.min() >= -1 and x.max() <= 1
        assert x.std() > 0.05, v.name  # not a blank image


def test_no_victim_is_in_any_training_set():
    victim_hashes = {e["pixels_sha256"] for e in ENTRIES}
    records = _records()
    assert len(records) >= 4
    for folder, record in records:
        training = set(record["training_set"]["sha256"])
        assert len(training) == record["training_set"]["count"]
        assert not victim_hashes & training, f"a victim is in {folder}'s training set"
        # The record is the truth: recomputing the named dataset gives exactly the recorded hashes.
        assert record["training_set"]["sha256"] == load_dataset(record["training_set"]["dataset"]).hashes()


def test_the_face_victims_are_the_held_out_faces_and_not_near_copies_of_training_faces():
    held = held_out_faces()
    faces = [e for e in ENTRIES if e["kind"] == "face"]
    assert sorted(e["pixels_sha256"] for e in faces) == sorted(held.hashes())
    train = load_dataset("lfw-faces").images.astype(np.float64) / 255
    for entry in faces:
        with Image.open(IMAGES_DIR / entry["file"]) as image:
            face = np.asarray(image, dtype=np.float64) / 255
        for candidate in (face, face[:, ::-1]):  # a flipped copy would be a training image after augmentation
            rmse = np.sqrt(((train - candidate) ** 2).mean(axis=(1, 2))).min()
            assert rmse > 0.05, f"{entry['name']} is nearly a training face (RMSE {rmse:.3f})"
