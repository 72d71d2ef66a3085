"""Every command refuses bad input in one line (exit 2) before it loads anything, and leaves nothing behind.

Each case went wrong before this table existed: a traceback, a hang, a silent change of meaning, or a run that wrote
a NaN checkpoint (docs/robustness.md has the before/after of each).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from gidm_core.cli import main

BIG = str(os.cpu_count() * 1000)


class _Crafted:
    """A pickle that would run a shell command on load (what a hostile checkpoint carries)."""

    def __reduce__(self):
        return os.system, ("touch crafted-ran",)


def _state_folder(root: Path, kind: str) -> Path:
    folder = root / f"state-{kind}"
    folder.mkdir()
    path = folder / "training_state.pt"
    if kind == "crafted":
        torch.save({"config": _Crafted()}, path)
    else:
        path.write_bytes(b"PK\x03\x04 not a checkpoint at all" * 8)
    return folder


# (argv with {out}, {file} and {tmp} placeholders, what the one line must say)
CASES = [
    (["bench", "--out", "{file}"], "is a file, not a folder"),
    (["bench", "--out", "{file}/sub"], "is a file, not a folder"),
    (["bench", "--out", "/proc/gidm-bench"], "not a place for results"),
    (["bench", "--out", "{out}", "--workers", "0"], "--workers must be between 1 and"),
    (["bench", "--out", "{out}", "--workers", "-1"], "--workers must be between 1 and"),
    (["bench", "--out", "{out}", "--workers", BIG], "--workers must be between 1 and"),
    (["bench", "--out", "{out}", "--threads", "-3"], "--threads must be between 0 and"),
    (["bench", "--out", "{out}", "--ray", "--address", "127.0.0.1:1"], "no Ray head answers there"),
    (["train", "--out", "{file}"], "is a file, not a folder"),
    (["train", "--out", "{file}/sub"], "is a file, not a folder"),
    (["train", "--out", "/proc/gidm-train"], "not a place for results"),
    (["train", "--out", "{out}", "--resume", "{tmp}/state-crafted"], "refused, not a training state"),
    (["train", "--out", "{out}", "--resume", "{tmp}/state-corrupt"], "refused, not a training state"),
    (["train", "--out", "{out}", "--checkpoint-every", "0"], "checkpoint interval must be >= 1"),
    (["train", "--out", "{out}", "--size", "100000"], "image size must be in [8, 256]"),
    (["train", "--out", "{out}", "--lr", "inf"], "learning rate must be a finite number > 0"),
    (["train", "--out", "{out}", "--grad-clip", "-1"], "gradient clip must be a finite number >= 0"),
    (["train", "--out", "{out}", "--threads", "-1"], "--threads must be between 0 and"),
    (["train", "--out", "{out}", "--threads", BIG], "--threads must be between 0 and"),
    (["federate", "--out", "{out}", "--model-config", "small-100000"], "image size must be in [8, 256]"),
    (["federate", "--out", "{out}", "--threads", BIG], "--threads must be between 1 and"),
    (["federate", "--out", "{out}", "--cpus", BIG], "--cpus must be between 0 and"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a[:1] + a[3:]) or a[0] for a, _ in CASES])
def test_every_command_refuses_in_one_line_and_writes_nothing(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    (tmp_path / "a-file").write_text("results go elsewhere")
    for kind in ("crafted", "corrupt"):
        _state_folder(tmp_path, kind)
    before = sorted(tmp_path.rglob("*"))
    fill = dict(out=str(tmp_path / "out"), file=str(tmp_path / "a-file"), tmp=str(tmp_path))
    started = time.perf_counter()
    code = main([a.format(**fill) for a in argv])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "weights_only" not in err and "Traceback" not in err
    assert sorted(tmp_path.rglob("*")) == before, "a refused command left something behind"
    assert seconds < 10, f"took {seconds:.1f} s to refuse"


def _tiny_dlg(plateau: int, iterations: int):
    from skimage import data as skdata

    from gidm_core.config import ThreatModel, attack_config
    from gidm_core.images import load_image
    from gidm_core.models import random_model
    from gidm_core.protocol import play

    config = attack_config("dlg", pixel_iterations=iterations, plateau=plateau)
    image = load_image(skdata.astronaut(), 16)
    return play(random_model("tiny", 16), image, ThreatModel(), config, client_seed=1).run.run_to_end()


def test_a_converged_run_stops_early_and_says_so(one_thread):
    result = _tiny_dlg(plateau=5, iterations=400)
    assert result.status == "done" and result.iterations < 120, (result.iterations, result.message)
    assert result.message.startswith(f"converged at iteration {result.iterations}")


def test_plateau_off_runs_the_whole_budget(one_thread):
    result = _tiny_dlg(plateau=0, iterations=120)  # past where the plateau rule stops the same run (86)
    assert result.status == "done" and result.iterations == 120 and result.message == "finished"


def test_cli_refuses_a_negative_plateau(capsys):
    assert main(["attack", "--image", "face-05", "--plateau", "-1"]) == 2
    assert "plateau window must be >= 0" in capsys.readouterr().err
