"""Checks every command applies to its numeric flags before it loads anything (one line, exit 2, on failure).

Shared by `train`, `bench` and `federate`, beside `outputs.check_out_folder` for their output folders. It imports
nothing from the package but `errors`.
"""

from __future__ import annotations

import math
import os

from .errors import UsageError


def machine_cores() -> int:
    """The cores this process may use: the ceiling for worker and thread counts (more only oversubscribe)."""
    return os.cpu_count() or 1


def check_cores(flag: str, value: int, *, zero: str | None = None, cap: int | None = None) -> int:
    """Refuse a worker or thread count outside [1, cap] (cap: this machine's cores); `zero` names what 0 means for
    a flag where 0 is a default, and allows it."""
    cap = cap or machine_cores()
    low = 0 if zero else 1
    if not low <= value <= cap:
        meaning = f" (0: {zero})" if zero else ""
        raise UsageError(f"{flag} must be between {low} and {cap}{meaning}, this machine's cores; got {value}")
    return value


def check_rate(flag: str, value: float) -> float:
    """A learning rate, decay or budget that must be a finite number > 0 (inf and nan pass `> 0` or fail it
    confusingly, so they are named)."""
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{flag} must be a finite number > 0, got {value}")
    return value


def check_non_negative(flag: str, value: float, meaning: str = "") -> float:
    """A finite number >= 0 (a clip norm, a time budget): a negative one is refused, never read as "off"."""
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{flag} must be a finite number >= 0{f' ({meaning})' if meaning else ''}, got {value}")
    return value
