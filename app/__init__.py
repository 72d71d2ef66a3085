"""GIDM Explorer's Gradio app: `create_app()` builds the Blocks (checking bundled models and images now, not at
import) with its queue; `app.py` at the repository root launches it."""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def create_app():
    from .ui import build_app, queue

    return queue(build_app())


def launch_kwargs() -> dict:
    from .ui import launch_kwargs as kwargs

    return kwargs()


def concurrency() -> int:
    """How many attacks the queue runs at once (GIDM_CONCURRENCY, default 2)."""
    return int(os.environ.get("GIDM_CONCURRENCY", "2"))


def torch_threads() -> int:
    """Torch's CPU threads: GIDM_THREADS, else the cores shared among the attacks run at once, at least one. More
    threads than that fight each other and the UI's own thread for the cores: on this project's 2-core CPU the
    GIDM+ preset reached 30 dB after 39 s with one thread and 67 s with two (docs/app.md)."""
    if "GIDM_THREADS" in os.environ:
        return max(1, int(os.environ["GIDM_THREADS"]))
    return max(1, (os.cpu_count() or 1) // concurrency())


__all__ = ["concurrency", "create_app", "launch_kwargs", "torch_threads"]
