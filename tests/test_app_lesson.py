"""Lesson mode through the app's `lesson` API: the four steps run and collect side by side (on a tiny model with a
short budget here; the real lesson runs faces32 for ~40 s a step, docs/steering.md)."""

from __future__ import annotations

import os
import tempfile

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402


def test_the_four_steps_run_through_the_api_and_collect_side_by_side(app_url, monkeypatch):
    monkeypatch.setenv("GIDM_LESSON_MODEL", "random:tiny-32")  # read at each step by the in-process server
    monkeypatch.setenv("GIDM_LESSON_SECONDS", "1.5")
    client = Client(app_url, verbose=False, download_files=tempfile.mkdtemp(prefix="gidm-client-"))
    status, _, _ = client.predict(5, api_name="/lesson")
    assert status.startswith("**Refused:**") and "1 to 4" in status
    for step in (1, 2, 3, 4):
        status, gallery, table = client.predict(step, api_name="/lesson")
        assert "PSNR" in status and "dB" in status, status
        assert [row[0] for row in table["data"]] == list(range(1, step + 1)), "the session's steps accumulate"
        assert len(gallery) == step
    rows = {row[0]: row for row in table["data"]}
    assert "(true [" in rows[2][4], "GIDM+ reads t off the update and the table shows it beside the truth"
    assert all(float(row[6]) < 60 for row in table["data"])
