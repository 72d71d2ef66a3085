"""FedAvg training of a diffusion model over simulated clients: the process that makes the bundled models.

Each round the server broadcasts the global UNet; each of N clients copies it, takes E local steps on its own shard
of the data (its loss is `diffusion.diffusion_loss`, the very function the attacked client and the attacks call),
and sends back its weights; the server averages them weighted by shard size and keeps an EMA of the global model.

Clients keep their own optimiser state across rounds (a cross-silo client is a persistent device); only weights
leave a client. Checkpoints are diffusers pipeline folders (model_index.json, unet/, scheduler/), loadable with
`UNet2DModel.from_pretrained(dir / "unet")`, `DDPMPipeline.from_pretrained(dir)` or
`models.load_model(dir, allow_local=True)`; the `unet/` of a checkpoint holds the EMA weights (the published model),
`training_state.pt` everything to resume.
"""

from __future__ import annotations

import json
import math
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel

from ..client import train_locally
from ..diffusion import diffusion_loss
from ..faces import DATASETS, Augmenter, ImageSet, load_dataset, training_record
from ..models import MAX_IMAGE_SIZE, RANDOM_ARCHITECTURES, DiffusionModel

# The bundled models' architectures: the random-init ones plus a 4-level UNet whose full-resolution level is narrow,
# so that a ~1 M-parameter model trains and is attacked at 64 px about as fast as "small" at 32 px.
ARCHITECTURES: dict[str, dict] = {
    **RANDOM_ARCHITECTURES,
    "small4": dict(
        block_out_channels=(16, 32, 64, 64),
        down_block_types=("DownBlock2D",) * 4,
        up_block_types=("UpBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
    ),
}
STATE_FILE = "training_state.pt"
RECORD_FILE = "training.json"
_STATE_KEYS = {"config", "global", "ema", "client_optim", "generator", "round", "history", "seconds"}


@dataclass
class TrainConfig:
    dataset: str = "lfw-faces"
    size: int = 32
    arch: str = "small"
    clients: int = 4
    clients_per_round: int = 0  # FedAvg's fraction C as a count: 0 means every client, every round
    rounds: int = 100
    local_steps: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    optimizer: str = "adam"
    grad_clip: float = 1.0
    ema_decay: float = 0.95
    augment: bool = True
    seed: int = 0
    checkpoint_every: int = 10
    channels: int = 3

    def __post_init__(self) -> None:
        checks = [
            (self.dataset in DATASETS, f"unknown dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}"),
            (self.arch in ARCHITECTURES, f"unknown architecture {self.arch!r}: choose one of {', '.join(ARCHITECTURES)}"),
            (self.optimizer in ("adam", "sgd"), f"client optimizer must be adam or sgd, got {self.optimizer!r}"),
            (self.clients >= 1 and self.rounds >= 1 and self.local_steps >= 1 and self.batch_size >= 1,
             "clients, rounds, local steps and batch size must all be >= 1"),
            (0 <= self.clients_per_round <= self.clients,
             f"clients per round must be in [0, {self.clients}], got {self.clients_per_round}"),
            (math.isfinite(self.lr) and self.lr > 0, f"learning rate must be a finite number > 0, got {self.lr}"),
            (math.isfinite(self.grad_clip) and self.grad_clip >= 0,
             f"gradient clip must be a finite number >= 0 (0: off), got {self.grad_clip}"),
            (0 <= self.ema_decay < 1, f"EMA decay must be in [0, 1), got {self.ema_decay}"),
            (8 <= self.size <= MAX_IMAGE_SIZE, f"image size must be in [8, {MAX_IMAGE_SIZE}] px, got {self.size}"),
            (self.checkpoint_every >= 1, f"checkpoint interval must be >= 1 round, got {self.checkpoint_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        factor = 2 ** (len(ARCHITECTURES[self.arch]["block_out_channels"]) - 1)
        if self.size % factor:
            raise ValueError(f"image size {self.size} must be a multiple of {factor} for architecture {self.arch}")


def make_scheduler() -> DDPMScheduler:
    """The bundled models' schedule: 1000 DDPM steps, linear betas, epsilon prediction, clipped samples."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         prediction_type="epsilon", clip_sample=True)


def make_unet(config: TrainConfig) -> UNet2DModel:
    torch.manual_seed(config.seed)
    return UNet2DModel(sample_size=config.size, in_channels=config.channels, out_channels=config.channels,
                       **ARCHITECTURES[config.arch])


def shards(count: int, clients: int, seed: int) -> list[np.ndarray]:
    """A seeded partition of range(count) into `clients` disjoint, near-equal shards (IID)."""
    if clients > count:
        raise ValueError(f"{clients} clients for {count} images: each client needs at least one")
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(s) for s in np.array_split(order, clients)]


def _state(unet: UNet2DModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in unet.state_dict().items()}


class FedAvgTrainer:
    """FedAvg over `config.clients` simulated clients; `run()` yields one progress dict per round."""

    def __init__(self, config: TrainConfig, out: Path | None = None, log=None) -> None:
        self.config = config
        self.out = Path(out) if out else None
        self.log = log or (lambda line: None)
        self.data: ImageSet = load_dataset(config.dataset)
        self.images = self.data.tensors(config.size, config.channels)
        self.shards = shards(len(self.data), config.clients, config.seed)
        self.scheduler = make_scheduler()
        self.unet = make_unet(config)  # the working copy every client trains on in turn
        self.global_state = _state(self.unet)
        self.ema_state = {k: v.clone() for k, v in self.global_state.items()}
        self.client_optim: list[dict | None] = [None] * config.clients
        self.generator = torch.Generator().manual_seed(config.seed)
        self.augment = Augmenter() if config.augment else None
        self.round = 0
        self.history: list[dict] = []
        self.seconds = 0.0

    # --- one round -------------------------------------------------------------------------------------------
    def _optimizer(self, params: list[torch.Tensor]) -> torch.optim.Optimizer:
        if self.config.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.config.lr)
        return torch.optim.SGD(params, lr=self.config.lr)

    def client_batch(self, client: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A client's private batch for one local step: (x0, eps, t), drawn from the trainer's seeded generator."""
        shard = self.shards[client]
        pick = torch.randint(0, len(shard), (self.config.batch_size,), generator=self.generator)
        x0 = self.images[torch.as_tensor(shard)[pick]]
        if self.augment is not None:
            x0 = self.augment(x0, self.generator)
        eps = torch.randn(x0.shape, generator=self.generator)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (x0.shape[0],), generator=self.generator)
        return x0, eps, t

    def local_update(self, client: int) -> tuple[dict[str, torch.Tensor], float]:
        """Client `client` starts from the global weights, takes E steps of the client's own loop
        (`client.train_locally`, which the Flower ClientApp runs too) and returns its weights."""
        self.unet.load_state_dict(self.global_state)
        self.unet.train()
        model = DiffusionModel(self.unet, self.scheduler, f"client-{client}")
        run = train_locally(model, lambda _: self.client_batch(client), self.config.local_steps, self._optimizer,
                            self.config.grad_clip, self.client_optim[client])
        self.client_optim[client] = run.optimizer_state
        weights = dict(self.global_state)
        for (name, _), d in zip(self.unet.named_parameters(), run.delta):
            weights[name] = self.global_state[name] + d
        return weights, float(np.mean(run.losses))

    def step_round(self) -> dict:
        start = time.perf_counter()
        chosen = list(range(self.config.clients))
        if 0 < self.config.clients_per_round < self.config.clients:
            order = torch.randperm(self.config.clients, generator=self.generator)
            chosen = sorted(order[:self.config.clients_per_round].tolist())
        total = sum(len(self.shards[c]) for c in chosen)
        average = {k: torch.zeros_like(v) for k, v in self.global_state.items()}
        losses = []
        for client in chosen:
            weights, loss = self.local_update(client)
            share = len(self.shards[client]) / total
            for k, v in weights.items():
                if v.is_floating_point():
                    average[k] += share * v
                else:
                    average[k] = v
            losses.append(loss)
        self.global_state = average
        self.round += 1
        decay = min(self.config.ema_decay, (1 + self.round) / (10 + self.round))
        for k, v in self.global_state.items():
            if v.is_floating_point():
                self.ema_state[k].mul_(decay).add_(v, alpha=1 - decay)
            else:
                self.ema_state[k] = v.clone()
        seconds = time.perf_counter() - start
        self.seconds += seconds
        entry = {"round": self.round, "loss": float(np.mean(losses)), "clients": chosen, "client_losses": losses,
                 "seconds": round(seconds, 3), "elapsed": round(self.seconds, 1)}
        self.history.append(entry)
        return entry

    def run(self):
        """Train up to `config.rounds`, checkpointing every `checkpoint_every` rounds and at the end."""
        while self.round < self.config.rounds:
            entry = self.step_round()
            yield entry
            last = self.round == self.config.rounds
            if self.out and (last or self.round % self.config.checkpoint_every == 0):
                self.save(self.out / f"round-{self.round:04d}")

    # --- models and checkpoints ------------------------------------------------------------------------------
    def model(self, ema: bool = True) -> DiffusionModel:
        """A copy of the global (or EMA) model as a `DiffusionModel`, float32, eval mode."""
        unet = make_unet(self.config)
        unet.load_state_dict(self.ema_state if ema else self.global_state)
        return DiffusionModel(unet.eval(), make_scheduler(), f"fedavg-round-{self.round}")

    def eval_loss(self, batches: int = 4, ema: bool = True, seed: int = 1234) -> float:
        """The diffusion loss on fixed draws from the whole training set (see `eval_loss`)."""
        return eval_loss(self.model(ema), self.images, batches, seed)

    def save(self, folder: Path) -> Path:
        record = {
            "round": self.round, "config": asdict(self.config), "weights": "EMA of the FedAvg global model",
            "client_shard_sizes": [len(s) for s in self.shards], "train_seconds": round(self.seconds, 1),
            "last_loss": self.history[-1]["loss"] if self.history else None,
            "history": [{k: e[k] for k in ("round", "loss", "elapsed")} for e in self.history],
            "training_set": training_record(self.data),
        }
        folder = save_pipeline(self.model(ema=True), folder, record)
        torch.save({"round": self.round, "config": asdict(self.config), "global": self.global_state,
                    "ema": self.ema_state, "client_optim": self.client_optim,
                    "generator": self.generator.get_state(), "history": self.history, "seconds": self.seconds},
                   folder / STATE_FILE)
        return folder

    @classmethod
    def resume(cls, folder: Path, out: Path | None = None, rounds: int | None = None, log=None) -> FedAvgTrainer:
        """A trainer that continues exactly where the checkpoint in `folder` stopped (optionally to more rounds)."""
        state_path = Path(folder) / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"{folder} has no {STATE_FILE}: not a trainer checkpoint")
        # weights_only: tensors, numbers, strings and containers only; a crafted file cannot run code on load. A file
        # it refuses, or one that is not a state this trainer saved, is a user's error in one line.
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or not _STATE_KEYS <= set(state):
                raise KeyError("missing parts")
            config = TrainConfig(**{**state["config"], **({"rounds": rounds} if rounds else {})})
        except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{state_path}: refused, not a training state saved by this trainer "
                             f"({type(err).__name__}); nothing in it was run") from None
        trainer = cls(config, out, log)
        trainer.global_state, trainer.ema_state = state["global"], state["ema"]
        trainer.client_optim = state["client_optim"]
        trainer.generator.set_state(state["generator"])
        trainer.round, trainer.history, trainer.seconds = state["round"], state["history"], state["seconds"]
        return trainer


def eval_loss(model: DiffusionModel, images: torch.Tensor, batches: int = 4, seed: int = 1234) -> float:
    """The diffusion loss on fixed draws (images, eps, t) of 16 from `images`, without augmentation: comparable
    across rounds and runs because the draws depend on `seed` alone."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    with torch.no_grad():
        for _ in range(batches):
            pick = torch.randint(0, len(images), (16,), generator=generator)
            x0 = images[pick]
            eps = torch.randn(x0.shape, generator=generator)
            t = torch.randint(0, model.num_train_timesteps, (x0.shape[0],), generator=generator)
            values.append(diffusion_loss(model, x0, eps, t).item())
    return float(np.mean(values))


def save_pipeline(model: DiffusionModel, folder: Path, record: dict) -> Path:
    """A checkpoint in the bundled models' format: a diffusers DDPMPipeline folder (safetensors) with the
    training record beside it as training.json; `models.load_model(folder, allow_local=True)` loads it."""
    folder = Path(folder)
    DDPMPipeline(unet=model.unet, scheduler=model.scheduler).save_pretrained(folder, safe_serialization=True)
    (folder / RECORD_FILE).write_text(json.dumps(record, indent=1))
    return folder


# --- sampling (for model cards) ----------------------------------------------------------------------------------
@torch.no_grad()
def sample(model: DiffusionModel, count: int = 16, steps: int = 100, seed: int = 0) -> torch.Tensor:
    """`count` images in [-1, 1] from deterministic DDIM (eta 0) with `steps` steps, seeded."""
    scheduler = DDIMScheduler.from_config(model.scheduler.config, clip_sample=True, set_alpha_to_one=True)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((count, model.channels, model.image_size, model.image_size), generator=generator)
    model.unet.eval()
    for t in scheduler.timesteps:
        output = model.unet(x, t).sample
        x = scheduler.step(output, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)


__all__ = ["ARCHITECTURES", "FedAvgTrainer", "TrainConfig", "eval_loss", "make_scheduler", "sample", "save_pipeline",
           "shards"]
