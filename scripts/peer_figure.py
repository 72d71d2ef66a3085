"""The peer suite's answers as pictures (docs/peer.md): for each face, the victim, then each method's reconstruction
on the suite's own round (its cells' scenarios: same secrets, update, attacker seed and CPU budget), upscaled 3x.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv-peer/bin/python scripts/peer_figure.py --images face-05 face-29 \
        --out docs/results/peer/figure

Needs breaching (requirements-peer.txt). One JSON line per run goes to OUT/runs.jsonl, each answer to a PNG beside
it (a rerun skips those already there), and the grid to OUT/peer.png.
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from gidm_core.attacks.peer import breaching_attack
from gidm_core.bench.cells import cell_scenario
from gidm_core.bench.grid import build_suite
from gidm_core.evaluation import Evaluator
from gidm_core.images import load_named_images, to_pil
from gidm_core.methods import PEER_METHODS
from gidm_core.models import load_model
from gidm_core.protocol import play_scenario, share_scenario


def answer(cell, image: str, load) -> tuple[torch.Tensor, Evaluator, int]:
    """(reconstruction, evaluator, evaluations) of `cell`'s method on its round for `image`, client seed 0."""
    if cell.method in PEER_METHODS:
        scenario = cell_scenario(replace(cell, method="dlg"), (image,), 0, "cpu")
        shared = share_scenario(scenario, load)
        result = breaching_attack(shared.model, shared.update, cell.method, cell.seconds,
                                  scenario.attack.attack_seed)
        return result.reconstruction, Evaluator(shared.batch), result.evaluations
    played = play_scenario(cell_scenario(cell, (image,), 0, "cpu"), load)
    for _ in played.run:
        pass
    return played.run.result.reconstruction, played.evaluator, played.run.result.iterations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["face-05", "face-29"])
    parser.add_argument("--out", type=Path, default=Path("docs/results/peer/figure"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    (row,), _ = build_suite("peer")
    load = functools.cache(lambda spec: load_model(spec, "cpu"))
    for image in args.images:
        for cell in row.cells:
            path = args.out / f"{image}-{cell.method}.png"
            if path.is_file():
                continue
            guess, evaluator, evaluations = answer(cell, image, load)
            scores = evaluator.metrics(guess)
            record = {"image": image, "method": cell.method, "seconds": cell.seconds, "evaluations": evaluations,
                      **{k: scores[k] for k in ("psnr", "ssim", "lpips")}}
            print(json.dumps(record), flush=True)
            with (args.out / "runs.jsonl").open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            to_pil(guess[0]).save(path)
    size, scale = 32, 3
    canvas = Image.new("RGB", ((len(row.cells) + 1) * size, len(args.images) * size), "white")
    for r, image in enumerate(args.images):
        tiles = [to_pil(load_named_images([image], size)[0])]
        tiles += [Image.open(args.out / f"{image}-{c.method}.png").convert("RGB") for c in row.cells]
        for c, tile in enumerate(tiles):
            canvas.paste(tile, (c * size, r * size))
    canvas.resize((canvas.width * scale, canvas.height * scale), Image.Resampling.NEAREST).save(args.out / "peer.png")


if __name__ == "__main__":
    main()
