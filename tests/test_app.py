"""The Gradio app, driven in-process through gradio_client: streaming, stopping, bad input, and two sessions at once.

Runs are tiny (random:tiny-32, a few dozen iterations) so the whole file takes well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from app import runner  # noqa: E402
from app.session import Session  # noqa: E402
from app.victims import gallery_items  # noqa: E402

TINY = dict(model="random:tiny-32", uploads=None, webcam=None, pixel_iterations=30, latent_iterations=2, ddim_steps=1,
            report_every=3, batch_size=1, source="Gallery", plateau=0)
STATUS, ORIGINAL, RECON, DIFF, LOSS, METRICS, TPLOT, FILM, TABLE, PICK_A, PICK_B, EXPORT = range(12)


def _client(url: str) -> Client:
    """A client that downloads into a folder of its own: the in-process server serves its files from gradio's
    default temp folder, and a download to the same path truncates the file being served."""
    return Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="gidm-client-"))


def _gallery(i: int = 0) -> list[str]:
    return [gallery_items()[i].name]


def _digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_exported_command(folder: Path) -> str:
    """Run an unzipped export's `command.txt` from its folder, as a user would (no PYTHONPATH), and return it."""
    command = (folder / "command.txt").read_text().strip().splitlines()[-1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return command


def _stream(client: Client, **overrides) -> list[tuple]:
    job = client.submit(api_name="/run", **{**TINY, "gallery": _gallery(), **overrides})
    return list(job)


def test_streams_images_and_metrics_that_change(app_url):
    client = _client(app_url)
    outputs = _stream(client)
    assert len(outputs) >= 4, [o[STATUS] for o in outputs]
    live = [o for o in outputs if isinstance(o[RECON], str)]
    assert len(live) >= 3, "expected several live frames with a reconstruction"
    recon_digests = {_digest(o[RECON]) for o in live}
    assert len(recon_digests) >= 3, "the reconstruction should change while the run goes"
    originals = [o[ORIGINAL] for o in outputs if isinstance(o[ORIGINAL], str)]
    assert len(originals) == 1, "the original is sent once per run (it does not change)"
    psnrs = [float(o[STATUS].split("PSNR ")[1].split(" dB")[0]) for o in live if "PSNR " in o[STATUS]]
    assert len(set(psnrs)) >= 2, f"metrics should change: {psnrs}"
    assert all(isinstance(o[LOSS], dict) and o[LOSS].get("type") == "plotly" for o in live)
    assert '"type":"log"' in live[-1][LOSS]["plot"].replace(" ", ""), "the loss axis is log scale"
    final = outputs[-1]
    assert final[STATUS].startswith("**Finished**"), final[STATUS]
    assert isinstance(final[FILM], list) and len(final[FILM]) >= 3
    assert len(final[TABLE]["data"]) == 1
    with zipfile.ZipFile(final[EXPORT]) as archive:
        names = set(archive.namelist())
        assert {"original.png", "reconstruction.png", "metrics.json", "loss.csv", "command.txt"} <= names
        command = archive.read("command.txt").decode()
    assert _gallery()[0] in final[PICK_B]["value"], "run labels name the victim image"
    assert "-m gidm_core attack --model random:tiny-32" in command
    assert "--pixel-iterations 30" in command and "--latent-iterations 2" in command


def test_several_starts_say_in_the_status_line_which_one_leads(app_url):
    """The Attack tab's starts reach the attack, and the live status line names the leading start and its loss;
    the export reruns them too."""
    outputs = _stream(_client(app_url), starts=2)
    live = [o[STATUS] for o in outputs[:-1]]
    assert any(re.search(r"start [12] of 2 leads, matching [0-9.e+-]+", s) for s in live), live
    assert outputs[-1][STATUS].startswith("**Finished**"), outputs[-1][STATUS]
    with zipfile.ZipFile(outputs[-1][EXPORT]) as archive:
        assert "--starts 2" in archive.read("command.txt").decode()


def test_a_realistic_client_is_attacked_and_its_training_exported(app_url, tmp_path):
    """The Threat tab's client training reaches the attack (a FedAvg delta after 2 AdamW steps with fresh noise)
    and the rerun command, which spells it out."""
    outputs = _stream(_client(app_url), method="dlg", pixel_iterations=4, client_update="fedavg", local_steps=2,
                      client_optimizer="adamw", weight_decay=0.01, noise_per_step="fresh")
    assert outputs[-1][STATUS].startswith("**Finished**"), outputs[-1][STATUS]
    with zipfile.ZipFile(outputs[-1][EXPORT]) as archive:
        command = archive.read("command.txt").decode()
    for flag in ("--local-steps 2", "--client-optimizer adamw", "--weight-decay 0.01", "--noise-per-step fresh"):
        assert flag in command, command


def test_rerun_command_runs_as_written_from_the_unzipped_folder(app_url, tmp_path):
    """command.txt's last line, run by a shell in the unzipped export (not the repository), reruns the attack."""
    client = _client(app_url)
    outputs = _stream(client, defence="top-k pruning", keep=0.5, pixel_iterations=3, method="dlg", client_seed=3,
                      attack_seed=4)
    with zipfile.ZipFile(outputs[-1][EXPORT]) as archive:
        archive.extractall(tmp_path)
    command = run_exported_command(tmp_path)
    assert "--client-seed 3 --attack-seed 4" in command and "--keep 0.5" in command
    metrics = (tmp_path / "rerun" / "metrics.json").read_text()
    assert '"iterations": 3' in metrics and '"attack_seed": 4' in metrics



def test_stop_ends_the_run_and_keeps_the_best(app_url):
    client = _client(app_url)
    job = client.submit(api_name="/run", **{**TINY, "gallery": _gallery(), "pixel_iterations": 5000})
    deadline = time.time() + 60
    while time.time() < deadline:
        if any(isinstance(o[RECON], str) for o in job.outputs()):
            break
        time.sleep(0.2)
    else:
        pytest.fail("no reconstruction arrived within 60 s")
    pressed = time.time()
    client.predict(api_name="/stop")
    outputs = job.result(timeout=30) and job.outputs()
    assert time.time() - pressed < 15
    final = outputs[-1]
    assert final[STATUS].startswith("**Stopped**"), final[STATUS]
    assert isinstance(final[RECON], str) and isinstance(final[EXPORT], str)
    ran = int(re.search(r"after (\d+) iterations", final[STATUS]).group(1))
    with zipfile.ZipFile(final[EXPORT]) as archive:
        command = archive.read("command.txt").decode()
    assert f"stopped after {ran} iterations" in command, command
    latent = min(TINY["latent_iterations"], ran)  # the command reruns exactly the iterations the run did
    assert f"--pixel-iterations {ran - latent} " in command and f"--latent-iterations {latent} " in command, command


def test_bad_input_gets_a_message_and_the_app_keeps_serving(app_url, tmp_path):
    client = _client(app_url)
    for bad, where, why in ((dict(optimizer="adam", lr="2,5"), "Attack tab, Pixel learning rate", "has a comma"),
                            (dict(client_seed="-1"), "Threat tab, Client's secret seed", "must be between 0"),
                            (dict(batch_size="0"), "Victim tab, Batch size", "must be between 1 and 16, got 0")):
        outputs = _stream(client, **bad)  # refused by the app's own validation, in the status line
        status = outputs[-1][STATUS]
        assert status.startswith(f"**Refused** ({where}): "), status  # the exact tab and control, nothing else
        assert why in status.split("): ", 1)[1], status
        assert outputs[-1][RECON] is None and outputs[-1][EXPORT] is None, "the last run's results are cleared"
    assert _stream(client, optimizer="lbfgs", lr="2,5", pixel_iterations=2)[-1][STATUS].startswith("**Finished**"), \
        "a control that does not apply (L-BFGS has no learning rate) cannot refuse a run"
    corrupt = tmp_path / "photo.png"
    corrupt.write_bytes(b"this is not a png")
    outputs = _stream(client, source="Upload", uploads=[handle_file(str(corrupt))])
    assert outputs[-1][STATUS].startswith("**Cannot start:** ") and "not a readable image" in outputs[-1][STATUS], \
        outputs[-1][STATUS]
    outputs = _stream(client, model="nobody/no-such-model")
    assert outputs[-1][STATUS].startswith("**Cannot start:** ") and "no-such-model" in outputs[-1][STATUS], \
        outputs[-1][STATUS]
    outputs = _stream(client, pixel_iterations=6)  # still serving
    assert outputs[-1][STATUS].startswith("**Finished**")


def test_two_clients_get_their_own_results(app_url):
    results: dict[str, list[tuple]] = {}

    def go(name: str, index: int, seed: int) -> None:
        client = _client(app_url)
        results[name] = _stream(client, gallery=_gallery(index), client_seed=seed, pixel_iterations=20)

    threads = [threading.Thread(target=go, args=("a", 0, 1)), threading.Thread(target=go, args=("b", 1, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    a, b = results["a"][-1], results["b"][-1]
    assert a[STATUS].startswith("**Finished**") and b[STATUS].startswith("**Finished**")
    originals = [next(o[ORIGINAL] for o in results[k] if isinstance(o[ORIGINAL], str)) for k in ("a", "b")]
    assert _digest(originals[0]) != _digest(originals[1]), "each client attacked its own victim"
    assert _digest(a[RECON]) != _digest(b[RECON])
    assert len(a[TABLE]["data"]) == 1 and len(b[TABLE]["data"]) == 1, "run tables are per session"


def test_a_surprising_combination_gets_a_visible_hint(app_url):
    client = _client(app_url)
    outputs = _stream(client, method="gidm-plus", secrets="known", pixel_iterations=2)
    assert any("GIDM+ is built for private eps and t" in o[STATUS] for o in outputs), [o[STATUS] for o in outputs]


def test_a_control_run_with_dp_noise_says_what_it_is_and_reruns_as_one(app_url):
    """The Threat tab's "control run" reaches the attack and the rerun command; the hints say why a control
    matters and what (epsilon, delta) the noise buys."""
    outputs = _stream(_client(app_url), method="dlg", pixel_iterations=3, control="other-image",
                      defence="clip + Gaussian noise", clip=1.0, sigma=1.0)
    assert outputs[-1][STATUS].startswith("**Finished**"), outputs[-1][STATUS]
    statuses = " ".join(o[STATUS] for o in outputs)
    assert "Control run (other-image)" in statuses and "(ε = 4.73, δ = 1e-05) per round" in statuses, statuses
    with zipfile.ZipFile(outputs[-1][EXPORT]) as archive:
        assert "--control other-image" in archive.read("command.txt").decode()


def test_a_session_deletes_its_files_when_it_ends(tmp_path):
    session = Session()
    folder = session.workfolder()
    (folder / "gidm-run-1.zip").write_bytes(b"zip")
    session.close()  # gr.State's delete_callback
    assert not folder.exists()


def test_a_sweep_fills_its_grid_cell_by_cell_and_a_cell_loads_into_the_main_view(one_thread):
    from types import SimpleNamespace

    from app import sweep
    from app.settings import CELL_FIELDS
    from app.sweep_view import load_cell
    from gidm_core.bench import Cell

    grid = sweep.Grid(Cell(method="dlg", model="random:tiny-32", images=(_gallery()[0],), total_iterations=3, t=None),
                      "iterations (total)", ("2", "3"), sweep.NONE, ("",))
    frames = list(sweep.run(grid, threading.Event()))
    assert frames[0][0][0][1] is None and frames[0][0][0][0] is not None, "the first cell shows before the second"
    table = frames[-1][0]
    assert all(c is not None and c["psnr"] > 0 for c in table[0])
    assert sweep.heatmap(grid, table).data[0].z[0][1] == table[0][1]["psnr"]
    loaded = dict(zip(CELL_FIELDS, load_cell(grid, SimpleNamespace(index=[0, 2]))))
    assert loaded["method"] == "dlg" and loaded["pixel_iterations"] == "3" and loaded["client_t"] == "-1"
    assert loaded["secrets"] == "known" and loaded["prior"] == "attacked" and loaded["defence"] == "none"
    assert (loaded["client_seed"], loaded["attack_seed"]) == ("0",
                                                              "1000"), "the seeds the cell ran with, attacker's apart"
    with pytest.raises(ValueError, match="comma"):
        sweep.values("0,5 1", "noise sigma (clip 1)")


def test_the_status_moves_every_second_between_rare_snapshots():
    """With snapshots far apart (slow steps, or a long report interval) the status still updates once a second."""
    from app.settings import Settings

    settings = Settings(model="random:tiny-32", gallery=_gallery(), method="dlg", pixel_iterations=60,
                        report_every=1000)
    session = Session()
    stamps, texts = [], []
    for frame in runner.stream(session, settings):
        stamps.append(time.perf_counter())
        texts.append(frame.status)
    working = [t for t in texts if "Working:" in t and "Iteration 0/60" in t]
    gaps = [b - a for a, b in zip(stamps[1:], stamps[2:-1])]
    assert working, f"no heartbeat frames: {texts}"
    assert max(gaps) < 1.5, gaps


@pytest.mark.parametrize("method,ran,expected", [
    ("gidm-plus", 450, (300, 150)),  # its latent phase counts: once exported as 0 latent + 450 pixel
    ("gidm", 30, (30, 0)),
    ("gidm-latent", 12, (12, 0)),
    ("dlg", 7, (0, 7)),
])
def test_a_stopped_run_exports_the_iterations_each_phase_did(method, ran, expected):
    from types import SimpleNamespace

    from app.export import iterations_run
    from gidm_core.config import attack_config

    config = attack_config(method, latent_iterations=300 if method == "gidm-plus" else 40)
    record = SimpleNamespace(config=config.__dict__, status="stopped", iterations=ran)
    assert iterations_run(record) == expected
