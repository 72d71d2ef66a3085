"""The realistic FedAvg client: AdamW, E local steps over N images in shuffled mini-batches, fresh noise every step,
clipping and dropout. Its delta is torch's training loop's, its draws are its own, and the attacker replays it
exactly from the per-step secrets the paper's threat model reveals."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from gidm_core.attacks.base import AttackContext
from gidm_core.attacks.matching import GradientMatcher
from gidm_core.attacks.timestep import recover_timesteps
from gidm_core.client import (
    LocalSchedule,
    PrivateBatch,
    client_update,
    dropout_masks,
    relative_distance,
    share,
    train_locally,
)
from gidm_core.config import ConfigError, LocalTraining, ThreatModel, attack_config, threat_preset
from gidm_core.diffusion import diffusion_loss
from gidm_core.evaluation import set_accuracy
from gidm_core.images import load_image
from gidm_core.models import RANDOM_ARCHITECTURES, DiffusionModel, load_model, prepare_for_inversion

PAPER, PRIVATE = threat_preset("paper"), threat_preset("private-eps-t")
REALISTIC = LocalTraining(steps=3, lr=1e-2, optimizer="adamw", weight_decay=0.05, local_batch=2, noise="fresh",
                          clip=0.05)


def _tiny(dropout: float = 0.0, dtype: torch.dtype = torch.float32) -> DiffusionModel:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, dropout=dropout, **RANDOM_ARCHITECTURES["tiny"])
    return DiffusionModel(prepare_for_inversion(unet).to(dtype), DDPMScheduler(num_train_timesteps=1000),
                          f"tiny-dropout-{dropout}")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Four distinct 16 px local images in [-1, 1]."""
    generator = torch.Generator().manual_seed(1)
    return (torch.rand((4, 3, 16, 16), generator=generator) * 2 - 1).clamp(-1, 1)


def _torch_training_loop(model: DiffusionModel, batch: PrivateBatch, training: LocalTraining) -> list[torch.Tensor]:
    """The reference: a copy of the UNet trained by torch.optim on its real weights, one `backward` and one
    `clip_grad_norm_` per step, on the batch's per-step draws; returns theta_after - theta_before."""
    unet = copy.deepcopy(model.unet)
    reference = DiffusionModel(unet, model.scheduler, "reference")
    params = list(unet.parameters())
    before = [p.detach().clone() for p in params]
    kwargs = dict(lr=training.lr, weight_decay=training.weight_decay)
    adam = dict(betas=training.betas, eps=training.adam_eps, **kwargs)
    optimizer = {"sgd": lambda: torch.optim.SGD(params, **kwargs), "adam": lambda: torch.optim.Adam(params, **adam),
                 "adamw": lambda: torch.optim.AdamW(params, **adam)}[training.optimizer]()
    schedule = batch.schedule
    for step in range(training.steps):
        images, eps, t = schedule.inputs(step, batch.x0.to(unet.dtype), batch.eps.to(unet.dtype), batch.t)
        optimizer.zero_grad()
        with dropout_masks(reference, training.dropout, schedule.dropout_seed(step)):
            diffusion_loss(reference, images, eps, t).backward()
        if training.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, training.clip)
        optimizer.step()
    return [p.detach() - b for p, b in zip(params, before)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_the_clients_delta_is_torchs_training_loop(images, optimizer):
    """float64, so the comparison sees the algorithm and not float32 rounding: E = 3 steps, shuffled mini-batches
    of 2 out of 4 images, fresh eps and t every step, gradient clipping inside each step, weight decay."""
    model = _tiny(dtype=torch.float64)
    training = replace(REALISTIC, optimizer=optimizer)
    batch = PrivateBatch.draw(images, 1000, seed=7, training=training)
    assert batch.eps.shape == (6, 3, 16, 16) and batch.schedule.order.shape == (3, 2)
    assert len({tuple(row) for row in batch.schedule.order.tolist()}) > 1  # the steps see different images
    x0, eps = batch.x0.double(), batch.eps.double()
    delta = client_update(model, x0, eps, batch.t, training=training, schedule=batch.schedule)
    reference = _torch_training_loop(model, batch, training)
    assert relative_distance(delta, reference) < 1e-6
    # Each feature changes the delta, so the comparison above would catch any of them done wrong.
    for other in (dict(clip=0.0), dict(weight_decay=0.0), dict(steps=2)):
        changed = replace(training, **other)
        schedule = LocalSchedule(batch.schedule.order[:changed.steps], True)
        assert relative_distance(client_update(model, x0, eps, batch.t, training=changed, schedule=schedule),
                                 reference) > 1e-3


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_trainers_loop_is_the_clients_update(images, optimizer):
    """`train_locally` (the FedAvg trainer's loop: a torch optimiser stepping the delta) on one batch is
    `client_update`."""
    model = _tiny(dtype=torch.float64)
    training = LocalTraining(steps=3, lr=1e-2, optimizer=optimizer)
    batch = PrivateBatch.draw(images, 1000, seed=2)
    x0, eps = batch.x0.double(), batch.eps.double()
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=training.lr), "adam": lambda p: torch.optim.Adam(p, lr=training.lr)}
    run = train_locally(model, lambda _: (x0, eps, batch.t), training.steps, make[optimizer])
    assert relative_distance(run.delta, client_update(model, x0, eps, batch.t, training=training)) < 1e-9


def test_dropout_masks_are_the_clients_own_and_replayable(images):
    model = _tiny(dropout=0.1)
    training = replace(REALISTIC, dropout=0.1, clip=0.0)
    batch = PrivateBatch.draw(images, 1000, seed=3, training=training)
    state = torch.random.get_rng_state()
    sent = share(model, batch, PAPER, seed=3, training=training)
    assert torch.equal(torch.random.get_rng_state(), state)  # masks come from their own seed, not the global RNG
    assert not model.unet.training  # and the UNet is back in eval mode
    again = share(model, PrivateBatch.draw(images, 1000, seed=3, training=training), PAPER, seed=3,
                  training=training)
    other = share(model, PrivateBatch.draw(images, 1000, seed=4, training=training), PAPER, seed=4,
                  training=training)
    assert all(torch.equal(a, b) for a, b in zip(sent.gradients, again.gradients))
    # Another seed draws other masks: the same images, eps and t with only the dropout seeds changed differ.
    reseeded = LocalSchedule(batch.schedule.order, True, tuple(s + 1 for s in batch.schedule.dropout_seeds))
    assert relative_distance(client_update(model, batch.x0, batch.eps, batch.t, training=training,
                                             schedule=reseeded), sent.gradients) > 1e-2
    assert batch.schedule.dropout_seeds != other.schedule.dropout_seeds
    # The paper's attacker replays the masks; one without them (eval mode) cannot.
    assert sent.schedule.dropout_seeds == batch.schedule.dropout_seeds
    blind = share(model, batch, ThreatModel(knows_masks=False), seed=3, training=training)
    assert blind.schedule.dropout_seeds == () and torch.equal(blind.schedule.order, batch.schedule.order)
    exact = GradientMatcher(model, sent)(batch.x0, batch.eps, batch.t, create_graph=False)
    maskless = GradientMatcher(model, blind)(batch.x0, batch.eps, batch.t, create_graph=False)
    assert float(exact.detach()) < 1e-6 * float(maskless.detach())


def test_a_model_without_dropout_layers_cannot_train_with_dropout(tiny_model):
    layerless = DiffusionModel(torch.nn.Sequential(), tiny_model.scheduler, "no-dropout")
    with pytest.raises(ConfigError, match="no dropout layers"):
        with dropout_masks(layerless, 0.1, seed=1):
            pass


def test_the_paper_attacker_replays_the_shared_delta_exactly(images):
    """With every step's eps, t and batch order revealed, the matcher's differentiable re-simulation on the true
    images is the delta the client sent; without the order (private) it is not."""
    model = _tiny()
    batch = PrivateBatch.draw(images, 1000, seed=11, training=REALISTIC)
    update = share(model, batch, PAPER, seed=11, training=REALISTIC)
    assert torch.equal(update.eps, batch.eps) and torch.equal(update.schedule.order, batch.schedule.order)
    x0 = batch.x0.clone().requires_grad_(True)
    simulated = client_update(model, x0, update.eps, update.t, True, update.training, update.schedule)
    assert simulated[0].requires_grad and relative_distance(simulated, update.gradients) < 1e-4
    matcher = GradientMatcher(model, update)
    assert float(matcher(batch.x0, batch.eps, batch.t).detach()) < 1e-7 * float(
        matcher(batch.x0.flip(0), batch.eps, batch.t).detach())
    hidden = share(model, batch, PRIVATE, seed=11, training=REALISTIC)
    assert hidden.eps is None and hidden.t is None and hidden.schedule.dropout_seeds == ()
    assert not torch.equal(hidden.schedule.order, batch.schedule.order)  # the shuffle stays on the client


def test_the_clients_draws_are_its_own(images):
    """Batch order, fresh eps and t come from the client's stream: reproducible from its seed, unaffected by the
    global RNG, and unrelated to the attacker's draws under the same seed."""
    torch.manual_seed(123)
    first = PrivateBatch.draw(images, 1000, seed=5, training=REALISTIC)
    torch.manual_seed(456)
    again = PrivateBatch.draw(images, 1000, seed=5, training=REALISTIC)
    other = PrivateBatch.draw(images, 1000, seed=6, training=REALISTIC)
    assert torch.equal(first.eps, again.eps) and torch.equal(first.schedule.order, again.schedule.order)
    assert not torch.equal(first.eps, other.eps) and not torch.equal(first.t, other.t)
    model = _tiny()
    update = share(model, first, PRIVATE, seed=5, training=REALISTIC)
    ctx = AttackContext(model, update, PRIVATE, attack_config("dlg", attack_seed=5))
    guess = ctx.randn((update.secrets, 3, 16, 16))  # the attacker's first draw, shaped like the client's eps
    assert update.secrets == 6
    assert abs(float(torch.corrcoef(torch.stack([guess.flatten(), first.eps.flatten()]))[0, 1])) < 0.05


def test_every_fresh_timestep_is_read_off_the_delta(images):
    """E = 3 steps of B = 2 with fresh noise: the time embedding's weight delta spans all six embeddings; the
    private threat model's attacker reads them back as a set."""
    model = _tiny()
    training = LocalTraining(steps=3, lr=1e-3, local_batch=2, noise="fresh")
    batch = PrivateBatch.draw(images[:2], 1000, seed=2, training=training)
    assert len(set(batch.t.tolist())) == 6
    estimate = recover_timesteps(model, share(model, batch, PRIVATE, seed=2, training=training))
    assert estimate.t.numel() == 6 and estimate.confident
    assert set_accuracy(estimate.t.tolist(), batch.t.tolist()) == 1.0


def test_sixteen_fresh_timesteps_are_read_off_a_trained_models_delta():
    """faces32, two held-out faces, E = 8 steps of B = 2 with fresh noise: 16 timesteps in a 32-wide embedding.
    Measured: set accuracy 1.0 for client seeds 0, 1 and 2 (docs/realistic_clients.md)."""
    model = load_model("faces32")
    faces = torch.cat([load_image(name, 32) for name in ("face-05", "face-17")])
    training = LocalTraining(steps=8, lr=1e-3, local_batch=2, noise="fresh")
    batch = PrivateBatch.draw(faces, model.num_train_timesteps, seed=1, training=training)
    estimate = recover_timesteps(model, share(model, batch, PRIVATE, seed=1, training=training))
    assert estimate.t.numel() == 16 and set_accuracy(estimate.t.tolist(), batch.t.tolist()) >= 0.9


@pytest.mark.parametrize("fields, field", [
    ({"optimizer": "lion"}, "optimizer"), ({"betas": (0.9, 1.0)}, "betas"), ({"adam_eps": 0.0}, "adam_eps"),
    ({"weight_decay": -1.0}, "weight_decay"), ({"weight_decay": float("inf")}, "weight_decay"),
    ({"local_batch": -1}, "local_batch"), ({"local_batch": 1.5}, "local_batch"), ({"noise": "new"}, "noise"),
    ({"clip": -0.1}, "clip"), ({"dropout": 1.0}, "dropout"), ({"dropout": float("nan")}, "dropout")])
def test_bad_realistic_training_is_refused_naming_its_field(fields, field):
    with pytest.raises(ConfigError) as refused:
        LocalTraining(**fields)
    assert refused.value.field == field


def test_impossible_draws_are_refused(images):
    with pytest.raises(ConfigError, match="larger than the client's"):
        PrivateBatch.draw(images, 1000, seed=0, training=LocalTraining(local_batch=5))
    with pytest.raises(ConfigError, match="fixed t"):
        PrivateBatch.draw(images, 1000, seed=0, t=[10], training=LocalTraining(noise="fresh"))
    with pytest.raises(ConfigError, match="per-step secrets"):
        share(_tiny(), PrivateBatch.draw(images, 1000, seed=0), PAPER, training=REALISTIC)


def test_a_benchmark_cell_attacks_a_realistic_client():
    """The "realistic clients" row group's cells: N = 2 images, E = 2 steps of B = 1, fresh noise; the cell's id
    names the client (FedSGD cells keep the ids they had), and its JSON reads back as the same cell."""
    import json
    from dataclasses import asdict

    from gidm_core.bench.cells import run_cell
    from gidm_core.bench.grid import build_suite
    from gidm_core.bench.jobs import Cell

    client = (("local_batch", 1), ("noise", "fresh"), ("steps", 2))
    cell = Cell(method="dlg", model="random:tiny-32", images=("face-05", "face-17"), batch=2, total_iterations=2,
                report_every=1, client=client)
    assert cell.id != replace(cell, client=()).id and Cell.from_dict(json.loads(json.dumps(asdict(cell)))) == cell
    run = run_cell(cell)["runs"][0]
    assert run["status"] == "done" and len(run["t_true"]) == 2 and run["iterations"] == 2
    rows = [r for r in build_suite("full", "cpu")[0] if r.group == "realistic clients"]
    assert {c.method for r in rows for c in r.cells} == {"dlg", "gidm"} and all(c.client for r in rows for c in r.cells)
