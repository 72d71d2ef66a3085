"""Flower's FedAvg with an honest-but-curious server: it aggregates as FedAvg does, and first attacks every update.

Clients reply with weight deltas (exact, see `client.train_locally`); FedAvg's weighted average of those deltas,
added to the weights the server broadcast, is FedAvg's average of the clients' weights. Before averaging, each
reply becomes the `SharedUpdate` the server actually holds (the delta, the E and lr it set, the batch size, and eps
and t only if the client revealed them) and goes to the project's attack (`attacks.start_attack`) with the
broadcast model. The reconstruction goes to the evaluator side (`leakage.LeakageRecorder`); nothing the evaluator
holds flows back.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from ..attacks import start_attack
from ..client import SharedUpdate
from ..models import DiffusionModel
from .client_app import DELTA, METRICS, SECRETS
from .config import FederationConfig
from .leakage import LeakageRecorder
from .model import build_model


def shared_update(reply: RecordDict, model: DiffusionModel, config: FederationConfig) -> SharedUpdate:
    """What the server holds of one client's reply, in the form the attacks take."""
    delta = reply[DELTA].to_torch_state_dict()
    secrets = reply.get(SECRETS, ConfigRecord())
    eps = t = None
    if "eps" in secrets:
        eps = torch.tensor(secrets["eps"], dtype=torch.float32).reshape(list(secrets["eps-shape"]))
    if "t" in secrets:
        t = torch.tensor(secrets["t"], dtype=torch.long)
    return SharedUpdate(gradients=tuple(delta[name] for name, _ in model.unet.named_parameters()),
                        batch_size=config.batch_size, image_shape=(model.channels, config.size, config.size),
                        eps=eps, t=t, training=config.training)


class CuriousFedAvg(FedAvg):
    """FedAvg over every client each round (no federated evaluation: the server evaluates centrally), attacking
    each client's update with `config.method` within `config.pixel_iterations` before it averages them."""

    def __init__(self, config: FederationConfig, recorder: LeakageRecorder) -> None:
        super().__init__(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=config.clients,
                         min_available_nodes=config.clients)
        self.config = config
        self.recorder = recorder
        self._broadcast: dict[str, torch.Tensor] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._broadcast = arrays.to_torch_state_dict()  # the model every client starts from, and the attack sees
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        # In client order, whatever order they arrived in: the records and the float sums of the average repeat.
        replies = sorted(replies, key=lambda r: -1 if r.has_error() else int(r.content[METRICS]["client"]))
        model = build_model(self.config, self._broadcast, f"global-round-{server_round - 1}")
        for reply in (r for r in replies if not r.has_error()):
            update = shared_update(reply.content, model, self.config)
            run = start_attack(model, update, self.config.threat_model, self.config.attack_config)
            self.recorder.record(server_round, int(reply.content[METRICS]["client"]), update, run.run_to_end())
        mean_delta, metrics = super().aggregate_train(server_round, replies)
        if mean_delta is None:
            return None, metrics
        delta = mean_delta.to_torch_state_dict()
        weights = {name: value + delta[name] if name in delta else value for name, value in self._broadcast.items()}
        return ArrayRecord(weights), metrics
