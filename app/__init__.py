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


__all__ = ["create_app", "launch_kwargs"]
