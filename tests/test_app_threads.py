"""The app's torch threads: the cores shared among the attacks it runs at once, unless GIDM_THREADS says."""

from __future__ import annotations

import os

import pytest

from app.session import concurrency, torch_threads


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
