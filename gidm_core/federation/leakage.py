"""The evaluator's side of the federation: what leaked, per round and client, as JSON, PNGs and a plot.

This is the only place a client's batch meets the attack's reconstruction. The batch is recomputed here from the
federation's seed, the client and the round (`batches.private_batch`, the function the client itself drew it with),
so it never passes through the server's strategy or the attack; the attack hands over its result and gets nothing
back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..attacks import Result
from ..plots import line_plot
from ..client import SharedUpdate
from ..methods import METHOD_LABELS
from ..images import grid
from ..evaluation import Evaluator
from .batches import private_batch
from .config import FederationConfig

LEAKAGE_FILE, PLOT_FILE, GRID_FILE = "leakage.json", "leakage_vs_round.png", "reconstructions_by_round.png"


class LeakageRecorder:
    """Scores each attack against the client's true batch and writes OUT/leakage.json as the run goes (a run
    stopped half-way keeps what it measured); `finish` adds the plot and the grid image."""

    def __init__(self, config: FederationConfig, out: Path, num_train_timesteps: int = 1000) -> None:
        self.config = config
        self.out = Path(out)
        self.num_train_timesteps = num_train_timesteps
        self.records: list[dict] = []
        self.global_losses: dict[int, float] = {}  # after round r (0: the initial model)
        self._images: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # (round, client) -> truth, guess

    def global_loss(self, server_round: int, loss: float) -> None:
        """The global model's diffusion loss after `server_round` (0: before training)."""
        self.global_losses[server_round] = loss
        self._write()

    def record(self, server_round: int, client: int, update: SharedUpdate, result: Result | None) -> dict:
        """Score one attack on client `client`'s update in round `server_round` and save its reconstruction."""
        truth = private_batch(self.config, client, server_round, self.num_train_timesteps)
        entry = {"round": server_round, "client": client, "update_kind": update.kind,
                 "local_steps": update.training.steps if update.training else None,
                 "client_lr": update.training.lr if update.training else None,
                 "client_optimizer": update.training.optimizer if update.training else None,
                 "batch_size": update.batch_size,
                 "method": self.config.method, "threat": self.config.threat_model.describe(),
                 "global_loss": self.global_losses.get(server_round - 1),
                 "t_true": truth.t.tolist()}  # the evaluator's: how hard the client's draw was (large t amplifies)
        if result is None:  # the attack produced no finite guess
            entry["status"] = "error"
        else:
            folder = self.out / "leakage"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"round-{server_round:04d}-client-{client}.png"
            grid(result.reconstruction).save(folder / name)
            entry |= {**Evaluator(truth, lpips_every=0).score_result(result), "status": result.status,
                      "matching_loss": result.matching_loss, "iterations": result.iterations,
                      "attack_seconds": round(result.seconds, 2), "reconstruction": f"leakage/{name}"}
            self._images[(server_round, client)] = (truth.x0, result.reconstruction)
        self.records.append(entry)
        self._write()
        return entry

    def _write(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        summary = {"config": self.config.to_record(), "update": self.config.training.describe(),
                   "attack": METHOD_LABELS[self.config.method], "threat": self.config.threat_model.describe(),
                   "global_loss_after_round": {str(k): v for k, v in sorted(self.global_losses.items())},
                   "records": self.records}
        (self.out / LEAKAGE_FILE).write_text(json.dumps(summary, indent=1))

    def finish(self) -> list[str]:
        """Write the leakage-vs-round plot and the grid of reconstructions; return the files written."""
        self._write()
        series: dict[str, list[tuple[float, float]]] = {}
        for entry in self.records:
            if "psnr" in entry:
                series.setdefault(f"client {entry['client']}", []).append((entry["round"], entry["psnr"]))
        line_plot(series, f"{METHOD_LABELS[self.config.method]} on each client's update, by round", "round",
                  "PSNR (dB)", self.out / PLOT_FILE)
        written = [LEAKAGE_FILE, PLOT_FILE]
        if self._images:
            rounds = sorted({r for r, _ in self._images})
            clients = sorted({c for _, c in self._images})
            blank = torch.ones_like(next(iter(self._images.values()))[0])
            rows = [torch.cat([image for c in clients for image in self._images.get((r, c), (blank, blank))])
                    for r in rounds]
            grid(torch.cat(rows), columns=2 * len(clients) * self.config.batch_size).save(self.out / GRID_FILE)
            written.append(GRID_FILE)
        return written
