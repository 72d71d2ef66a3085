"""Control runs on faces32 (docs/evidence.md): each method against the real update and against both controls, one
JSON line per run, scored against the real victim (and, for "other-image", also against the stand-in face).

Honest seeds (attacker = client + 1000, separate streams), eps and t known, t = 100, `--seconds` CPU seconds on one
torch thread, each method's own defaults splitting the time between phases.

    OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python scripts/control_runs.py --out docs/results/control/runs.jsonl
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import torch

from gidm_core.config import attack_config, threat_preset
from gidm_core.images import control_names, load_named_images, to_pil
from gidm_core.metrics import lpips_distance, psnr, to_unit
from gidm_core.models import load_model
from gidm_core.protocol import play


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", default=["face-05", "face-41"])
    parser.add_argument("--methods", nargs="+", default=["gidm-latent", "gidm", "dlg"])
    parser.add_argument("--controls", nargs="+", default=["none", "noise", "other-image"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--client-seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--figure", action="store_true", help="only compose control.png from the runs on disk")
    args = parser.parse_args()
    if args.figure:
        figure(args)
        print(table(args.out))
        return
    torch.set_num_threads(1)
    model = load_model("faces32", "cpu")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.is_file():  # resumable: a rerun skips the runs already written
        done = {(r["image"], r["method"], r["control"]) for r in map(json.loads, args.out.read_text().splitlines())}
    for image in args.images:
        x0 = load_named_images([image], 32)
        stand_in_name = control_names([image])
        stand_in = load_named_images(stand_in_name, 32)
        for method in args.methods:
            for control in args.controls:
                if (image, method, control) in done:
                    continue
                config = attack_config(method, seconds=args.seconds, clock="cpu",
                                       attack_seed=args.client_seed + 1000)
                threat = replace(threat_preset("paper"), control=control)
                played = play(model, x0, threat, config, client_seed=args.client_seed, t=[100],
                              control_images=stand_in if control == "other-image" else None)
                result = played.run.run_to_end()
                guess = result.reconstruction
                row = {"image": image, "method": method, "control": control, "client_seed": args.client_seed,
                       "attack_seed": config.attack_seed, "seconds": result.seconds, "iterations": result.iterations,
                       "psnr": psnr(to_unit(guess), to_unit(x0)), "lpips": lpips_distance(to_unit(guess), to_unit(x0)),
                       "stand_in": stand_in_name[0],
                       "psnr_vs_stand_in": psnr(to_unit(guess), to_unit(stand_in)),
                       "lpips_vs_stand_in": lpips_distance(to_unit(guess), to_unit(stand_in))}
                print(json.dumps(row), flush=True)
                with args.out.open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                to_pil(guess[0]).save(args.out.parent / f"{image}-{method}-{control}.png")


def table(path: Path) -> str:
    """The runs as a markdown table, one line per (image, method), the controls side by side."""
    runs = [json.loads(line) for line in path.read_text().splitlines()]
    by = {(r["image"], r["method"], r["control"]): r for r in runs}
    lines = ["| image (stand-in) | method | real update: PSNR / LPIPS | other-image: PSNR / LPIPS (vs stand-in) | "
             "noise: PSNR / LPIPS |", "|---|---|---:|---:|---:|"]
    def cell(r: dict | None, stand_in: bool = False) -> str:
        if r is None:
            return "not run"
        text = f"{r['psnr']:.1f} / {r['lpips']:.3f}"
        return text + (f" ({r['psnr_vs_stand_in']:.1f} / {r['lpips_vs_stand_in']:.3f})" if stand_in else "")

    for image, method in dict.fromkeys((r["image"], r["method"]) for r in runs):
        stand_in = next(r["stand_in"] for r in runs if r["image"] == image)
        lines.append(f"| {image} ({stand_in}) | {method} | {cell(by.get((image, method, 'none')))} | "
                     f"{cell(by.get((image, method, 'other-image')), True)} | "
                     f"{cell(by.get((image, method, 'noise')))} |")
    return "\n".join(lines)


def figure(args: argparse.Namespace) -> None:
    """control.png: per image, the victim and its stand-in, then each method's answer to the real update and to
    each control (a blank where a run is missing), upscaled 3x."""
    from PIL import Image

    folder, size, scale = args.out.parent, 32, 3
    columns = len(args.methods) * len(args.controls) + 2
    canvas = Image.new("RGB", (columns * size, len(args.images) * size), "white")
    for row, image in enumerate(args.images):
        pair = load_named_images([image, *control_names([image])], size)
        tiles = [to_pil(pair[0]), to_pil(pair[1])]
        for method in args.methods:
            for control in args.controls:
                path = folder / f"{image}-{method}-{control}.png"
                tiles.append(Image.open(path).convert("RGB") if path.is_file() else Image.new("RGB", (size, size),
                                                                                               "white"))
        for col, tile in enumerate(tiles):
            canvas.paste(tile, (col * size, row * size))
    canvas.resize((canvas.width * scale, canvas.height * scale), Image.Resampling.NEAREST).save(folder / "control.png")


if __name__ == "__main__":
    main()
