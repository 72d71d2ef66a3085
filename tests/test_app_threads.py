"""The app's torch threads: the cores shared among the attacks it runs at once, unless GIDM_THREADS says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.session import concurrency, env_count, queue_size, torch_threads


@pytest.mark.parametrize("cores, runs, expected", [(2, "2", 1), (16, "2", 8), (2, "1", 2), (None, "2", 1), (3, "4", 1)])
def test_threads_share_the_cores_among_concurrent_attacks(monkeypatch, cores, runs, expected):
    monkeypatch.delenv("GIDM_THREADS", raising=False)
    monkeypatch.setenv("GIDM_CONCURRENCY", runs)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    assert concurrency() == int(runs)
    assert torch_threads() == expected


def test_gidm_threads_overrides(monkeypatch):
    monkeypatch.setenv("GIDM_THREADS", "3")
    assert torch_threads() == 3
    monkeypatch.setenv("GIDM_THREADS", "0")
    assert torch_threads() == 1


@pytest.mark.parametrize("name, value", [("GIDM_THREADS", "two"), ("GIDM_THREADS", "-1"), ("GIDM_CONCURRENCY", "0"),
                                         ("GIDM_QUEUE_SIZE", "1.5")])
def test_a_bad_setting_is_named_in_one_line(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    call = {"GIDM_THREADS": torch_threads, "GIDM_CONCURRENCY": concurrency, "GIDM_QUEUE_SIZE": queue_size}[name]
    with pytest.raises(ValueError, match=f"^{name} must be a whole number >= [01], got '{value}'$"):
        call()


@pytest.mark.parametrize("value", ["70000", "0", "http"])
def test_a_port_out_of_range_is_named_with_its_range(monkeypatch, value):
    monkeypatch.setenv("GRADIO_SERVER_PORT", value)
    with pytest.raises(ValueError, match=f"^GRADIO_SERVER_PORT must be a whole number from 1 to 65535, got '{value}'$"):
        env_count("GRADIO_SERVER_PORT", 7860, 1, 65535)


def test_the_app_exits_with_that_line(tmp_path):
    """`python app.py` with a bad setting prints the one line and exits 1, before any model is loaded."""
    env = {**os.environ, "GIDM_CONCURRENCY": "many", "GRADIO_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "app.py"], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 1
    assert done.stderr.strip() == "app.py: GIDM_CONCURRENCY must be a whole number >= 1, got 'many'"
