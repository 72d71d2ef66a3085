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
        assert summary["iterations"]["mean"] == config.total_iterations  # the whole budget, whatever the method
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
    from gidm_core.bench.speed import BATCH_CASE, STEPS_CASES

    assert {label for label, *_ in bench.SPEED_CASES} | {BATCH_CASE[0], *STEPS_CASES.values()} == set(probe["cases"])
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

    def sgd_evaluations(model, x0, device):  # 0.7 s per exact evaluation, 0.4 linearised, after 0.5 s of set-up
        def seconds(linearised, count):
            start = clock.now
            clock.now += 0.5 + (0.4 if linearised else 0.7) * count
            return clock.now - start
        return seconds

    references = iter([0.2, 0.3, 0.25])
    monkeypatch.setattr(protocol, "play", play)
    monkeypatch.setattr(speed, "sgd_evaluations", sgd_evaluations)
    monkeypatch.setattr(speed, "now", lambda device: clock.now)
    monkeypatch.setattr(speed, "time_forward_backward", lambda *args, **kwargs: next(references))
    probe = speed.run_speed(bench.SpeedProbe("random:tiny-32", steps=4, reps=3, device="cpu"))
    assert probe["fwd_bwd_seconds"] == pytest.approx(0.25)
    ratios = {label: case["ratio"] for label, case in probe["cases"].items()}
    assert ratios == pytest.approx({"DLG pixel step (L2)": 0.4, "IG pixel step (cosine + TV)": 0.6,
                                    "GIDM latent step (DDIM K)": 1.2, "GIDM pixel step": 0.48,
                                    "DLG pixel+eps step (private eps)": 0.4,
                                    "GIDM+ pixel step (70 % joint x0, eps; 30 % residual x_t, r)": 0.8,
                                    "DLG pixel step, B = 16, separated": 0.4,
                                    "SGD E = 4 fresh: evaluation, exact re-simulation": 2.8,
                                    "SGD E = 4 fresh: evaluation, linearised": 1.6})
    # 0.1 s per B = 16 step against 16 B = 1 steps of 0.1 s each.
    assert probe["cases"]["DLG pixel step, B = 16, separated"]["per_image_vs_b1"] == pytest.approx(1 / 16)
    assert probe["cases"]["GIDM pixel step"]["step_seconds"] == pytest.approx(0.12)


def _planted(rows: list[tuple[str, dict, dict[str, list[float]]]], group: str = "setting") -> dict:
    """A results.json with planted per-run PSNRs: each row's methods ran on the same (face, seed) runs, run i
    on ("face-0i",) with client seed i; LPIPS 0.01 unless a PSNR is under 25 dB (then 0.2)."""
    table, cells = [], {}
    for label, config, methods in rows:
        entries = {}
        for method, values in methods.items():
            cell = f"{label}-{method}"
            runs = [{"images": [f"face-0{i}"], "client_seed": i, "status": "done", "psnr": v,
                     "lpips": 0.01 if v >= 25 else 0.2} for i, v in enumerate(values)]
            cells[cell] = {"runs": runs}
            mean = sum(values) / len(values)
            entries[method] = {"cell": cell, "psnr": {"mean": mean, "std": 0.0, "n": len(values)},
                               "lpips": {"mean": 0.01 if mean >= 25 else 0.2, "std": 0.0, "n": len(values)}}
        table.append({"label": label, "group": group, "config": config, "methods": entries})
    return {"rows": table, "cells": cells}


def test_claims_decide_only_where_the_paired_interval_excludes_zero():
    from gidm_core.bench.claims import claims

    known = {"knows_eps": True, "knows_t": True, "size": 32}
    private = {**known, "knows_eps": False, "knows_t": False}
    rows = [("known", known, {"dlg": [25, 26, 24, 25], "ig": [27, 28, 27, 28], "gidm": [35, 36, 34, 35],
                              "gidm-latent": [27, 27, 26, 27]}),
            ("early", known, {"dlg": [30, 31, 30, 29], "gidm": [20, 21, 19, 20]}),
            ("private", private, {"dlg": [20, 21, 19, 20], "gidm-plus": [26, 27, 26, 27]})]
    lines = claims(_planted(rows))
    assert lines[0].endswith(": mixed (1 confirm, 1 refute, 0 cannot tell).** known: GIDM 35.0 vs IG 27.5 "
                             "(+7.5 [+7.0, +8.0], n = 4); early: GIDM 20.0 vs DLG 30.0 (-10.0 [-10.8, -9.2], n = 4).")
    assert ": mixed (1 confirm, 1 refute, 0 cannot tell).** known: GIDM 35.0 dB (+5.0 [+4.2, +5.8], n = 4 over 30)" \
        in lines[1]
    assert ": confirmed (1 of 1 rows).** private: GIDM+ 26.5 vs DLG 20.0 (+6.5 [+6.0, +7.0], n = 4), +1.5 " \
        "[+1.0, +2.0], n = 4 dB over 25." in lines[2]
    assert ": cannot tell.** no row at 128 px" in lines[3]
    # GIDM+ beaten in its row for sure: no longer "recovers".
    beaten = [*rows[:2], ("private", private, {"dlg": [30, 31, 30, 31], "gidm-plus": [26, 27, 26, 27]})]
    assert ": refuted (1 of 1 rows).**" in claims(_planted(beaten))[2]
    big = ("128", {**known, "size": 128}, {"gidm": [25.5, 26.0, 25.8], "dlg": [25.0, 25.0, 25.0]})
    assert ": confirmed (1 of 1 rows).** 128: GIDM 25.8 dB (+0.8 [+0.5, +1.0], n = 3 over 25)." in \
        claims(_planted([*rows, big]))[3]
    # A large mean difference whose runs disagree in sign decides nothing; nor does one run.
    noisy = [("noisy", known, {"dlg": [30, 30, 30, 30], "gidm": [45, 15, 46, 16]})]
    assert ": cannot tell (1 row(s) whose 95 % interval holds 0).**" in claims(_planted(noisy))[0]
    one = [("one", known, {"dlg": [20.0], "gidm": [40.0]})]
    assert "(+20.0, n = 1: no interval)" in claims(_planted(one))[0]
    # Defended, control, batch and realistic-client rows test no claim of the paper.
    for group in ("defence", "control", "batch", "realistic clients"):
        assert "no row tests it" in claims(_planted([("other", known, {"dlg": [5, 5], "gidm": [40, 40]})],
                                                    group=group))[0]


def test_readme_section_goes_between_the_markers_and_nowhere_else():
    from gidm_core.bench.report import README_END, README_START, replace_readme_section

    readme = f"# Title\n\n{README_START}\nold\n{README_END}\n\nrest\n"
    assert replace_readme_section(readme, "new\n") == f"# Title\n\n{README_START}\nnew\n{README_END}\n\nrest\n"
    with pytest.raises(ValueError, match="no bench markers"):
        replace_readme_section("# Title\n", "new\n")


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
    assert [(r["setting"], r["training_round"]) for r in results["rows"]] == [(r.setting, r.training_round)
                                                                            for r in rows]
    first = results["rows"][0]["methods"]
    assert set(first) == {"dlg", "gidm"}
    dlg_cell = results["cells"][first["dlg"]["cell"]]
    assert first["dlg"]["psnr"]["mean"] == pytest.approx(dlg_cell["summary"]["psnr"]["mean"])
    markdown = (tiny_out / "results.md").read_text()
    assert "| setting | budget per run | DLG | IG | GIDM-latent | GIDM | GIDM+ |" in markdown
    assert f"{first['dlg']['psnr']['mean']:.1f}" in markdown
    assert "Step time as a ratio" in markdown
    # Every noise row carries its DP budget: clip 1, sigma 1e-2 buys epsilon ~5.6e3 at delta 1e-5 per round.
    assert "| (b) federated: noise 0.01 (ε = 5.61e+03, δ = 1e-05) per round |" in markdown
    assert [r["dp_epsilon"] is None for r in results["rows"]] == [r.defence_kind != "noise" for r in rows]
    readme = (tiny_out / "readme_section.md").read_text()
    gidm, dlg = first["gidm"]["psnr"]["mean"], first["dlg"]["psnr"]["mean"]
    assert (f"(b) federated: 32 px, eps and t known: GIDM {gidm:.1f} vs DLG {dlg:.1f} "
            f"({gidm - dlg:+.1f}, n = 1: no interval)") in readme
    assert "attack a randomly initialised UNet" in readme  # the tiny suite attacks random:tiny-32, and must say so
    assert "What the paper claims" in readme and "High resolution works" in readme
    control = results["rows"][-1]["methods"]["dlg"]
    side = f"| (b) federated: 32 px, eps and t known | DLG | {first['dlg']['psnr']['mean']:.1f} / "
    assert side in readme and f"| {control['psnr']['mean']:.1f} / {control['lpips']['mean']:.3f} |" in readme
    assert results["cpu_seconds"] > 0
    plots = sorted(p.name for p in tiny_out.glob("*.png"))
    assert any(p.startswith("psnr_vs_time") for p in plots)
    assert "psnr_vs_defence_noise.png" in plots
    for name in plots:
        with Image.open(tiny_out / name) as image:
            assert image.size[0] > 300


def test_cell_is_a_pure_function_of_its_config():
    cell = bench.Cell(method="dlg", model="random:tiny-32", images=("skimage:coffee",), total_iterations=3,
                      report_every=1, device="cpu")
    first, second = bench.run_cell(cell), bench.run_cell(cell)
    assert first["summary"]["psnr"]["mean"] == second["summary"]["psnr"]["mean"]
    assert [p[2] for p in first["runs"][0]["curve"]] == [p[2] for p in second["runs"][0]["curve"]]
    assert bench.Cell.from_dict(json.loads(json.dumps(first["config"]))) == cell
    assert replace(cell, total_iterations=4).id != cell.id and replace(cell).id == cell.id


def test_budget_is_shared_across_methods():
    for method in bench.METHOD_ORDER:
        for budget in (12, 100, 201):
            cell = bench.Cell(method=method, model="random:tiny-32", images=("skimage:coffee",),
                              total_iterations=budget)
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


def test_a_time_budget_stops_a_cell_within_one_step_of_it(one_thread):
    cell = bench.Cell(method="gidm", model="random:tiny-32", images=("skimage:coffee",), total_iterations=1000,
                      ddim_steps=1, seconds=1.0, report_every=1, device="cpu")
    run = bench.run_cell(cell)["runs"][0]
    longest = max(run["phase_step_seconds"].values())
    assert run["clock"] == "cpu" and set(run["phase_step_seconds"]) == {"latent", "pixel"}
    assert 1.0 <= run["seconds"] <= 1.0 + 2 * longest
    assert run["iterations"] > 10  # the budget, not the nominal 1000 iterations, ended it
    assert run["curve"][-1][1] <= run["seconds"] and all(len(point) == 5 for point in run["curve"])


def test_under_a_time_budget_each_phase_gets_its_iterations_share_of_the_time(tiny_model, one_thread):
    import torch

    from gidm_core.config import ThreatModel, attack_config
    from gidm_core.protocol import play

    config = attack_config("gidm", latent_iterations=300, pixel_iterations=700, seconds=1.5, clock="cpu",
                           report_every=1)
    played = play(tiny_model, torch.zeros(1, 3, 32, 32), ThreatModel(), config, client_seed=0, t=[100])
    events = list(played.run)
    switch = next(e.elapsed for e in events if e.phase == "pixel")
    result = played.run.result
    assert 0.3 * 1.5 <= switch <= 0.3 * 1.5 + 0.3  # 30 % of the iterations: 30 % of the time, then one step
    assert result.status == "done" and 1.5 <= result.seconds


def test_every_row_of_the_suites_gives_its_methods_the_same_time_and_names_its_setting():
    for suite in ("quick", "standard", "resolution", "full"):
        rows, _ = bench.build_suite(suite, "cpu")
        for row in rows:
            assert len({c.seconds for c in row.cells}) == 1 and row.cells[0].seconds > 0, row.label
            assert row.label.startswith(("(a) released code: ", "(b) federated: ")), row.label
            if row.setting == "released":
                assert row.cells[0].model.startswith("random:") and row.cells[0].t <= 10
        assert {r.setting for r in rows} == {"released", "federated"}
    cpu_rows, _ = bench.build_suite("full", "cpu")
    gpu_rows, _ = bench.build_suite("full", "cuda")
    extra = [r for r in gpu_rows if r.label not in {c.label for c in cpu_rows}]
    assert [(r.cells[-1].size, r.cells[-1].ddim_steps, r.cells[-1].model) for r in extra] == \
        [(128, 16, "random:ddpm-128")]


def test_the_resolution_suite_pays_each_size_by_its_pixels_and_probes_its_step_time():
    rows, probes = bench.build_suite("resolution", "cpu")
    cells = [c for r in rows for c in r.cells]
    assert sorted({c.size for c in cells}) == [32, 64, 128] == sorted(p.size for p in probes)
    assert {c.seconds / (c.size / 32) ** 2 for c in cells} == {cells[0].seconds}


def test_the_standard_suite_runs_eight_per_cell_within_two_hours_on_two_workers(capsys):
    """n = 8 (image group, client seed) runs in every cell, the rows the issue lists (controls included), and the
    listed attack time on 2 one-thread workers, plus the measured ~3 % of scoring and set-up, within 2 hours."""
    from gidm_core.bench.grid import STANDARD_HOURS

    rows, _ = bench.build_suite("standard", "cpu")
    cells = [c for r in rows for c in r.cells]
    assert all(len(c.groups()) == 8 for c in cells), [(c.id, len(c.groups())) for c in cells if len(c.groups()) != 8]
    assert len({c.id for c in cells}) == len(cells)
    assert {c.control for c in cells} == {"none", "other-image", "noise"}
    assert {c.batch for c in cells} == {1, 4, 8} and {c.t for c in cells} >= {10, 100, 400, 800}
    assert {c.defence for c in cells} >= {(1.0, s, 1.0) for s in (1e-3, 1e-2, 1e-1)} | {(0.0, 0.0, 0.1),
                                                                                          (0.0, 0.0, 0.01)}
    attack_hours = sum(c.seconds * len(c.groups()) for c in cells) / 3600
    assert attack_hours / 2 * 1.03 <= STANDARD_HOURS, attack_hours
    assert main(["bench", "--list", "--suite", "standard", "--out", "unused"]) == 0
    assert f"{attack_hours / 2:.2f} hours on 2 workers" in capsys.readouterr().out


def test_rows_and_methods_pick_a_part_of_a_suite(capsys):
    assert main(["bench", "--list", "--suite", "standard", "--rows", "control", "--methods", "gidm-latent,dlg",
                 "--out", "unused"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 5 and listed[-1].startswith("4 cells in 2 rows, 32 runs")
    assert all("control: " in line and line.split()[-2] in ("gidm-latent", "dlg") for line in listed[:4])
    assert main(["bench", "--list", "--suite", "standard", "--rows", "no such row", "--out", "unused"]) == 2
    assert "select nothing" in capsys.readouterr().err


def test_the_readme_results_section_is_regenerated_byte_identically_from_results_json():
    from gidm_core.bench.report import README_END, README_START, readme_section

    root = Path(__file__).resolve().parent.parent
    standard = root / "docs" / "results" / "standard"  # the README's table is the standard suite's (n = 8 per cell)
    results = json.loads((standard / "results.json").read_text())
    readme = (root / "README.md").read_text()
    between = readme[readme.index(README_START) + len(README_START):readme.index(README_END)]
    assert between == "\n" + readme_section(results)
    assert (standard / "readme_section.md").read_text() == readme_section(results)
