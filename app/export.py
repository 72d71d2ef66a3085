"""Export one finished run as a zip: PNGs, metrics JSON, the loss CSV and the exact CLI command that reruns it."""

from __future__ import annotations

import json
import shlex
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from gidm_core.attack_command import attack_argv
from gidm_core.images import grid
from gidm_core.methods import spec
from gidm_core.outputs import write_loss_csv

from .settings import configs, training
from .steer import schedule

STEERING_FILE = "steering.json"  # a steered run's schedule, which its command replays

REPO = Path(__file__).resolve().parent.parent  # where `gidm_core` lives, for the rerun command

if TYPE_CHECKING:
    from .session import RunRecord


def _victim_file(index: int) -> str:
    return f"victim-{index}.png"


def iterations_run(record: RunRecord) -> tuple[int, int]:
    """(latent, pixel) iterations the run actually did: the configured ones, or fewer when it was stopped."""
    cfg, method = record.config, spec(record.config["method"])
    latent = cfg["latent_iterations"] if method.latent_phase else 0
    pixel = cfg["pixel_iterations"] if method.pixel_phase else 0
    if record.status == "done" or record.iterations >= latent + pixel:
        return cfg["latent_iterations"], cfg["pixel_iterations"]
    done_latent = min(latent, record.iterations)
    return done_latent, min(pixel, record.iterations - done_latent)


def rerun_command(record: RunRecord) -> str:
    """The shell line that reruns the run from the unzipped export folder: this app's interpreter on
    `python -m gidm_core attack ...` with every setting spelled out (the CLI's own `attack_argv`), the iterations
    it actually ran, and PYTHONPATH pointing at this checkout. Images the CLI cannot name (uploads, webcam,
    fallback photos) are the victim PNGs inside the zip."""
    s = record.settings
    config, threat = configs(s)
    # A steered run keeps its configured counts: the schedule moves the phase ends (and a stop ends it) as it went.
    latent_iterations, pixel_iterations = ((config.latent_iterations, config.pixel_iterations) if record.steering
                                           else iterations_run(record))
    if config.method == "gidm-latent":
        latent_iterations = max(1, latent_iterations)  # the CLI refuses GIDM-latent without a latent phase
    config = config.with_overrides(latent_iterations=latent_iterations, pixel_iterations=pixel_iterations)
    argv = attack_argv(config, threat, model=s.model,
                       images=[name if bundled else _victim_file(i)
                               for i, (name, _, bundled) in enumerate(record.victims)],
                       client_seed=s.client_seed, size=record.size, t=[s.client_t] if s.client_t >= 0 else None,
                       out="rerun", training=training(s), steer=STEERING_FILE if record.steering else None)
    return f"PYTHONPATH={shlex.quote(str(REPO))} {shlex.quote(sys.executable)} -m gidm_core {shlex.join(argv)}"


def metrics_report(record: RunRecord) -> dict:
    s = record.settings
    return {
        **record.metrics, "run": record.number, "method": s.method, "model": record.model_name,
        "threat": record.threat, "status": record.status, "message": record.message,
        "matching_loss": record.matching_loss, "iterations": record.iterations, "seconds": record.seconds,
        "seconds_to_first_image": record.first_image_s, "seconds_to_30db": record.time_to_30db_s,
        "size": record.size, "batch_size": len(record.victims), "victims": [v[0] for v in record.victims],
        "t_true": record.t_true, "t_estimate": record.t_estimate, "separation": record.separation,
        "paired_by_t": record.paired_by_t, "phase_starts": record.phase_starts,
        "config": record.config, "command": record.command, "steering": record.steering,
        "metrics_trace": [{k: v for k, v in row.items() if k != "message"} for row in record.trace],
    }


def export_zip(record: RunRecord, folder: Path | None = None) -> Path:
    """Write the run's files into a zip (in a fresh temporary folder unless given) and return its path."""
    folder = Path(folder or tempfile.mkdtemp(prefix="gidm-export-"))
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f"gidm-run-{record.number}"
    staging.mkdir(exist_ok=True)
    grid(record.original).save(staging / "original.png")
    grid(record.reconstruction).save(staging / "reconstruction.png")
    for i, (_, tensor, _) in enumerate(record.victims):
        grid(tensor).save(staging / _victim_file(i))
    for i, (image, _) in enumerate(record.filmstrip):
        grid(image).save(staging / f"filmstrip-{i:02d}.png")
    (staging / "metrics.json").write_text(json.dumps(metrics_report(record), indent=2, default=str))
    write_loss_csv(record.history, staging / "loss.csv")
    if record.steering:
        (staging / STEERING_FILE).write_text(json.dumps(schedule(record), indent=1) + "\n")
    stopped = (f"# The run was {record.status} after {record.iterations} iterations: the counts below are the "
               "ones it ran.\n" if record.status != "done" and not record.steering else "")
    stopped += (f"# The run was steered while it ran: {STEERING_FILE} replays each action at the evaluation it "
                "took effect at.\n" if record.steering else "")
    (staging / "command.txt").write_text(
        "# Rerun this attack: run the line below in the unzipped folder (victim-*.png are the exact victim images\n"
        f"# at the attack's size; results go to ./rerun). It uses the GIDM Explorer checkout at {REPO}\n"
        "# and the Python that served the app; on another machine, change both paths to your own.\n"
        + stopped + record.command + "\n")
    target = folder / f"gidm-run-{record.number}.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(staging.iterdir()):
            archive.write(path, path.name)
    return target
