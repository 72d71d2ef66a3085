"""Paired bootstrap: a planted difference is found, no difference is "cannot tell", the interval matches the normal
theory on a large sample, and runs pair only with the same (images, client seed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gidm_core.bench.paired import bootstrap, paired_difference, scores


def test_a_planted_difference_is_confirmed_and_none_cannot_be_told():
    rng = np.random.default_rng(5)
    base = rng.normal(25, 5, 8)  # per-run difficulty, shared by both methods: pairing cancels it
    better = {(("f",), i): float(v + 2 + rng.normal(0, 0.5)) for i, v in enumerate(base)}
    same = {(("f",), i): float(v + (0.5 if i % 2 else -0.5)) for i, v in enumerate(base)}  # mean difference 0
    plain = {(("f",), i): float(v) for i, v in enumerate(base)}
    assert paired_difference(better, plain).sign is True
    assert paired_difference(plain, better).sign is False
    tie = paired_difference(same, plain)
    assert tie.sign is None and tie.low < 0 < tie.high and tie.n == 8


def test_interval_matches_the_normal_approximation_and_is_seeded():
    values = list(np.random.default_rng(1).normal(3.0, 2.0, 400))
    interval = bootstrap(values)
    half = 1.96 * np.std(values) / math.sqrt(len(values))  # computed independently of the bootstrap
    assert interval.mean == pytest.approx(np.mean(values))
    assert interval.low == pytest.approx(np.mean(values) - half, abs=0.1 * half)
    assert interval.high == pytest.approx(np.mean(values) + half, abs=0.1 * half)
    assert bootstrap(values) == interval and bootstrap(values, seed=1) != interval
    single = bootstrap([4.0])
    assert single.sign is None and single.describe() == "+4.0, n = 1: no interval"
    with pytest.raises(ValueError, match="no paired runs"):
        bootstrap([])


def test_runs_pair_only_on_the_same_images_and_client_seed():
    def run(image, seed, psnr, status="done"):
        return {"images": [image], "client_seed": seed, "psnr": psnr, "status": status}

    a = scores({"runs": [run("face-05", 0, 30.0), run("face-05", 1, 32.0), run("face-17", 0, 20.0),
                         run("face-29", 0, 50.0, status="error")]})
    b = scores({"runs": [run("face-05", 1, 31.0), run("face-17", 0, 18.0), run("face-29", 0, 10.0)]})
    diff = paired_difference(a, b)
    assert diff.n == 2 and diff.mean == pytest.approx(1.5)  # (32 - 31 + 20 - 18) / 2; the failed run is left out
    assert paired_difference(a, {}) is None and scores(None) == {}
