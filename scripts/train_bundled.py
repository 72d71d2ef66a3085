"""Build the bundled assets from a FedAvg run: victims (assets/images/) and model folders (assets/models/NAME/).

    python scripts/train_bundled.py victims
    python scripts/train_bundled.py export NAME RUN_DIR --early ROUND --final ROUND --command "python -m ..."

`export` copies two checkpoints of a `python -m gidm_core train` run (diffusers files only, no optimiser state),
draws a seeded sample grid from each, and writes the model card. scripts/build_assets.sh runs the whole chain.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gidm_core.images import grid  # noqa: E402
from gidm_core.faces import HELD_OUT_FACES, held_out_faces, pixel_hash  # noqa: E402
from gidm_core.training.trainer import RECORD_FILE, sample  # noqa: E402
from gidm_core.models import load_model  # noqa: E402

IMAGES = ROOT / "assets" / "images"
MODELS = ROOT / "assets" / "models"
LFW_LICENCE = ("no explicit licence: Labeled Faces in the Wild are news photographs collected from the web for "
               "research (Huang et al. 2007); these 25x25 crops ship inside scikit-image (lfw_subset)")
SAMPLE_SEED, SAMPLE_COUNT, SAMPLE_STEPS = 0, 16, 20


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _centre_square(array: np.ndarray, top: int, left: int, side: int, size: int) -> Image.Image:
    crop = Image.fromarray(array[top:top + side, left:left + side])
    return crop if side == size else crop.resize((size, size), Image.Resampling.LANCZOS)


def build_victims() -> None:
    from skimage import data as skdata

    IMAGES.mkdir(parents=True, exist_ok=True)
    entries = []
    faces = held_out_faces()
    for index, array in zip(faces.indices, faces.images):
        name = f"face-{index:02d}"
        Image.fromarray(array).save(IMAGES / f"{name}.png")
        entries.append({"name": name, "file": f"{name}.png", "kind": "face",
                        "source": f"scikit-image data.lfw_subset()[{index}] (Labeled Faces in the Wild), 25x25 "
                                  "grayscale, stored at native size; held out of every bundled model's training set",
                        "licence": LFW_LICENCE, "dataset_index": index})
    others = [
        ("cat", "photo", _centre_square(skdata.chelsea(), 0, 60, 300, 128),
         "scikit-image data.chelsea(), centre square 300x300 at (0, 60), resized to 128 (Lanczos)",
         "CC0 (Stefan van der Walt)"),
        ("astronaut", "photo", _centre_square(skdata.astronaut(), 20, 130, 240, 128),
         "scikit-image data.astronaut() (NASA, Eileen Collins), square 240x240 at (20, 130), resized to 128",
         "public domain (NASA)"),
        ("brick", "texture", _centre_square(skdata.brick(), 0, 0, 512, 128),
         "scikit-image data.brick(), the whole 512x512 image resized to 128 (Lanczos)",
         "CC0 (cc0textures.com Bricks25)"),
    ]
    for name, kind, image, source, licence in others:
        image.save(IMAGES / f"{name}.png")
        entries.append({"name": name, "file": f"{name}.png", "kind": kind, "source": source, "licence": licence})
    for entry in entries:
        path = IMAGES / entry["file"]
        with Image.open(path) as image:
            entry["width"], entry["height"] = image.size
            entry["pixels_sha256"] = pixel_hash(np.asarray(image))
        entry["sha256"] = _file_sha256(path)
    manifest = {
        "about": "Victim images, held out of every bundled model's training set (tests/test_assets.py checks "
                 "pixels_sha256 against each model's training.json). Faces are stored at their native 25x25 and, "
                 "like the training faces, are upscaled by gidm_core.images.load_image (centre crop + Lanczos) to "
                 "32, 64 or 128 px. pixels_sha256: sha256 of the decoded uint8 pixel array (C order); "
                 "sha256: of the file.",
        "held_out_lfw_indices": list(HELD_OUT_FACES),
        "images": entries,
    }
    (IMAGES / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(entries)} victims -> {IMAGES}")


def export(name: str, run: Path, early: int, final: int, command: str, note: str) -> None:
    target = MODELS / name
    target.mkdir(parents=True, exist_ok=True)
    records = {}
    for label, round_ in (("early", early), ("final", final)):
        source = run / f"round-{round_:04d}"
        dest = target / label
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir()
        for item in ("model_index.json", "unet", "scheduler", RECORD_FILE):
            src = source / item
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / item)
        records[label] = json.loads((dest / RECORD_FILE).read_text())
        model = load_model(f"{name}@{label}")
        torch.manual_seed(0)
        images = sample(model, SAMPLE_COUNT, SAMPLE_STEPS, SAMPLE_SEED)
        grid(images, columns=8).resize((8 * 64, 2 * 64), Image.Resampling.NEAREST).save(
            target / f"samples-{label}.png")
        print(f"{name}@{label}: round {round_} -> {dest}")
    (target / "README.md").write_text(_card(name, records, command, note))


def _card(name: str, records: dict, command: str, note: str) -> str:
    final, early = records["final"], records["early"]
    config = final["config"]
    params = None
    unet_cfg = json.loads((MODELS / name / "final" / "unet" / "config.json").read_text())
    weights = MODELS / name / "final" / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(weights).values())
    per_round = config["clients_per_round"] or config["clients"]
    history = final["history"]

    def loss_at(round_):
        window = [h["loss"] for h in history if round_ - 5 < h["round"] <= round_]
        return sum(window) / len(window)

    ts = final["training_set"]
    return f"""# {name}: a FedAvg-trained DDPM on {ts['count']} LFW faces at {config['size']} px

A small diffusers `UNet2DModel` ({params / 1e6:.2f} M parameters, `block_out_channels`
{tuple(unet_cfg['block_out_channels'])}, no attention) with a `DDPMScheduler` (1000 steps, linear betas,
epsilon prediction, `clip_sample=True`), trained by `gidm_core.training.trainer` (FedAvg over simulated clients) for the
GIDM Explorer demo. Attack it with `python -m gidm_core attack --model {name} ...` (or `{name}@early`).

| checkpoint | round | client steps, all clients | client loss (mean of last 5 rounds) | train wall time |
|---|---:|---:|---:|---:|
| `{name}@early` (`early/`) | {early['round']} | {early['round'] * per_round * config['local_steps']} | {loss_at(early['round']):.4f} | {early['train_seconds']:.0f} s |
| `{name}` (`final/`) | {final['round']} | {final['round'] * per_round * config['local_steps']} | {loss_at(final['round']):.4f} | {final['train_seconds']:.0f} s |

Both folders are diffusers pipelines (`model_index.json`, `unet/`, `scheduler/`); `unet/` holds the EMA (decay
{config['ema_decay']} per round) of the FedAvg global model. `training.json` beside them has the full config, the
per-round loss and the training set's hashes.

## Training
- Command (one CPU thread, on a shared 2-core machine, so the wall time is pessimistic):

      {command}

{note}
- Federation: {config['clients']} clients, each with a disjoint IID shard of the data (shard sizes
  {final['client_shard_sizes']}), {per_round} clients sampled per round, {config['local_steps']} local
  {config['optimizer']} steps of batch {config['batch_size']} at learning rate {config['lr']} (gradient-norm clip
  {config['grad_clip']}; each client keeps its optimiser state across rounds), weighted averaging of the returned
  weights. Seed {config['seed']} fixes the init, the shards, the client sampling, every batch, eps and t.
- The clients' local loss is `gidm_core.diffusion.diffusion_loss`, the same function the attacked client runs.

## Data
- {ts['source']}: the {ts['count']} faces whose index is not in `HELD_OUT_FACES`
  ({', '.join(map(str, sorted(set(range(100)) - set(ts['indices']))))}); those held-out faces are the bundled
  victims in `assets/images/`.
- 25x25 grayscale, replicated to RGB, upscaled to {config['size']} px with Lanczos (`gidm_core.images.to_tensor`, the
  victims' own path), augmented on the fly {'(random horizontal flip, zoom up to 12%, shifts up to 6%)' if config['augment'] else '(none)'}.
- Identity of each training image: sha256 of its uint8 25x25 pixel array, listed in `*/training.json`
  (`training_set.sha256`); `tests/test_assets.py` checks that no victim is among them.

## Samples
{SAMPLE_COUNT} samples per checkpoint, deterministic DDIM ({SAMPLE_STEPS} steps, eta 0), seed {SAMPLE_SEED},
shown enlarged:

early (round {early['round']}): ![early samples](samples-early.png)

final (round {final['round']}): ![final samples](samples-final.png)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("victims")
    exp = commands.add_parser("export")
    exp.add_argument("name")
    exp.add_argument("run", type=Path)
    exp.add_argument("--early", type=int, required=True)
    exp.add_argument("--final", type=int, required=True)
    exp.add_argument("--command", dest="train_command", required=True)
    exp.add_argument("--note", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.command == "victims":
        build_victims()
    else:
        export(args.name, args.run, args.early, args.final, args.train_command, args.note)


if __name__ == "__main__":
    main()
