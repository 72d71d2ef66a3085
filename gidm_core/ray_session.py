"""A Ray session for the commands that run work on Ray (`bench --ray`, `tune --ray`): a local Ray with a few CPUs
and no dashboard, or a cluster's. Ray is imported only when a command asks for it (requirements-scale.txt)."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from .errors import UserError


def import_ray() -> ModuleType:
    """Ray, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs ray: pip install -r requirements-scale.txt") from None
    return ray


ADDRESS_TIMEOUT_S = 3.0


def check_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """Refuse a cluster address where nothing answers within `timeout` seconds, in one line, before Ray starts
    (`ray.init` would otherwise retry for minutes with warnings). "auto" and "local" are Ray's own words."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address}: give the Ray head as HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        reason = "no answer" if isinstance(err, TimeoutError) else (err.strerror or str(err)).lower()
        raise UserError(f"--address {address}: no Ray head answers there ({reason} within {timeout:g} s)") from None


@contextmanager
def ray_session(address: str | None, cpus: int) -> Iterator[ModuleType]:
    """Connect to the cluster at `address` (else `RAY_ADDRESS`), or start a quiet local Ray with `cpus` CPUs and no
    dashboard; a session already open in this process is reused and left open."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS")
    where = {"address": address} if address else {"num_cpus": cpus}
    with warnings.catch_warnings():  # a tip about a future default for GPU visibility, printed on every init
        warnings.simplefilter("ignore", FutureWarning)
        ray.init(**where, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()
