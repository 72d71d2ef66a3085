"""ZeroGPU: each call asks for the GPU time its run needs (capped at the 120 s anonymous visitors get), a run that
would need longer gets a time budget that fits and says so, and outside ZeroGPU nothing changes."""

from __future__ import annotations

import importlib.util

import pytest

from app import zerogpu
from app.settings import SETTING_FIELDS, Settings, as_typed, parse


def _values(**overrides) -> list:
    settings = Settings.from_preset(model="faces32", gallery=["face-05"], **overrides)
    return [as_typed(getattr(settings, name)) for name in SETTING_FIELDS]


def test_the_default_run_asks_for_what_it_needs_within_the_cap():
    seconds = zerogpu.run_duration(None, *_values())
    assert zerogpu.SETUP_S < seconds < zerogpu.MAX_GPU_S
    longer = zerogpu.run_duration(None, *_values(pixel_iterations=5000))
    assert longer == zerogpu.MAX_GPU_S, "a long run asks for the cap, never more"
    assert zerogpu.run_duration(None, *_values(resolution="64")) > seconds, "more pixels, more time"


def test_a_refused_run_asks_for_little():
    assert zerogpu.run_duration(None, *_values(lr="-1", optimizer="adam")) == zerogpu.REFUSED_S


def test_a_sweep_asks_for_its_cells_within_the_cap():
    small = zerogpu.sweep_duration(None, "iterations (total)", "50", "(none)", "", "50", *_values())
    assert zerogpu.SETUP_S < small < zerogpu.MAX_GPU_S
    assert zerogpu.sweep_duration(None, "method", "dlg ig gidm", "DDIM steps K", "1 2 4", "2000",
                                  *_values()) == zerogpu.MAX_GPU_S


def test_a_run_too_long_for_its_call_gets_a_budget_that_fits(monkeypatch):
    from app.settings import configs

    monkeypatch.setattr(zerogpu, "active", lambda: True)
    long = parse(dict(zip(SETTING_FIELDS, _values(pixel_iterations=5000))))
    config, note = zerogpu.fit_run(configs(long)[0], long)
    assert config.seconds == zerogpu.MAX_GPU_S - zerogpu.SETUP_S and "at most 120 s" in note
    short = parse(dict(zip(SETTING_FIELDS, _values())))
    assert zerogpu.fit_run(configs(short)[0], short) == (configs(short)[0], "")
    seconds, note = zerogpu.fit_sweep_cell(short, cells=16, iterations=2000)
    assert seconds == pytest.approx((zerogpu.MAX_GPU_S - zerogpu.SETUP_S) / 16) and "16 cells" in note


def test_outside_zerogpu_nothing_changes():
    long = parse(dict(zip(SETTING_FIELDS, _values(pixel_iterations=5000))))
    from app.settings import configs

    assert not zerogpu.active()
    assert zerogpu.fit_run(configs(long)[0], long) == (configs(long)[0], "")
    assert zerogpu.fit_sweep_cell(long, cells=16, iterations=5000) == (0.0, "")

    def handler(*args):
        return args

    wrapped = zerogpu.gpu(handler, zerogpu.run_duration)
    assert wrapped(1, 2) == (1, 2)
    if importlib.util.find_spec("spaces") is None:  # with the real package installed, its GPU() is tested above
        assert wrapped is handler
