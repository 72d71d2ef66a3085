"""The global model as clients and server build it from the arrays that travel: architecture and schedule from the
federation's config, weights from the message."""

from __future__ import annotations

import torch

from ..training.trainer import make_scheduler, make_unet
from ..models import DiffusionModel, prepare_for_inversion
from .config import FederationConfig


def initial_state(config: FederationConfig) -> dict[str, torch.Tensor]:
    """The seeded initial weights (the FedAvg trainer's initialisation for the same arch, size and seed)."""
    return {k: v.detach().clone() for k, v in make_unet(config.train_config).state_dict().items()}


def build_model(config: FederationConfig, state: dict[str, torch.Tensor], name: str) -> DiffusionModel:
    """A float32 UNet with `state` loaded and twice-differentiable attention: what a client trains and the attack
    differentiates through."""
    unet = make_unet(config.train_config)
    unet.load_state_dict(state)
    return DiffusionModel(prepare_for_inversion(unet), make_scheduler(), name)
