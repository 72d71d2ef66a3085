"""The reference toolkit breaching (Geiping et al., `breaching==0.1.2`) run against this project's problem, as a peer.

breaching attacks a model through `loss_fn(model(x), labels)`. A diffusion client's update is the gradient of
||UNet(x_t, t) - target||^2 with x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, so `DenoisingResidual` (a torch
module whose parameters are exactly the UNet's, in order) maps candidate images x0 to the UNet's prediction minus its
training target at the known eps and t, and `residual_loss` (which ignores labels) squares and averages it: its
gradient is the client's update (`client.client_update`), tested. Both are torch only; breaching itself is
imported only by `breaching_attack`, so the project works without it.

breaching sees only what this project's attacks see: the model, the shared update, and eps and t as far as the
threat model reveals them (the paper's setting: both). Its initial guess comes from the attacker's stream.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..client import SharedUpdate
from ..diffusion import q_sample, training_target
from ..errors import UsageError
from ..methods import PEER_INSTALL_HINT, PEER_METHODS
from ..models import DiffusionModel
from ..seeds import stream

# What is changed in a shipped config, and why: modern's feature regulariser compares the input of the model's last
# linear layer with the one a classifier's head gradient reveals (weight / bias per label); a UNet has no such
# head (its last tensors are a convolution's), so the term cannot be formed and is switched off.
CONFIG_CHANGES = {"breaching-modern": ("regularization.features.scale=0.0",)}


class DenoisingResidual(torch.nn.Module):
    """x0 -> UNet(x_t, t) - target(x0, eps, t) at fixed, known eps and t (buffers, as the attacker knows them).

    The UNet is the only submodule, so `parameters()` are the UNet's in `named_parameters` order: the order of a
    `SharedUpdate`'s gradients, which is how breaching pairs them."""

    def __init__(self, model: DiffusionModel, eps: torch.Tensor, t: torch.Tensor) -> None:
        super().__init__()
        self.unet = model.unet
        self.prediction_type = model.prediction_type
        self.register_buffer("eps", eps.detach().clone())
        self.register_buffer("t", t.detach().clone().long())
        self.register_buffer("alphas_cumprod", model.scheduler.alphas_cumprod.detach().clone())

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        # `diffusion.py`'s forward process and target, read from this module's own buffers (a deep copy of the
        # module, as breaching makes, then carries everything it needs).
        schedule = SimpleNamespace(scheduler=SimpleNamespace(alphas_cumprod=self.alphas_cumprod),
                                   prediction_type=self.prediction_type)
        eps, t = self.eps.to(x0), self.t.to(x0.device)
        x_t = q_sample(schedule, x0, eps, t)
        return self.unet(x_t, t).sample - training_target(schedule, x0, eps, t)


def residual_loss(residual: torch.Tensor, labels: object = None) -> torch.Tensor:
    """The client's training loss given the residual: its mean square (`F.mse_loss`'s reduction). Labels, which a
    classifier's loss would use, are ignored: a diffusion model has none."""
    return residual.pow(2).mean()


def require_breaching() -> None:
    """One `UsageError` line saying how to install breaching when it is missing (found, not imported: importing
    it compiles TorchScript)."""
    if importlib.util.find_spec("breaching") is None:
        raise UsageError(PEER_INSTALL_HINT)


@dataclass(frozen=True)
class PeerResult:
    """breaching's answer: images in [-1, 1] (B, C, H, W), loss evaluations made, attack CPU/wall seconds, its own
    objective at the answer (breaching picks by it, as ours pick by matching loss), and its settings."""

    reconstruction: torch.Tensor
    evaluations: int
    seconds: float
    objective: float | None
    max_iterations: int
    config: dict


class _Budget:
    """Counts loss evaluations and, once `seconds` of the clock are spent, interrupts breaching's loop the way a
    user would (KeyboardInterrupt, which breaching catches and answers with its best candidate so far). It fires
    once: breaching's final scoring of that candidate then runs normally."""

    def __init__(self, seconds: float, clock) -> None:
        self.seconds, self.clock, self.start = seconds, clock, clock()
        self.evaluations, self.fired = 0, False

    def elapsed(self) -> float:
        return self.clock() - self.start

    def loss_fn(self):
        """breaching's loss function. A closure, not a bound method: breaching deep-copies its loss function, which
        copies a method's object but shares a function, and with it this budget."""

        def loss(residual: torch.Tensor, labels: object = None) -> torch.Tensor:
            if not self.fired and self.elapsed() >= self.seconds:
                self.fired = True
                raise KeyboardInterrupt
            self.evaluations += not self.fired
            return residual_loss(residual, labels)

        return loss


def _attack_config(name: str, overrides: list[str]):
    """breaching's shipped config `name` with hydra `overrides`, quietly (breaching prints it; hydra warns about
    its version base)."""
    import breaching

    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return breaching.get_attack_config(name, overrides=overrides)


def _seconds_per_evaluation(module: DenoisingResidual, gradients: list[torch.Tensor], shape: tuple,
                            clock: Callable[[], float]) -> float:
    """One evaluation of a gradient-matching objective (forward, gradient with its graph, backward to the
    pixels) on this machine now: the second of two, so that first-call costs are left out."""
    x = torch.zeros(shape, device=gradients[0].device, requires_grad=True)
    params = list(module.parameters())
    took = 0.0
    for _ in range(2):
        began = clock()
        grads = torch.autograd.grad(residual_loss(module(x)), params, create_graph=True)
        sum(((g - s) ** 2).sum() for g, s in zip(grads, gradients)).backward(inputs=[x])
        took = clock() - began
    return took


def payloads(module: DenoisingResidual, gradients: list[torch.Tensor], update: SharedUpdate,
             joint: bool = False) -> tuple[list[dict], list[dict]]:
    """breaching's (server payload, shared data) for one update: the model's parameters and the known eps and t
    (the module's buffers), image metadata whose normalisation (mean = std = 0.5) makes breaching's space our
    [-1, 1], and the gradients. A dummy label per image (the loss ignores it); none for `joint` attacks (DLG),
    which search labels themselves."""
    from omegaconf import OmegaConf

    channels = update.image_shape[0]
    metadata = OmegaConf.create(dict(shape=list(update.image_shape), mean=[0.5] * channels, std=[0.5] * channels,
                                     modality="vision", task="classification", classes=1))
    labels = None if joint else torch.zeros(update.batch_size, dtype=torch.long, device=gradients[0].device)
    server = [dict(parameters=list(module.parameters()), buffers=list(module.buffers()), metadata=metadata)]
    shared = [dict(gradients=gradients, buffers=None,
                   metadata=dict(num_data_points=update.batch_size, labels=labels, local_hyperparams=None))]
    return server, shared


def breaching_attack(model: DiffusionModel, update: SharedUpdate, method: str, seconds: float,
                     attack_seed: int, clock: Callable[[], float] = time.process_time) -> PeerResult:
    """Run breaching's shipped config for `method` (a key of `methods.PEER_METHODS`) against `update` for
    `seconds` of `clock` (this process's CPU time by default: one torch thread, as in the benchmark), from an
    initial guess drawn on the attacker's stream of `attack_seed`.

    Changes to the shipped configs: modern's feature regulariser is off (`CONFIG_CHANGES`), and IG's and modern's
    step-size schedules (step decay; warm-up and cosine decay), laid over 24,000 iterations, get the
    `max_iterations` that fit the budget at this machine's speed, so that they run to the end within it. DLG
    (L-BFGS, no schedule) keeps its 1,200 iterations: the budget ends it first, as it ends every config."""
    if update.eps is None or update.t is None:
        raise UsageError("breaching attacks with eps and t known (the paper's threat model): this update keeps them")
    if update.training is not None:
        raise UsageError("breaching's peer attacks one FedSGD gradient here, not a FedAvg delta")
    require_breaching()
    import breaching
    from omegaconf import OmegaConf  # hydra's config library, installed with breaching's requirements

    name = PEER_METHODS[method][0]
    device = model.device
    module = DenoisingResidual(model, update.eps.to(device), update.t.to(device)).eval()
    gradients = [g.detach().to(device) for g in update.gradients]
    shape = (update.batch_size, *update.image_shape)
    budget = _Budget(seconds, clock)
    overrides = list(CONFIG_CHANGES.get(method, ()))
    cfg = _attack_config(name, overrides)
    if cfg.optim.step_size_decay or cfg.optim.warmup:
        fit = int((seconds - budget.elapsed()) / max(_seconds_per_evaluation(module, gradients, shape, clock), 1e-6))
        cfg = _attack_config(name, [*overrides, f"optim.max_iterations={max(1, fit)}"])
    server_payload, shared_data = payloads(module, gradients, update, joint=cfg.attack_type == "joint-optimization")
    setup = dict(device=device, dtype=torch.float)
    attacker = breaching.attacks.prepare_attack(module, budget.loss_fn(), cfg, setup)
    generator = stream(attack_seed, "attacker")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            contextlib.redirect_stdout(io.StringIO()):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        output, stats = attacker.reconstruct(server_payload, shared_data, {}, dryrun=False)
    spent = min(budget.elapsed(), seconds) if budget.fired else budget.elapsed()
    objective = stats.get("opt_value")
    return PeerResult(output["data"].detach().cpu().clamp(-1, 1), budget.evaluations, spent,
                      None if objective is None else float(objective), int(cfg.optim.max_iterations),
                      OmegaConf.to_container(cfg, resolve=True))
