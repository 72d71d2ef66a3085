"""A Flower federation under attack: clients train the diffusion UNet with FedAvg, and the server is honest but
curious: its strategy hands every client's update to an attack and records what leaked, round by round.

Modules: `config` (the federation's settings), `batches` (each client's shard and private batch), `model` (the
global model built from the arrays that travel), `client_app` (the Flower ClientApp), `strategy` (FedAvg plus the
curious server), `leakage` (the evaluator's records, images and plots), `server_app` (the Flower ServerApp),
`command` (`python -m gidm_core federate`). Only `client_app`,
`strategy`, `server_app` and `command`'s run import flwr, so the rest of the package works without it.
"""
