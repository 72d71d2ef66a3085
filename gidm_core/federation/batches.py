"""Each client's data: its shard of the offline face set and, each round, the private batch it trains on.

The batch is a pure function of (federation seed, client, round), drawn from the client's own streams
(`seeds.stream`, role "client"). The ClientApp draws it to train; in a simulation the evaluator draws the same
batch to score the attack against, so the truth never travels through the server or the attack.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..client import PrivateBatch
from ..faces import load_dataset
from ..training.trainer import shards
from ..seeds import derive, stream
from .config import FederationConfig

_PICK, _SECRETS = 0, 1  # sub-stream keys: which images, and the eps and t drawn for them


@lru_cache(maxsize=4)
def _images(dataset: str, size: int, channels: int = 3) -> torch.Tensor:
    return load_dataset(dataset).tensors(size, channels)


def training_images(config: FederationConfig) -> torch.Tensor:
    """The whole training set as (N, C, size, size) in [-1, 1], loaded once per process."""
    return _images(config.dataset, config.size)


def client_shard(config: FederationConfig, client: int) -> tuple[torch.Tensor, np.ndarray]:
    """(all images, this client's indices into them): `federated.shards`, the trainer's split."""
    images = training_images(config)
    return images, shards(len(images), config.clients, config.seed)[client]


def client_seed(config: FederationConfig, client: int, server_round: int) -> int:
    """The seed of client `client`'s secrets in round `server_round` (its eps and t, its defence's noise)."""
    return derive(config.seed, client, server_round, _SECRETS)


def private_batch(config: FederationConfig, client: int, server_round: int,
                  num_train_timesteps: int) -> PrivateBatch:
    """The `batch_size` distinct images client `client` trains on in round `server_round`, with its eps and t."""
    images, shard = client_shard(config, client)
    pick = stream(derive(config.seed, client, server_round, _PICK), "client")
    chosen = torch.as_tensor(shard)[torch.randperm(len(shard), generator=pick)[:config.batch_size]]
    return PrivateBatch.draw(images[chosen], num_train_timesteps, client_seed(config, client, server_round))
