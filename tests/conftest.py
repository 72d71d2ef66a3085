"""Shared fixtures: tiny seeded models and a held-out-style photo, small enough for a 2-core CPU."""

from __future__ import annotations

import socket

import pytest
import torch
from skimage import data as skdata

from gidm_core.images import load_image
from gidm_core.models import random_model

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def photo32() -> torch.Tensor:
    """A natural photo at 32 px (scikit-image's astronaut), (1, 3, 32, 32) in [-1, 1]."""
    return load_image(skdata.astronaut(), 32)


@pytest.fixture(scope="session")
def tiny_model():
    return random_model("tiny", 32)


@pytest.fixture(scope="session")
def small_model():
    return random_model("small", 32)


@pytest.fixture
def one_thread():
    """One torch thread for the test, as the benchmark runs its cells: CPU-second budgets hold only then
    (`bench.machine.budget_clock`), and two threads on a busy 2-core CPU cost ~50x on tiny cells."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def serve_app():
    """(url, demo): the Gradio app launched in-process on a free local port; the caller closes the demo."""
    from app import create_app, launch_kwargs

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = create_app()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    return f"http://127.0.0.1:{port}", demo


@pytest.fixture(scope="module")
def app_url():
    """The Gradio app, launched in-process on a free local port for one test module."""
    url, demo = serve_app()
    yield url
    demo.close()
