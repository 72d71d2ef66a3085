"""`python -m gidm_core bench`: the benchmark's command line, registered by `cli.py`."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from ..flags import check_cores
from ..outputs import check_out_folder
from .grid import SUITES, Row, build_suite
from .jobs import SpeedProbe
from .report import replace_readme_section
from .suite import run_suite


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    """Register `python -m gidm_core bench` on the CLI's subparsers."""
    parser = commands.add_parser("bench", help="run the benchmark grid and write results.json, results.md, plots")
    parser.add_argument("--suite", default="quick", choices=SUITES,
                        help="quick: a 32 px slice for a 2-core CPU (<= 15 min); standard: the claims at n = 8 per "
                        "cell (<= 2 h on 2 cores); resolution: 32 / 64 / 128 px on a CPU (~20 min); full: every axis "
                        "(hours; with --device cuda also a 128 px row); peer: breaching's shipped attacks beside "
                        "this project's (~12 CPU-minutes; needs requirements-peer.txt)")
    parser.add_argument("--out", type=Path, required=True, help="output folder; cells already there are skipped")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel worker processes (default: CPU cores on CPU, 1 on CUDA)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker (0: torch's default)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    parser.add_argument("--ray", action="store_true",
                        help="run the cells as Ray tasks: on a local Ray with --workers CPUs, or on a cluster")
    parser.add_argument("--address", default=None,
                        help="with --ray: the cluster's head, e.g. HEAD_IP:6379 (default: $RAY_ADDRESS, else local)")
    parser.add_argument("--list", action="store_true", help="print the suite's cells and exit")
    parser.add_argument("--rows", action="append", default=None, metavar="TEXT",
                        help="only the rows whose label contains TEXT (repeat for several; no speed probes)")
    parser.add_argument("--methods", default=None, help="only these methods, comma-separated (no speed probes)")
    parser.add_argument("--readme", type=Path, default=None, help="also write the results section into this "
                        "README, between its bench markers")
    parser.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    """List or run the suite; exit code 1 when a cell is missing from the aggregate."""
    if args.address and not args.ray:
        raise UsageError("--address needs --ray: it names the Ray cluster that runs the cells")
    address = args.address or (os.environ.get("RAY_ADDRESS") if args.ray else None)
    if not args.list:
        _check_run_args(args, address)
        if args.suite == "peer":  # before any cell runs, one line saying how to install the peer
            from ..attacks.peer import require_breaching

            require_breaching()
    if args.list:
        rows, _ = _select(*build_suite(args.suite, args.device), args)
        cells = [cell for row in rows for cell in row.cells]
        for row in rows:
            for cell in row.cells:
                print(f"{row.label:50s} {cell.method:12s} {cell.id}")
        budget = sum(cell.seconds * len(cell.groups()) for cell in cells)
        workers = args.workers or 2
        print(f"{len(cells)} cells in {len(rows)} rows, {sum(len(c.groups()) for c in cells)} runs; "
              f"{budget / 3600:.1f} hours of attack time in all, {budget / 3600 / workers:.2f} hours on {workers} "
              "workers (scoring and set-up come on top)")
        return 0
    if args.readme:  # before hours of work, not after
        try:
            replace_readme_section(args.readme.read_text(), "")
        except (OSError, ValueError) as err:
            raise UsageError(f"--readme {args.readme}: {err}") from None
    executor = None
    if args.ray:
        from .ray_runner import ray_executor  # ray is imported only here

        executor = ray_executor(args.address)
    from ..models import resolve_device  # torch and diffusers load only when the suite runs

    on_cluster = bool(address)
    device = args.device if on_cluster else resolve_device(args.device)  # a cluster's GPUs are on its nodes
    rows, probes = _select(*build_suite(args.suite, device), args)
    workers = args.workers or (1 if device.startswith("cuda") else max(1, min(os.cpu_count() or 1, 4)))
    results = run_suite(rows, probes, args.out, workers=workers, threads=args.threads, device=args.device,
                        suite=args.suite, executor=executor)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'} and {len(results['plots'])} plots")
    if args.readme:
        section = (args.out / "readme_section.md").read_text()
        args.readme.write_text(replace_readme_section(args.readme.read_text(), section))
        print(f"updated the results section of {args.readme}")
    return 0 if not results["missing_cells"] else 1


def _select(rows: list[Row], probes: list[SpeedProbe], args: argparse.Namespace) -> tuple[list[Row], list]:
    """The part of a suite that --rows and --methods name (a subset runs no speed probes); all of it by default."""
    if args.rows is None and args.methods is None:
        return rows, probes
    methods = None if args.methods is None else {m.strip() for m in args.methods.split(",")}
    picked = []
    for row in rows:
        if args.rows is not None and not any(text in row.label for text in args.rows):
            continue
        cells = tuple(c for c in row.cells if methods is None or c.method in methods)
        if cells:
            picked.append(replace(row, cells=cells))
    if not picked:
        raise UsageError(f"--rows/--methods select nothing of the {args.suite} suite (--list shows its rows)")
    return picked, []


def _check_run_args(args: argparse.Namespace, address: str | None) -> None:
    """The flags of a run, before Ray, torch or a model loads: the output folder, worker and thread counts within
    this machine's cores (a cluster's tasks run on its nodes, so there only >= 1), and a cluster that answers."""
    check_out_folder(args.out)
    cap = 1 << 16 if address else None
    if args.workers is not None:
        check_cores("--workers", args.workers, cap=cap)
    check_cores("--threads", args.threads, zero="torch's default", cap=cap)
    if address:
        from ..ray_session import check_address  # a socket probe; ray itself is not imported for it

        check_address(address)
