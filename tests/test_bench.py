"""The benchmark: cells are pure functions config -> JSON, reruns skip finished cells, aggregation writes the report.

Runs the tiny suite (seeded random UNets, a dozen iterations per cell) once through the CLI, well under a minute on
a 2-core CPU, then checks what it wrote.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from gidm_core import bench
from gidm_core.cli import main


@pytest.fixture(scope="module")
def tiny_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    assert main(["bench", "--suite", "tiny", "--out", str(out), "--workers", "1", "--device", "cpu"]) == 0
    return out


def _cells(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "cells").glob("*.json")}


def test_every_cell_of_the_suite_has_its_file(tiny_out):
    rows, probes = bench.build_suite("tiny")
    expected = {replace(c, device="cpu").id for r in rows for c in r.cells} | {replace(p, device="cpu").id
                                                                               for p in probes}
    assert set(_cells(tiny_out)) == expected


def test_cell_json_holds_every_metric(tiny_out):
    cells = [c for c in _cells(tiny_out).values() if c.get("kind") != "speed"]
    assert cells
    for cell in cells:
        config = bench.Cell.from_dict(cell["config"])
        assert cell["id"] == config.id  # the file is named by the hash of the config it holds
        assert cell["failed_runs"] == 0
        assert len(cell["runs"]) == len(config.groups())
        summary = cell["summary"]
        for key in ("psnr", "ssim", "lpips", "mse", "seconds", "iterations_per_second", "step_seconds"):
            assert summary[key]["n"] == len(cell["runs"]) and summary[key]["mean"] is not None, key
        assert 0 < summary["psnr"]["mean"] < 100
        assert 0 <= summary["lpips"]["mean"] <= 1.5
        assert summary["iterations"]["mean"] == config.iterations  # the whole budget, whatever the method
        assert cell["fwd_bwd_seconds"] > 0 and cell["step_ratio"] > 0.5
        assert cell["peak_memory_mb"] >= cell["base_memory_mb"] > 0
        assert cell["device"] == "cpu"
        for run in cell["runs"]:
            iterations = [point[0] for point in run["curve"]]
            assert iterations == sorted(iterations) and iterations[0] == 0
            assert all(point[1] >= 0 for point in run["curve"])
            assert "seconds_to_25db" in run and "seconds_to_30db" in run
        if config.knows_t:
            assert summary["t_accuracy"]["mean"] is None
        else:  # GIDM+ reads t off the time-embedding gradient: exact on an undefended update
            assert summary["t_accuracy"]["mean"] == 1.0
        if config.knows_eps:
            assert summary["eps_error"]["mean"] is None
        else:
            assert summary["eps_error"]["mean"] > 0


def test_speed_probe_reports_ratios(tiny_out):
    probe = next(c for c in _cells(tiny_out).values() if c.get("kind") == "speed")
    assert probe["fwd_bwd_seconds"] > 0
    assert {label for label, *_ in bench.SPEED_CASES} == set(probe["cases"])
    for case in probe["cases"].values():
        assert len(case["samples"]) == probe["config"]["reps"] and case["ratio"] > 0


def test_speed_ratio_is_the_step_cost_over_one_forward_backward(monkeypatch):
    """A fake clock: each attack costs 1 s of set-up plus a known cost per step, a forward+backward 0.2/0.3/0.25 s.
    The probe must cancel the set-up and divide by the median forward+backward: literal numbers, not its formula."""
    from types import SimpleNamespace

    from gidm_core import protocol
    from gidm_core.bench import speed

    step_cost = {"dlg": 0.1, "ig": 0.15, "gidm-latent": 0.3, "gidm": 0.12, "gidm-plus": 0.2}
    clock = SimpleNamespace(now=0.0)

    def play(model, x0, threat, config, **kwargs):
        def run_to_end():
            clock.now += 1.0 + step_cost[config.method] * config.total_iterations
        return SimpleNamespace(run=SimpleNamespace(run_to_end=run_to_end))

    references = iter([0.2, 0.3, 0.25])
    monkeypatch.setattr(protocol, "play", play)
    monkeypatch.setattr(speed, "time", SimpleNamespace(perf_counter=lambda: clock.now, process_time=lambda: 0.0))
    monkeypatch.setattr(speed, "time_forward_backward", lambda *args, **kwargs: next(references))
    probe = speed.run_speed(bench.SpeedProbe("random:tiny-32", steps=4, reps=3, device="cpu"))
    assert probe["fwd_bwd_seconds"] == pytest.approx(0.25)
    ratios = {label: case["ratio"] for label, case in probe["cases"].items()}
    assert ratios == pytest.approx({"DLG pixel step (L2)": 0.4, "IG pixel step (cosine + TV)": 0.6,
                                    "GIDM latent step (DDIM K)": 1.2, "GIDM pixel step": 0.48,
                                    "DLG pixel+eps step (private eps)": 0.4,
                                    "GIDM+ step (70 % joint x0, eps; 30 % residual x_t, r)": 0.8})
    assert probe["cases"]["GIDM pixel step"]["step_seconds"] == pytest.approx(0.12)


def test_readme_section_picks_the_best_baseline_and_says_where_gidm_wins_ties_and_loses():
    def entry(psnr: float, **private: float) -> dict:
        stat = {key: {"mean": value, "std": 0.0, "n": 1} for key, value in private.items()}
        return {"psnr": {"mean": psnr, "std": 0.0, "n": 1}, "model_name": "faces32", "t_accuracy": None,
                "eps_error": None, **stat}

    rows = [{"label": "known", "config": {"iterations": 150, "knows_t": True, "t": 100},
             "methods": {"dlg": entry(25.0), "ig": entry(27.5), "gidm": entry(30.0), "gidm-latent": entry(27.0)}},
            {"label": "private", "config": {"iterations": 150, "knows_t": False, "t": 400},
             "methods": {"dlg": entry(20.0), "gidm": entry(15.0),
                         "gidm-plus": entry(22.0, t_accuracy=1.0, eps_error=0.5)}}]
    results = {"suite": "quick", "rows": rows, "speed": [],
               "cells": {"c": {"device_name": "test CPU", "device": "cpu", "summary": {"psnr": {"n": 2}}}}}
    text = bench.readme_section(results)
    assert "- **GIDM beats the best baseline (by more than 1 dB):** known: GIDM 30.0 vs IG 27.5 (+2.5).\n" in text
    assert "- **GIDM within 1 dB of the best baseline:** known: GIDM-latent 27.0 vs IG 27.5 (-0.5).\n" in text
    assert "- **GIDM loses to a baseline (by more than 1 dB):** private: GIDM 15.0 vs DLG 20.0 (-5.0).\n" in text
    assert "| 400 | private | 22.0 | 20.0 | 1.00 | 0.50 |" in text
    assert "150 iterations per method" in text and "2 run(s)" in text and "randomly initialised" not in text


def test_rerun_skips_finished_cells(tiny_out):
    before = {p.name: p.stat().st_mtime_ns for p in (tiny_out / "cells").glob("*.json")}
    logged: list[str] = []
    rows, probes = bench.build_suite("tiny")
    bench.run_suite(rows, probes, tiny_out, device="cpu", log=logged.append, suite="tiny")
    assert logged[0].endswith("0 to run")
    after = {p.name: p.stat().st_mtime_ns for p in (tiny_out / "cells").glob("*.json")}
    assert after == before


def test_aggregate_writes_json_markdown_and_plots(tiny_out):
    results = json.loads((tiny_out / "results.json").read_text())
    assert results["suite"] == "tiny" and not results["missing_cells"]
    rows, _ = bench.build_suite("tiny")
    assert [r["label"] for r in results["rows"]] == [r.label for r in rows]
    first = results["rows"][0]["methods"]
    assert set(first) == {"dlg", "gidm"}
    assert first["dlg"]["psnr"]["mean"] == pytest.approx(results["cells"][first["dlg"]["cell"]]["summary"]["psnr"]["mean"])
    markdown = (tiny_out / "results.md").read_text()
    assert "| setting | DLG | IG | GIDM-latent | GIDM | GIDM+ |" in markdown
    assert f"{first['dlg']['psnr']['mean']:.1f}" in markdown
    assert "Step time as a ratio" in markdown
    readme = (tiny_out / "readme_section.md").read_text()
    gidm, dlg = first["gidm"]["psnr"]["mean"], first["dlg"]["psnr"]["mean"]
    assert f"GIDM {gidm:.1f} vs DLG {dlg:.1f} ({gidm - dlg:+.1f})" in readme
    assert "randomly initialised" in readme  # the tiny suite attacks random:tiny-32, and must say so
    assert "| 100 | 32 px, private eps and t |" in readme  # GIDM+ by t
    assert results["cpu_seconds"] > 0
    plots = sorted(p.name for p in tiny_out.glob("*.png"))
    assert any(p.startswith("psnr_vs_iterations") for p in plots)
    assert "psnr_vs_defence_noise.png" in plots
    for name in plots:
        with Image.open(tiny_out / name) as image:
            assert image.size[0] > 300


def test_cell_is_a_pure_function_of_its_config():
    cell = bench.Cell(method="dlg", model="random:tiny-32", images=("skimage:coffee",), iterations=3,
                      report_every=1, device="cpu")
    first, second = bench.run_cell(cell), bench.run_cell(cell)
    assert first["summary"]["psnr"]["mean"] == second["summary"]["psnr"]["mean"]
    assert [p[2] for p in first["runs"][0]["curve"]] == [p[2] for p in second["runs"][0]["curve"]]
    assert bench.Cell.from_dict(json.loads(json.dumps(first["config"]))) == cell
    assert replace(cell, iterations=4).id != cell.id and replace(cell).id == cell.id


def test_budget_is_shared_across_methods():
    for method in bench.METHOD_ORDER:
        for budget in (12, 100, 201):
            cell = bench.Cell(method=method, model="random:tiny-32", images=("skimage:coffee",), iterations=budget)
            from gidm_core.config import attack_config

            assert attack_config(method, **cell.budget_split()).total_iterations in (budget, budget + 1)


def test_sampler_image_update_is_the_clients_update(tiny_model):
    """Guards the speed work in DDIMSampler: GIDM's latent phase must match the update a client would send for the
    sampled image, not one that also differentiates through the sampler's own UNet calls (which cost ~2x)."""
    import torch

    from gidm_core.client import client_update
    from gidm_core.diffusion import DDIMSampler

    sampler = DDIMSampler(tiny_model, 2)
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(1, 3, 32, 32, generator=generator).requires_grad_(True)
    eps, t = torch.randn(1, 3, 32, 32, generator=generator), torch.tensor([100])
    image = sampler(z)
    through = client_update(tiny_model, image, eps, t, create_graph=True)
    client = client_update(tiny_model, image.detach(), eps, t)
    assert max(float((a - b).abs().max()) for a, b in zip(through, client)) < 1e-5
    (grad,) = torch.autograd.grad(sum(g.pow(2).sum() for g in through), [z])
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
