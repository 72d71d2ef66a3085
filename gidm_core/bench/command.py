"""`python -m gidm_core bench`: the benchmark's command line, registered by `cli.py`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UsageError
from .grid import SUITES, build_suite
from .suite import run_suite


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    """Register `python -m gidm_core bench` on the CLI's subparsers."""
    parser = commands.add_parser("bench", help="run the benchmark grid and write results.json, results.md, plots")
    parser.add_argument("--suite", default="quick", choices=SUITES,
                        help="quick: a 32 px slice for a 2-core CPU (<10 min); full: the whole grid (GPU)")
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
    parser.set_defaults(func=bench_command)


def bench_command(args: argparse.Namespace) -> int:
    """List or run the suite; exit code 1 when a cell is missing from the aggregate."""
    if args.address and not args.ray:
        raise UsageError("--address needs --ray: it names the Ray cluster that runs the cells")
    rows, probes = build_suite(args.suite)
    if args.list:
        for row in rows:
            for cell in row.cells:
                print(f"{row.label:50s} {cell.method:12s} {cell.id}")
        return 0
    executor = None
    if args.ray:
        from .ray_runner import ray_executor  # ray is imported only here

        executor = ray_executor(args.address)
    from ..models import resolve_device  # torch and diffusers load only when the suite runs

    on_cluster = args.ray and bool(args.address or os.environ.get("RAY_ADDRESS"))
    device = args.device if on_cluster else resolve_device(args.device)  # a cluster's GPUs are on its nodes
    workers = args.workers or (1 if device.startswith("cuda") else max(1, min(os.cpu_count() or 1, 4)))
    results = run_suite(rows, probes, args.out, workers=workers, threads=args.threads, device=args.device,
                        suite=args.suite, executor=executor)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'} and {len(results['plots'])} plots")
    return 0 if not results["missing_cells"] else 1
