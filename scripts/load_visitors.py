"""Six (or N) visitors press Run at once on a local app: when does each see its final face, how good is it, and
what place in the queue did a waiting run show? Localhost only; bounded by --visitors (at most 16).

    OMP_NUM_THREADS=1 GRADIO_ANALYTICS_ENABLED=False python scripts/load_visitors.py --visitors 6 [--plateau 0]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for `tests.conftest.serve_app`


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, default=6, choices=range(1, 17))
    parser.add_argument("--plateau", type=int, default=None, help="override the default preset's (0: off)")
    parser.add_argument("--image", default="face-05")
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    args = parser.parse_args()

    import torch
    from gradio_client import Client

    from tests.conftest import serve_app

    torch.set_num_threads(1)
    url, demo = serve_app()
    overrides = {"model": "faces32", "gallery": [args.image], "source": "Gallery", "uploads": None, "webcam": None}
    if args.plateau is not None:
        overrides["plateau"] = str(args.plateau)
    clients = [Client(url, verbose=False) for _ in range(args.visitors)]
    rows: list[dict] = [{} for _ in clients]
    start = time.perf_counter()

    def visit(i: int) -> None:
        job = clients[i].submit(api_name="/run", **overrides)
        ranks = set()
        while not job.done():
            status = job.status()
            if status.rank is not None:
                ranks.add(status.rank)
            if "first_frame_s" not in rows[i] and any("Iteration" in str(o[0]) for o in job.outputs()):
                rows[i]["first_frame_s"] = round(time.perf_counter() - start, 1)
            time.sleep(0.5)
        final = job.outputs()[-1][0]
        psnr = re.search(r"PSNR ([\d.]+) dB", final)
        iterations = re.search(r"after (\d+) iterations", final)
        rows[i].update(visitor=i + 1, finished_s=round(time.perf_counter() - start, 1),
                       psnr=float(psnr.group(1)) if psnr else None,
                       iterations=int(iterations.group(1)) if iterations else None,
                       converged="converged" in final, queue_places_seen=sorted(ranks))

    threads = [threading.Thread(target=visit, args=(i,)) for i in range(args.visitors)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    demo.close()
    for row in sorted(rows, key=lambda r: r["finished_s"]):
        print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
