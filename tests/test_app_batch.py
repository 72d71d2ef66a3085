"""The app's batch view: the separation's outcome in the status line (its residual, or the attack's refusal), each
private image beside its reconstruction paired by the timesteps, and a batch of 16 at 32 px run end to end.

Runs go through `runner.stream`, the generator the Run button streams, on a random tiny UNet with a few iterations.
"""

from __future__ import annotations

import re

import pytest
import torch

from app.export import metrics_report
from app.handlers import compare
from app.images import pairing
from app.runner import stream
from app.session import Session
from app.settings import Settings

TINY = dict(model="random:tiny-32", gallery=[], method="dlg", pixel_iterations=6, latent_iterations=0,
            report_every=2, plateau=0)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    return one_thread


def _run(session: Session | None = None, **overrides) -> list:
    return list(stream(session or Session(), Settings.from_preset(**{**TINY, **overrides}), min_interval=0))


def _batch_line(status: str) -> str:
    lines = [line for line in status.split("  \n") if line.startswith("*Batch:* ")]
    assert len(lines) == 1, status
    return lines[0]


def test_a_distinct_t_batch_shows_its_residual_and_pairs_by_t():
    frames = _run(batch_size=4)  # the client draws four distinct timesteps (client seed 0)
    live = [f for f in frames if f.status.startswith("**Iteration")]
    final = frames[-1]
    assert live and final.status.startswith("**Finished**"), [f.status for f in frames]
    for frame in (live[-1], final):
        line = _batch_line(frame.status)
        assert re.match(r"\*Batch:\* separated 4 samples through \d+ time-conditioned layers \(residual "
                        r"\d\.\de-\d\d", line), line
        assert float(re.search(r"residual (\S+?)[);]", line).group(1)) < 1e-3
        assert "dB" not in line and "PSNR" not in line, "the attacker's line holds no score"
        assert frame.pairs.count('<figure class="pair"') == 4
        assert "paired by timestep: the attack's own pairing" in frame.pairs
        assert len(re.findall(r"<figcaption>t \d+ · -?[\d.]+ dB</figcaption>", frame.pairs)) == 4
    assert final.finished.paired_by_t and final.finished.separation == _batch_line(final.status)[len("*Batch:* "):]
    report = metrics_report(final.finished)  # the export's metrics.json
    assert report["paired_by_t"] and report["separation"].startswith("separated 4 samples")


def test_an_equal_t_batch_shows_the_attacks_refusal_and_pairs_by_likeness():
    frames = _run(batch_size=3, client_t=400)
    final = frames[-1]
    assert final.status.startswith("**Finished**"), final.status
    line = _batch_line(final.status)
    assert line.startswith("*Batch:* not separated: the batch shares timesteps (t = [400, 400, 400])"), line
    assert "residual" not in line
    assert "paired by likeness" in final.pairs and not final.finished.paired_by_t


def test_private_timesteps_read_off_the_update_pair_the_batch():
    """GIDM+ reads the t's sorted, not in the client's order: the view still pairs each image with its own slot."""
    final = _run(method="gidm-plus", secrets="private", batch_size=3, latent_iterations=2, ddim_steps=1)[-1]
    record = final.finished
    assert record.t_estimate == sorted(record.t_true) != record.t_true, (record.t_estimate, record.t_true)
    assert record.paired_by_t and "paired by timestep" in final.pairs
    assert "separated 3 samples" in _batch_line(final.status)


def test_a_batch_of_16_runs_at_32_px():
    frames = _run(batch_size=16, pixel_iterations=3)
    final = frames[-1]
    assert final.status.startswith("**Finished**"), final.status
    assert len(final.finished.victims) == 16 and final.pairs.count('<figure class="pair"') == 16
    assert "separated 16 samples" in _batch_line(final.status)


def test_the_compare_view_shows_the_whole_batch_originals_above_reconstructions():
    session = Session()
    record = _run(session, batch_size=5, pixel_iterations=2)[-1].finished
    picture, _, table = compare(session, record.label, None)
    scale = picture.width // (5 * 32)
    assert picture.size == (5 * 32 * scale, 2 * 32 * scale) and record.label.split(" (")[0] in table


def test_one_image_keeps_the_three_pictures_and_no_batch_line():
    frames = _run(batch_size=1, pixel_iterations=2)
    assert frames[0].pairs == "", "a run's first frame clears the last run's batch view"
    assert frames[-1].pairs is None and "*Batch:*" not in frames[-1].status


def test_pairing_follows_the_timesteps_and_falls_back_to_likeness():
    truth = torch.rand(4, 3, 8, 8) * 2 - 1
    slots = torch.tensor([2, 0, 3, 1])  # slot k holds original slots[k]
    recon = truth[slots]
    t_true = [10, 20, 30, 40]
    order, by_t = pairing(recon, truth, [t_true[i] for i in slots.tolist()], t_true)
    assert by_t and torch.equal(recon[order], truth)
    decoy = recon.flip(0)  # the timesteps, not the pictures, decide: likeness would pair these differently
    order, by_t = pairing(decoy, truth, [t_true[i] for i in slots.tolist()], t_true)
    assert by_t and order.tolist() == [[2, 0, 3, 1].index(i) for i in range(4)]
    order, by_t = pairing(recon, truth, [50] * 4, [50] * 4)  # equal t: the evaluator's pairing by likeness
    assert not by_t and torch.equal(recon[order], truth)
    one = truth[:1]  # fresh noise at every local step: one t per step, none of them says which image is which
    order, by_t = pairing(one, one, [10, 20], [10, 20])
    assert not by_t and order.tolist() == [0]


def test_stop_before_the_first_image_says_stopped():
    """Stop pressed while a batch's round is still being set up (the browser test's race): the status says the run
    stopped, not that it failed."""
    session = Session()
    frames = stream(session, Settings.from_preset(**{**TINY, "batch_size": 2, "pixel_iterations": 50}),
                    min_interval=0)
    assert next(frames).status.startswith("Loading")
    session.stop()
    last = list(frames)[-1]
    assert last.status == "**Stopped** before the attack's first image." and not last.error, last.status
