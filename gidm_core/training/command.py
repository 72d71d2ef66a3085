"""`python -m gidm_core train`: the command line of the FedAvg trainer in `training/trainer.py`.

It lives apart from the trainer so that the engine carries no argparse code and imports nothing from the CLI
(`cli.py` imports this module, never the other way round).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..errors import UsageError
from ..faces import DATASETS
from ..flags import check_cores
from ..outputs import check_out_folder
from .trainer import ARCHITECTURES, FedAvgTrainer, TrainConfig


def add_train_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `python -m gidm_core train` on the CLI's subparsers."""
    defaults = TrainConfig()
    parser = subparsers.add_parser("train", help="train a diffusion model with FedAvg over simulated clients")
    parser.add_argument("--out", type=Path, required=True, help="output folder; checkpoints go to OUT/round-NNNN/")
    parser.add_argument("--resume", type=Path, default=None, help="a checkpoint folder to continue from")
    parser.add_argument("--dataset", default=defaults.dataset, help=f"one of {', '.join(DATASETS)}")
    parser.add_argument("--size", type=int, default=defaults.size, help="image size in pixels")
    parser.add_argument("--arch", default=defaults.arch, help=f"UNet architecture: {', '.join(ARCHITECTURES)}")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="simulated clients, one shard each")
    parser.add_argument("--clients-per-round", type=int, default=defaults.clients_per_round,
                        help="clients sampled each round (0: all)")
    parser.add_argument("--rounds", type=int, default=None, help=f"FedAvg rounds R, in total (default "
                        f"{defaults.rounds}; when resuming, the checkpoint's)")
    parser.add_argument("--local-steps", type=int, default=defaults.local_steps, help="local steps E per round")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="client batch size")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="client learning rate")
    parser.add_argument("--optimizer", default=defaults.optimizer, help="client optimizer: adam or sgd")
    parser.add_argument("--grad-clip", type=float, default=defaults.grad_clip, help="client gradient-norm clip "
                        "(0: off)")
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay, help="EMA decay per round")
    parser.add_argument("--no-augment", action="store_true", help="no flips, shifts or zoom")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds init, shards, batches, eps and t")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, help="rounds between "
                        "checkpoints (the last round is always saved)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.set_defaults(func=run_train)


def _trainer(args: argparse.Namespace) -> FedAvgTrainer:
    """A new or resumed trainer; a bad setting or a folder that is no checkpoint becomes a one-line user error.
    The flags that need no data are checked first, so a bad one loads nothing and leaves no folder."""
    check_out_folder(args.out)
    check_cores("--threads", args.threads, zero="torch's default")
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"--rounds must be >= 1, got {args.rounds}")
    try:
        if args.resume:
            return FedAvgTrainer.resume(args.resume, args.out, args.rounds)
        config = TrainConfig(
            dataset=args.dataset, size=args.size, arch=args.arch, clients=args.clients,
            clients_per_round=args.clients_per_round, rounds=TrainConfig.rounds if args.rounds is None else args.rounds,
            local_steps=args.local_steps, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
            grad_clip=args.grad_clip, ema_decay=args.ema_decay, augment=not args.no_augment, seed=args.seed,
            checkpoint_every=args.checkpoint_every)
        return FedAvgTrainer(config, args.out)
    except (ValueError, FileNotFoundError) as err:
        raise UsageError(str(err)) from None


def run_train(args: argparse.Namespace) -> int:
    """Train (or resume) with progress on stdout and OUT/history.jsonl; exit code 0."""
    trainer = _trainer(args)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = trainer.config
    params = sum(p.numel() for p in trainer.unet.parameters())
    per_round = config.clients_per_round or config.clients
    print(f"FedAvg: {per_round} of {config.clients} clients per round x {config.local_steps} local steps x batch {config.batch_size}, "
          f"{config.rounds} rounds, {config.dataset} ({len(trainer.data)} images, shards "
          f"{[len(s) for s in trainer.shards]}) at {config.size} px, {config.arch} UNet {params / 1e6:.2f} M params"
          + (f"; resuming after round {trainer.round}" if trainer.round else ""), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    width = len(str(config.rounds))
    for entry in trainer.run():
        print(f"round {entry['round']:>{width}}/{config.rounds}  loss {entry['loss']:.4f}  "
              f"{entry['seconds']:.1f} s/round  elapsed {entry['elapsed']:.0f} s", flush=True)
        with (args.out / "history.jsonl").open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
    final = args.out / f"round-{trainer.round:04d}"
    print(f"done: {trainer.round} rounds in {trainer.seconds:.0f} s, last round loss "
          f"{trainer.history[-1]['loss']:.4f}, EMA eval loss {trainer.eval_loss():.4f} -> {final}", flush=True)
    return 0
