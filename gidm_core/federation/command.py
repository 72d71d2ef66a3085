"""`python -m gidm_core federate`: a Flower federation under attack, simulated on this machine with Ray.

Every flag is checked (one line, exit 2) before flwr, Ray or a model loads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from ..config import CLIENT_OPTIMIZERS, DEFAULT_DROPOUT, METHODS, NOISE_POLICIES, THREAT_PRESETS, ConfigError
from ..errors import UsageError
from ..faces import load_dataset
from ..flags import check_cores
from ..outputs import check_out_folder
from ..scenario import Scenario
from .config import SCENARIO_FIELDS, FederationConfig


def add_federate_command(commands: argparse._SubParsersAction) -> None:
    """Register `python -m gidm_core federate` on the CLI's subparsers."""
    defaults = FederationConfig()
    parser = commands.add_parser("federate", help="run a Flower FedAvg federation whose server attacks every "
                                 "client's update, and record what leaked round by round")
    parser.add_argument("--out", type=Path, required=True, help="output folder: leakage.json, plots, "
                        "reconstructions, a checkpoint per round (round-NNNN/)")
    parser.add_argument("--model-config", default=defaults.model_config, help="<arch>-<size> of the UNet "
                        "trained from scratch, e.g. small-32 or tiny-32")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="clients (Flower SuperNodes), one "
                        "shard of the face set each")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="FedAvg rounds")
    parser.add_argument("--local-steps", type=int, default=defaults.local_steps, help="local steps E per round")
    parser.add_argument("--client-lr", type=float, default=defaults.client_lr, help="the clients' learning rate")
    parser.add_argument("--client-optimizer", default=defaults.client_optimizer, choices=CLIENT_OPTIMIZERS,
                        help="the clients' local optimiser: sgd, adam or adamw (torch's, fresh state each round)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per client per round")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="the clients' weight "
                        "decay (adamw: decoupled)")
    parser.add_argument("--local-batch", type=int, default=defaults.local_batch, help="the clients' mini-batch B "
                        "out of their --batch-size images (0: all)")
    parser.add_argument("--noise-per-step", dest="noise", default=defaults.noise, choices=NOISE_POLICIES,
                        help="same: one eps and t per image for every step; fresh: new ones at every step")
    parser.add_argument("--client-clip", type=float, default=defaults.client_clip, help="clip each local step's "
                        "gradient to this L2 norm (0: none)")
    parser.add_argument("--dropout", choices=("off", "on"), default="off", help=f"on: the clients train with "
                        f"ResNet dropout {DEFAULT_DROPOUT:g}, masks from their own streams")
    parser.add_argument("--method", "--attack", dest="method", default=defaults.method,
                        help=f"attack method: {', '.join(METHODS)} (--attack: old spelling)")
    parser.add_argument("--threat", default=defaults.threat, help=f"threat preset: {', '.join(THREAT_PRESETS)}")
    parser.add_argument("--pixel-iterations", "--iterations", dest="pixel_iterations", type=int,
                        default=defaults.pixel_iterations, help="the attack's pixel-phase "
                        "budget per update, in objective evaluations (0: the method's default)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="the attack's time budget per "
                        "update in wall seconds (0: none; the iterations then only split it between phases)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the model, the shards and every "
                        "client's batches, eps and t")
    parser.add_argument("--attack-seed", type=int, default=defaults.attack_seed, help="the attacker's own seed "
                        "(its stream is independent of every client's)")
    parser.add_argument("--attack-options", default=defaults.attack_options, help="a JSON object of further attack "
                        "settings, e.g. '{\"lr\": 0.05}'")
    parser.add_argument("--scenario", type=Path, default=None, help="take the clients' training, the threat and the "
                        "attack from a saved round (the scenario.json `attack` writes); the flags above then set "
                        "only the federation itself")
    parser.add_argument("--cpus", type=int, default=0, help="CPUs Ray may use, one per client at a time "
                        "(0: min(clients, this machine's cores))")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server's attack")
    parser.set_defaults(func=run_federate)


def _config(args: argparse.Namespace) -> FederationConfig:
    check_cores("--cpus", args.cpus, zero="min(clients, this machine's cores)")
    check_cores("--threads", args.threads)
    federation = dict(model_config=args.model_config, clients=args.clients, rounds=args.rounds,
                      batch_size=args.batch_size, seed=args.seed)
    try:
        if args.scenario is not None:
            defaults = {**FederationConfig().to_record(), "dropout": "off"}
            given = [name for name in SCENARIO_FIELDS if getattr(args, name) != defaults[name]]
            if given:
                raise UsageError(f"--scenario sets the clients' training and the attack: drop "
                                 f"{', '.join('--' + name.replace('_', '-') for name in given)}")
            scenario = Scenario.load(args.scenario)
            if args.batch_size == FederationConfig.batch_size:  # one client's batch is the scenario's images
                federation["batch_size"] = len(scenario.images)
            config = FederationConfig.from_scenario(scenario, **federation)
        else:
            config = FederationConfig(
                **federation, local_steps=args.local_steps, client_lr=args.client_lr,
                client_optimizer=args.client_optimizer, weight_decay=args.weight_decay, local_batch=args.local_batch,
                noise=args.noise, client_clip=args.client_clip,
                dropout=DEFAULT_DROPOUT if args.dropout == "on" else 0.0, method=args.method, threat=args.threat,
                pixel_iterations=args.pixel_iterations, seconds=args.seconds, attack_seed=args.attack_seed,
                attack_options=args.attack_options)
        config.check_data(len(load_dataset(config.dataset)))
    except ConfigError as err:
        raise UsageError(str(err)) from None
    return config


def backend_config(clients: int, cpus: int) -> dict:
    """Ray for the simulation: one CPU per client, a modest pool, no dashboard, quiet workers (Flower hands them the
    driver's sys.path, so they import gidm_core)."""
    cpus = cpus or min(clients, os.cpu_count() or 1)
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": cpus, "num_gpus": 0, "include_dashboard": False, "log_to_driver": False,
                          "logging_level": logging.ERROR}}


def run_federate(args: argparse.Namespace) -> int:
    """Run the federation; print each round's leakage and the files written."""
    config = _config(args)
    out = check_out_folder(args.out)
    try:
        from flwr.simulation import run_simulation
    except ImportError:
        raise UsageError("federate needs Flower and Ray: pip install -r requirements-scale.txt") from None
    import torch

    from .client_app import app as client_app
    from .server_app import make_server_app

    torch.set_num_threads(args.threads)
    logging.getLogger("flwr").setLevel(logging.ERROR)  # Flower's per-round INFO lines and deprecation notices
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU clients: no GPU-variable warning
    print(f"federation: {config.clients} clients x {config.rounds} rounds, {config.training.describe()}, batch "
          f"{config.batch_size}, {config.model_config} UNet; attack {config.method} "
          f"({f'{config.seconds:g} s' if config.seconds else f'{config.attack_config.total_iterations} evaluations'} "
          f"per update), threat {config.threat}", flush=True)
    start = time.perf_counter()
    server = make_server_app(config, out)
    run_simulation(server_app=server, client_app=client_app, num_supernodes=config.clients,
                   backend_config=backend_config(config.clients, args.cpus))
    leakage = out / "leakage.json"
    if not leakage.is_file():
        print("error: the federation stopped before its first round (see the log above)")
        return 1
    summary = json.loads(leakage.read_text())
    for entry in summary["records"]:
        print(f"round {entry['round']} client {entry['client']}: PSNR {entry.get('psnr', float('nan')):.2f} dB, "
              f"SSIM {entry.get('ssim', float('nan')):.3f}, global loss {entry['global_loss']:.4f}", flush=True)
    print(f"done in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
    return 0 if len(summary["records"]) == config.clients * config.rounds else 1
