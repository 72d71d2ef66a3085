"""Peak memory of one matching evaluation of a batch, by model, image size and batch size: what sets the app's batch
bound (app/settings.py, `batch_limit`). Each cell runs in a fresh process (one torch thread) that shares a round and
runs DLG for two evaluations (separation on, distinct t); its peak resident memory is read from the kernel, and a
cell past --cap-gb is killed and reported as over the cap, so the probe never starves the machine.

    .venv/bin/python scripts/batch_memory.py                      # the default grid below
    .venv/bin/python scripts/batch_memory.py --cells faces64:128:16 --cap-gb 12
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CELLS = ("faces32:32:1", "faces32:32:8", "faces32:32:16", "faces64:64:1", "faces64:64:8", "faces64:64:16",
         "faces64:128:1", "faces64:128:8", "faces64:128:16")
POOL = ["face-05", "face-17", "face-29", "face-41", "face-53", "face-65", "face-77", "face-89", "astronaut", "brick",
        "cat", "skimage:coffee", "skimage:chelsea", "skimage:rocket", "skimage:camera", "skimage:immunohistochemistry"]


def cell(model: str, size: int, batch: int) -> dict:
    """Run inside the child: the round, then two evaluations; the process's peak RSS before and after them."""
    import resource

    import torch

    from gidm_core.config import ThreatModel, attack_config
    from gidm_core.models import load_model
    from gidm_core.protocol import share_scenario
    from gidm_core.scenario import Scenario

    torch.set_num_threads(1)
    config = attack_config("dlg", pixel_iterations=2)
    scenario = Scenario(model=model, images=tuple(POOL[:batch]), size=size, client_seed=0,
                        threat=ThreatModel(knows_eps=True, knows_t=True), attack=config)
    shared = share_scenario(scenario, load_model)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    started = time.process_time()
    round_ = shared.attack(config)
    messages = [e.message for e in round_.run if e.phase == "separation"]
    return {"model": model, "size": size, "batch": batch, "peak_gb_before_attack": round(before, 2),
            "peak_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "cpu_s": round(time.process_time() - started, 1), "separation": messages[:1]}


def measure(spec: str, cap_gb: float) -> dict:
    """One cell in a child process, killed when its resident memory passes `cap_gb`."""
    model, size, batch = spec.rsplit(":", 2)
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from scripts.batch_memory import cell; "
            f"print(json.dumps(cell({model!r}, {int(size)}, {int(batch)})))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=ROOT)
    while child.poll() is None:
        try:
            rss_kb = int(next(line for line in Path(f"/proc/{child.pid}/status").read_text().splitlines()
                              if line.startswith("VmRSS")).split()[1])
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            rss_kb = 0
        if rss_kb / 2**20 > cap_gb:
            child.kill()
            child.wait()
            return {"cell": spec, "peak_gb": f"> {cap_gb} (killed)"}
        time.sleep(0.2)
    out, err = child.communicate()
    if child.returncode != 0:
        return {"cell": spec, "error": err.strip().splitlines()[-1] if err.strip() else child.returncode}
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", nargs="*", default=list(CELLS), help="model:size:batch")
    parser.add_argument("--cap-gb", type=float, default=8.0)
    args = parser.parse_args()
    for spec in args.cells:
        print(json.dumps(measure(spec, args.cap_gb)), flush=True)


if __name__ == "__main__":
    main()
