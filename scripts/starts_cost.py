"""What N starts cost against one, in CPU seconds on one torch thread (docs/starts.md).

Both runs plan the same iterations per start, so the ratio is what successive halving charges for its extra starts
(1.6 planned for four). Also times one matching evaluation of N candidates scored together (`batched_matching`,
torch.func.vmap) against N separate ones, the case for and against batching the starts.

    .venv/bin/python scripts/starts_cost.py --starts 4 --latent-iterations 60 --pixel-iterations 140
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gidm_core.attacks.pixel import matcher_for
from gidm_core.attacks.starts import batched_matching
from gidm_core.config import attack_config, threat_preset
from gidm_core.images import load_named_images
from gidm_core.models import load_model
from gidm_core.protocol import play


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="faces32")
    parser.add_argument("--image", default="face-05")
    parser.add_argument("--method", default="gidm-plus")
    parser.add_argument("--t", type=int, default=100)
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--latent-iterations", type=int, default=60)
    parser.add_argument("--pixel-iterations", type=int, default=140)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    x0 = load_named_images([args.image], model.image_size, model.channels)
    record: dict[str, float] = {}
    for starts in (1, args.starts):
        config = attack_config(args.method, starts=starts, latent_iterations=args.latent_iterations,
                               pixel_iterations=args.pixel_iterations, attack_seed=1)
        played = play(model, x0, threat_preset("private-eps-t"), config, client_seed=1, t=[args.t])
        began = time.process_time()
        result = played.run.run_to_end()
        record[f"cpu_s_{starts}"] = time.process_time() - began
        record[f"evaluations_{starts}"] = result.iterations
    record["ratio"] = record[f"cpu_s_{args.starts}"] / record["cpu_s_1"]
    # One evaluation of N candidates: together (vectorised) against one by one, with the graph kept as in an attack.
    played = play(model, x0, threat_preset("private-eps-t"), attack_config(args.method), client_seed=1, t=[args.t])
    ctx = played.run.context
    matcher, t = matcher_for(ctx), played.batch.t
    images = torch.randn((args.starts, *x0.shape)).requires_grad_(True)
    eps = torch.randn((args.starts, *x0.shape)).requires_grad_(True)
    for name, evaluate in (("separate", lambda: sum(matcher(x, e, t) for x, e in zip(images, eps))),
                           ("batched", lambda: batched_matching(matcher, images, eps, t, create_graph=True).sum())):
        began = time.process_time()
        for _ in range(3):
            torch.autograd.grad(evaluate(), [images, eps])
        record[f"evaluation_{name}_cpu_s"] = (time.process_time() - began) / 3
    print(json.dumps(record))


if __name__ == "__main__":
    main()
