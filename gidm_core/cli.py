"""Command line: `python -m gidm_core {attack, models, train, bench, federate, tune}`, each command beside what it runs.

Bad input gets one line on stderr and exit code 2, before any model is loaded where possible.
"""

from __future__ import annotations

import argparse
import sys

from . import attack_command
from .bench import command as bench_command
from .errors import UsageError, UserError
from .federation import command as federate_command
from .training import command as train_command
from .tuning import command as tune_command

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """argparse that raises `UsageError` (one line) instead of printing its usage block and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def list_models(args: argparse.Namespace) -> int:
    from .models import RANDOM_ARCHITECTURES, bundled_specs

    for spec in bundled_specs():
        print(spec)
    print("random:" + "|".join(RANDOM_ARCHITECTURES) + "[-<size>][-epsilon|-v_prediction|-sample]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m gidm_core", description="Gradient inversion of federated "
                                     "diffusion models (GIDM, GIDM+) and baselines.")
    commands = parser.add_subparsers(dest="command", required=True)
    attack = commands.add_parser("attack", help="reconstruct images from a simulated client's shared update")
    attack_command.add_attack_arguments(attack)
    attack.set_defaults(func=attack_command.run_attack)
    models = commands.add_parser("models", help="list the models this install can load offline")
    models.set_defaults(func=list_models)
    train_command.add_train_command(commands)
    bench_command.add_bench_command(commands)
    federate_command.add_federate_command(commands)
    tune_command.add_tune_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; every `UserError` (bad flag, config, image, model, path) is one line on stderr, exit 2."""
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    except UserError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
