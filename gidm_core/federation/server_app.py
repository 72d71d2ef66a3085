"""The Flower ServerApp: FedAvg with the curious server, central evaluation and a checkpoint every round.

`make_server_app` serves `python -m gidm_core federate` (simulation); the module-level `app` serves `flwr run` on a
deployment, reading the same fields from the run config ([tool.flwr.app.config] in pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from ..training.trainer import eval_loss, save_pipeline
from .batches import training_images
from .config import FederationConfig
from .leakage import LeakageRecorder
from .model import build_model, initial_state
from .strategy import CuriousFedAvg


def checkpoint_folder(out: Path, server_round: int) -> Path:
    return Path(out) / f"round-{server_round:04d}"


def run_federation(grid: Grid, config: FederationConfig, out: Path) -> LeakageRecorder:
    """Run every round on `grid`; after each, score the global model and save it as a diffusers folder."""
    recorder = LeakageRecorder(config, out)
    images = training_images(config)  # the global model's loss is over the whole training set

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model = build_model(config, arrays.to_torch_state_dict(), f"federation-round-{server_round}")
        loss = eval_loss(model, images)
        recorder.global_loss(server_round, loss)
        if server_round > 0:
            save_pipeline(model, checkpoint_folder(out, server_round), {
                "round": server_round, "config": config.to_record(), "weights": "the FedAvg global model",
                "update": config.training.describe(), "global_loss": loss})
        return MetricRecord({"loss": loss})

    strategy = CuriousFedAvg(config, recorder)
    strategy.start(grid, ArrayRecord(initial_state(config)), num_rounds=config.rounds,
                   train_config=ConfigRecord(config.to_record()), evaluate_fn=evaluate)
    recorder.finish()
    return recorder


def make_server_app(config: FederationConfig, out: Path) -> ServerApp:
    """A ServerApp bound to `config` and `out`, for `flwr.simulation.run_simulation`."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, out)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """`flwr run`: the federation's fields and `out` come from the run config."""
    config = FederationConfig.from_mapping(context.run_config)
    run_federation(grid, config, Path(str(context.run_config.get("out", "federation"))))
