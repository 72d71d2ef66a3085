"""The app's Tune action through its public API (`/tune`): the trial table and Optuna's two figures fill trial by
trial, and the best trial's hyperparameters load into the main view's controls (tiny random UNet, 1 s trials)."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from app.settings import SETTING_FIELDS, Settings  # noqa: E402
from app.tune_view import LOADED, load_best  # noqa: E402
from app.victims import gallery_items  # noqa: E402

TINY = dict(model="random:tiny-32", uploads=None, webcam=None, pixel_iterations=30, latent_iterations=2, ddim_steps=1,
            report_every=3, batch_size=1, source="Gallery", plateau=0, method="dlg")


def _tune(url: str, **values) -> list[tuple]:
    client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="gidm-client-"))
    return list(client.submit(api_name="/tune", **{**TINY, "gallery": [gallery_items()[0].name], **values}))


def test_tune_fills_its_table_and_figures_trial_by_trial(app_url):
    frames = _tune(app_url, trials=3, seconds=1)
    status, table, history, importance = frames[-1][:4]
    assert status.startswith("**Tuning finished**: trial "), status
    rows = table["data"]
    assert [row[0] for row in rows] == [0, 1, 2] and all(float(row[2]) > 0 for row in rows)
    assert all(row[3] > 0 for row in rows), "each trial's PSNR is shown (the evaluator's, beside the tuner's table)"
    sizes = [len(frame[1]["data"]) for frame in frames]
    assert sizes == [0, 1, 2, 3, 3], "the table grows one trial at a time"
    assert history is not None and importance is not None
    chosen = int(status.split("trial ")[1].split()[0])
    assert float(rows[chosen][2]) == min(float(row[2]) for row in rows), "the pick is the lowest matching loss"


def test_bad_settings_are_refused_in_one_line(app_url):
    frames = _tune(app_url, trials=2, seconds=1, model="random:nope-32")
    assert frames[-1][0].startswith("**Tuning refused**: Model tab, Attacked model: unknown random architecture 'nope'")


def test_the_best_trial_loads_into_the_main_view():
    values = [getattr(Settings.from_preset(model="random:tiny-32"), name) for name in SETTING_FIELDS]
    params = {"distance": "cosine", "layer_weights": "uniform", "optimizer": "adam", "lr": 0.02, "latent_lr": 0.01,
              "ddim_steps": 3, "latent_share": 0.25, "total": 400}
    loaded = dict(zip(LOADED, load_best(params, *values)))
    assert (loaded["distance"], loaded["optimizer"], loaded["ddim_steps"]) == ("cosine", "adam", "3")
    assert (loaded["latent_iterations"], loaded["pixel_iterations"]) == ("100", "300")
    with pytest.raises(Exception, match="No finished study"):
        load_best(None, *values)
