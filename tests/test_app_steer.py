"""The app's `steer` API and "what the server sees" panel, driven through gradio_client on a tiny model: steering
actions land in the running attack, show on the loss curve, go into the export, and its command replays them."""

from __future__ import annotations

import json
import os
import tempfile
import time
import zipfile

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402
from test_app import run_exported_command  # noqa: E402

from app.victims import gallery_items  # noqa: E402

TINY = dict(model="random:tiny-32", uploads=None, webcam=None, latent_iterations=300, ddim_steps=1,
            pixel_iterations=30, optimizer="adam", report_every=2, batch_size=1, source="Gallery", plateau=0)
STATUS, RECON, LOSS, EXPORT, SERVER = 0, 2, 4, 11, 12  # the client leaves the Tabs output out


def _client(url: str) -> Client:
    return Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="gidm-client-"))


def _wait_for_image(job, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(isinstance(o[RECON], str) for o in job.outputs()):
            return
        time.sleep(0.2)
    pytest.fail("no reconstruction arrived")


def _steer(client: Client, action: str, value: str = "") -> str:
    return client.predict(action, value, api_name="/steer")


def test_steering_lands_in_the_run_shows_on_the_curve_and_replays_from_the_export(app_url, tmp_path):
    client = _client(app_url)
    assert "no run is going" in _steer(client, "pause")
    job = client.submit(api_name="/run", **{**TINY, "gallery": [gallery_items()[0].name]})
    _wait_for_image(job)
    assert _steer(client, "next phase now").startswith("**Steering:** next phase now")
    assert "not a number" in _steer(client, "learning rate", "fast")
    assert "comma" in _steer(client, "learning rate", "0,01")
    assert "whole number" in _steer(client, "extend phase by", "2.5")
    assert _steer(client, "learning rate", "0.01").startswith("**Steering:**")
    assert _steer(client, "extend phase by", "6").startswith("**Steering:**")
    assert _steer(client, "pause").startswith("**Steering:**")
    deadline = time.time() + 60
    while not any("Paused at iteration" in o[STATUS] for o in job.outputs()[-3:]):
        assert time.time() < deadline, "the status never said the run is paused"
        time.sleep(0.3)
    held = len([o for o in job.outputs() if isinstance(o[RECON], str)])
    time.sleep(1.5)
    assert len([o for o in job.outputs() if isinstance(o[RECON], str)]) == held, "no new snapshot while paused"
    assert _steer(client, "resume").startswith("**Steering:**")
    final = job.result(timeout=120) and job.outputs()[-1]
    assert final[STATUS].startswith("**Finished**"), final[STATUS]
    plot = final[LOSS]["plot"]
    assert "next phase" in plot and "lr 0.01" in plot and "+6 evals" in plot, "the marks are on the loss curve"
    with zipfile.ZipFile(final[EXPORT]) as archive:
        archive.extractall(tmp_path)
    schedule = json.loads((tmp_path / "steering.json").read_text())
    assert [a["action"] for a in schedule] == ["next_phase", "lr", "extend", "pause", "resume"]
    report = json.loads((tmp_path / "metrics.json").read_text())
    switched = report["phase_starts"]["pixel"]
    assert switched < TINY["latent_iterations"] and report["iterations"] == switched + 30 + 6
    command = run_exported_command(tmp_path)
    assert "--steer steering.json" in command and "--latent-iterations 300" in command
    rerun = json.loads((tmp_path / "rerun" / "metrics.json").read_text())
    assert rerun["iterations"] == report["iterations"] and rerun["phase_starts"] == report["phase_starts"]
    assert [(a["at"], a["action"]) for a in rerun["steering"]] == [(a["at"], a["action"]) for a in schedule]


def test_an_lbfgs_run_refuses_a_learning_rate_and_the_server_panel_shows_the_t_it_reads(app_url):
    client = _client(app_url)
    job = client.submit(api_name="/run", **{**TINY, "gallery": [gallery_items()[1].name], "optimizer": "lbfgs",
                                            "latent_iterations": 2, "pixel_iterations": 400, "client_t": 321})
    _wait_for_image(job)
    assert "L-BFGS" in _steer(client, "learning rate", "0.1")
    client.predict(api_name="/stop")
    outputs = job.result(timeout=60) and job.outputs()
    plots = [o[SERVER]["plot"] for o in outputs if isinstance(o[SERVER], dict) and "plot" in o[SERVER]]
    assert plots and "t = [321] read off the update" in plots[0], [type(o[SERVER]) for o in outputs]
