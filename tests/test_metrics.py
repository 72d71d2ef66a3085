"""Evaluator metrics: LPIPS reproduces the published reference values offline; the simple metrics and the pairing
behave as their definitions say."""

from __future__ import annotations

import math
import socket
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.io import imread

from gidm_core import metrics

torch.set_num_threads(1)

DATA = Path(__file__).parent / "data" / "lpips"


def _load(name: str) -> torch.Tensor:
    """A reference PNG as a (1, 3, H, W) tensor in [0, 1]."""
    arr = imread(DATA / f"{name}.png")[..., :3]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make every way out to the network raise, and hide any cached torchvision weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(metrics, "_LPIPS_CACHE", {})


@pytest.mark.parametrize("other, expected", [("ex_p0", 0.722), ("ex_p1", 0.138)])
def test_lpips_reference_values(other: str, expected: float) -> None:
    # Published LPIPS v0.1 AlexNet values for the authors' example images (tests/data/lpips/README.md).
    d = metrics.lpips_distance(_load("ex_ref"), _load(other))
    assert round(d, 3) == expected, d


def test_lpips_loads_without_network(no_network: None) -> None:
    import lpips

    # The guard is real: the stock constructor needs the download and is stopped by it.
    with pytest.raises(AssertionError, match="network access"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lpips.LPIPS(net="alex", verbose=False)
    d = metrics.lpips_distance(_load("ex_ref"), _load("ex_p1"))
    assert round(d, 3) == 0.138


def test_lpips_model_is_cached() -> None:
    cpu = torch.device("cpu")
    assert metrics._lpips_model(cpu) is metrics._lpips_model(cpu)


@pytest.mark.parametrize("size", [16, 24, 32, 128])
def test_lpips_sizes_and_identity(size: int) -> None:
    g = torch.Generator().manual_seed(size)
    a = torch.rand(2, 3, size, size, generator=g)
    b = torch.rand(2, 3, size, size, generator=g)
    assert metrics.lpips_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips_distance(a, b) > 0.05


def test_lpips_grayscale() -> None:
    a = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert metrics.lpips_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips_distance(a, 1 - a) > 0.05


def test_lpips_batch_is_mean_of_samples() -> None:
    ref, p0, p1 = _load("ex_ref"), _load("ex_p0"), _load("ex_p1")
    d = metrics.lpips_distance(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert d == pytest.approx((metrics.lpips_distance(ref, p0) + metrics.lpips_distance(ref, p1)) / 2, abs=1e-6)


def test_mse_and_psnr_of_known_offset() -> None:
    a = torch.full((3, 3, 16, 16), 0.4)
    b = a + 0.1  # MSE 0.01 -> PSNR = 10 log10(1 / 0.01) = 20 dB
    assert metrics.mse(a, b) == pytest.approx(0.01, rel=1e-5)
    assert metrics.psnr(a, b) == pytest.approx(20.0, abs=1e-4)
    assert metrics.psnr(a, a) == math.inf


def test_psnr_averages_per_sample() -> None:
    a = torch.zeros(2, 1, 8, 8)
    b = torch.cat([torch.full((1, 1, 8, 8), 0.1), torch.full((1, 1, 8, 8), 0.01)])  # 20 dB and 40 dB
    assert metrics.psnr(a, b) == pytest.approx(30.0, abs=1e-4)


@pytest.mark.parametrize("channels, size", [(3, 64), (3, 16), (1, 16), (1, 5)])
def test_ssim_identical_is_one_and_noise_lowers_it(channels: int, size: int) -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, channels, size, size, generator=g)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.ssim(a, noisy) < 0.9


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError):
        metrics.mse(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9))


def test_to_unit() -> None:
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.2])
    assert torch.equal(metrics.to_unit(x), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_pairing_recovers_shuffle() -> None:
    g = torch.Generator().manual_seed(2)
    truth = torch.rand(8, 3, 16, 16, generator=g)
    shuffle = torch.randperm(8, generator=g)
    recon = (truth[shuffle] + 0.05 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    perm = metrics.pair_images(recon, truth)
    assert perm.dtype == torch.long
    assert torch.equal(shuffle[perm], torch.arange(8))
    assert torch.equal(metrics.pair_images(recon[:1], truth[:1]), torch.tensor([0]))


def test_pairing_is_optimal_not_greedy() -> None:
    # Greedy in truth order gives truth 0 its nearest (recon 0) and leaves truth 1 the far recon 1; the cheapest
    # one-to-one assignment is the swap.
    truth = torch.tensor([0.50, 0.60]).view(2, 1, 1, 1).expand(2, 1, 4, 4)
    recon = torch.tensor([0.56, 0.40]).view(2, 1, 1, 1).expand(2, 1, 4, 4)
    assert metrics.pair_images(recon, truth).tolist() == [1, 0]


def test_score_is_order_invariant() -> None:
    g = torch.Generator().manual_seed(3)
    truth = torch.rand(4, 3, 32, 32, generator=g)
    recon = (truth + 0.1 * torch.randn(truth.shape, generator=g)).clamp(0, 1)
    shuffle = torch.tensor([2, 0, 3, 1])
    base = metrics.score(recon, truth)
    shuffled = metrics.score(recon[shuffle], truth)
    assert set(base) == {"mse", "psnr", "ssim", "lpips"}
    assert shuffled == pytest.approx(base, abs=1e-9)
    # and it equals the per-metric functions on the aligned batch
    assert base["psnr"] == pytest.approx(metrics.psnr(recon, truth))
    assert base["ssim"] == pytest.approx(metrics.ssim(recon, truth))
    assert base["lpips"] == pytest.approx(metrics.lpips_distance(recon, truth), abs=1e-6)
    assert set(metrics.score(recon, truth, lpips=False)) == {"mse", "psnr", "ssim"}


def test_score_rejects_minus_one_to_one_images() -> None:
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with pytest.raises(ValueError, match="to_unit"):
        metrics.score(x, x, lpips=False)
    assert metrics.score(metrics.to_unit(x), metrics.to_unit(x), lpips=False)["mse"] == 0.0


def test_build_script_refuses_code_in_pickles(tmp_path: Path) -> None:
    # The weights come from a third-party pickle; the converter must not execute anything it contains.
    import importlib.util
    import os
    import pickle

    spec = importlib.util.spec_from_file_location(
        "build_lpips_weights", Path(__file__).parent.parent / "scripts" / "build_lpips_weights.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"AlexNet_0": Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        build.load_numpy_pickle(bad)
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}))
    assert build.load_numpy_pickle(good)["a"]["kernel"].shape == (2, 3)


def test_evaluator_pairs_a_batch_once_and_reorders_t_and_eps_with_it(monkeypatch) -> None:
    from gidm_core import evaluation
    from gidm_core.client import PrivateBatch

    g = torch.Generator().manual_seed(4)
    x0 = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    batch = PrivateBatch(x0, torch.randn(x0.shape, generator=g), torch.tensor([10, 500, 900]))
    calls, pair = [], metrics.pair_images

    def counted(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return pair(recon, truth)

    monkeypatch.setattr(evaluation, "pair_images", counted)
    monkeypatch.setattr(metrics, "pair_images", counted)
    shuffle = torch.tensor([2, 0, 1])
    out = evaluation.Evaluator(batch).metrics(x0[shuffle], batch.t[shuffle], batch.eps[shuffle], lpips=False)
    assert len(calls) == 1
    assert out["mse"] == 0.0 and out["t_accuracy"] == 1.0 and out["eps_error"] == 0.0
