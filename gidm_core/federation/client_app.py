"""The Flower ClientApp: one client's round of FedAvg on its private batch.

It receives the global weights and the federation's config, draws its private batch (`batches.private_batch`),
computes its update with the one function that defines it (`client.client_update`: E local steps of SGD, Adam or
AdamW with a fresh state, on the batch's per-step draws), applies the threat model's defence and replies with its
weight delta. eps, t, the batch order and the dropout seeds leave the client only under a threat model that says
the client reveals them (the paper's setting); the images never do.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from ..client import apply_defence, client_update
from ..diffusion import diffusion_loss
from ..seeds import stream
from .batches import client_seed, client_shard, private_batch
from .config import FederationConfig
from .model import build_model

DELTA, METRICS, SECRETS = "arrays", "metrics", "secrets"  # reply keys; "arrays" is what FedAvg averages

app = ClientApp()


def local_round(config: FederationConfig, client: int, server_round: int,
                state: dict[str, torch.Tensor]) -> RecordDict:
    """Client `client`'s reply in round `server_round` to the global weights `state`."""
    model = build_model(config, state, f"client-{client}")
    batch = private_batch(config, client, server_round, model.num_train_timesteps)
    delta = client_update(model, batch.x0, batch.eps, batch.t, training=config.training, schedule=batch.schedule)
    with torch.no_grad():  # the loss of its first local step at the global weights, for the server's record
        loss = float(diffusion_loss(model, *batch.schedule.inputs(0, batch.x0, batch.eps, batch.t)))
    threat = config.threat_model
    delta = apply_defence(delta, threat.defence, stream(client_seed(config, client, server_round), "defence"))
    names = [name for name, _ in model.unet.named_parameters()]
    shard_size = len(client_shard(config, client)[1])  # FedAvg weighs clients by their data, n_k
    reply = RecordDict({
        DELTA: ArrayRecord(dict(zip(names, delta))),
        METRICS: MetricRecord({"num-examples": shard_size, "client": client, "loss": loss}),
    })
    revealed = {}
    if threat.knows_eps:
        revealed |= {"eps": batch.eps.flatten().tolist(), "eps-shape": list(batch.eps.shape)}
    if threat.knows_t:
        revealed["t"] = batch.t.tolist()
    if threat.order_known:
        revealed |= {"order": batch.schedule.order.flatten().tolist(), "order-shape": list(batch.schedule.order.shape)}
    if threat.masks_known and batch.schedule.dropout_seeds:
        revealed["dropout-seeds"] = [str(seed) for seed in batch.schedule.dropout_seeds]  # 62-bit: exact as text
    if revealed:
        reply[SECRETS] = ConfigRecord(revealed)
    return reply


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round on this SuperNode: its partition id names its shard (`--node-config partition-id=...`)."""
    torch.set_num_threads(1)  # each client holds one CPU of the simulation (backend_config), or of its node
    config = FederationConfig.from_mapping(msg.content["config"])
    server_round = int(msg.content["config"]["server-round"])
    client = int(context.node_config["partition-id"])
    state = msg.content["arrays"].to_torch_state_dict()
    return Message(content=local_round(config, client, server_round, state), reply_to=msg)
