"""The session store: one user's finished runs (for comparison and export) and the stop flag of their current job.

Everything a user can change lives in their `Session` (one per browser tab / API client, made by gr.State); the
only process-wide object is the model cache (model_cache.py).
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gidm_core.attacks.steering import Steering
from gidm_core.methods import METHOD_LABELS

from .settings import Settings


@dataclass
class RunRecord:
    """A finished (or stopped) run, with everything the compare view and the export need."""

    number: int
    settings: Settings
    model_name: str
    threat: str
    size: int
    original: torch.Tensor  # (B, C, H, W) in [-1, 1]
    reconstruction: torch.Tensor  # paired to `original`
    victims: list[tuple[str, torch.Tensor, bool]]  # (name, (1, C, H, W) tensor, bundled?)
    t_true: list[int]
    t_estimate: list[int] | None
    metrics: dict[str, float]
    history: list[dict]
    phase_starts: dict[str, int]
    trace: list[dict]
    filmstrip: list[tuple[torch.Tensor, str]]
    status: str
    message: str
    seconds: float
    iterations: int
    matching_loss: float
    first_image_s: float | None
    time_to_30db_s: float | None
    config: dict
    command: str = ""
    steering: list[dict] = field(default_factory=list)  # the steering actions applied, where (steer.py)
    separation: str = ""  # the attack's word on splitting the batch (its residual, or why it did not)
    paired_by_t: bool = False  # `reconstruction` was paired by the attack's timesteps, not by likeness

    @property
    def label(self) -> str:
        psnr = self.metrics.get("psnr")
        victims = ", ".join(v[0] for v in self.victims[:2]) + (" ..." if len(self.victims) > 2 else "")
        return f"#{self.number} {METHOD_LABELS[self.settings.method]} on {victims} ({self.model_name})" + (
            f", {psnr:.1f} dB" if psnr is not None else "")


def env_count(name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    """A whole-number setting from the environment; a bad value raises ValueError with a one-line message that
    names the variable (app.py prints it and exits, instead of a traceback)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ValueError(f"{name} must be a whole number {bounds}, got {raw!r}")
    return value


def queue_size() -> int:
    """How many runs may wait for a slot (GIDM_QUEUE_SIZE, default 16): Gradio's queue and `Session.admit` both."""
    return env_count("GIDM_QUEUE_SIZE", 16, 0)


def concurrency() -> int:
    """How many attacks the queue runs at once (GIDM_CONCURRENCY, default 2)."""
    return env_count("GIDM_CONCURRENCY", 2, 1)


def torch_threads() -> int:
    """Torch's CPU threads: GIDM_THREADS (0 counts as 1), else the cores shared among the attacks run at once, at
    least one. More threads than that fight each other and the UI's own thread for the cores: on this project's
    2-core CPU the GIDM+ preset reached 30 dB after 39 s with one thread and 67 s with two (docs/app.md)."""
    return max(1, env_count("GIDM_THREADS", (os.cpu_count() or 1) // concurrency(), 0))


class QueueFull(Exception):
    """Every waiting place is taken; the message says so, and how many wait."""


TABLE_HEADERS = ["#", "method", "model", "px", "batch", "threat", "iters", "PSNR", "SSIM", "LPIPS", "t acc",
                 "eps err", "seconds", "status"]


class Session:
    """One user's runs, their current run's stop flag, and the runs waiting in the queue. Created per browser
    session by gr.State, which calls `close` when the session ends.

    The live sessions are known process-wide (weakly) so that admission can count every waiting run: Gradio checks
    its queue's size before a run's validator and adds the run after it, so runs submitted together all passed
    its check (20 at once left 18 waiting with room for 16)."""

    _live: weakref.WeakSet[Session] = weakref.WeakSet()
    _admission = threading.Lock()

    def __init__(self) -> None:
        self.runs: list[RunRecord] = []
        self.stop_event: threading.Event | None = None
        self.counter = itertools.count(1)
        self.workdir: Path | None = None
        self.queued: deque[float] = deque()  # when each run still waiting in the queue was submitted
        self.stopped_at = -math.inf
        self.steering: Steering | None = None  # the running attack's steering channel (steer.py)
        self.lesson: dict[int, dict] = {}  # the lesson's results by step (lesson.py)

    def __deepcopy__(self, memo: dict) -> Session:  # gr.State deep-copies its initial value once per session
        return Session()

    def submit(self, limit: int | None = None) -> None:
        """Note a run entering the queue (called outside the queue, at the click), so that Stop pressed while it
        waits can cancel it; raise `QueueFull` when `limit` runs of all sessions already wait."""
        with Session._admission:
            waiting = sum(len(s.queued) for s in list(Session._live))
            if limit is not None and waiting >= limit:
                raise QueueFull(f"The queue is full: {waiting} runs are waiting for a slot. Try again in a minute.")
            self.queued.append(time.monotonic())
            Session._live.add(self)

    def cancelled_while_queued(self) -> bool:
        """Called when a run leaves the queue: True if Stop was pressed after it was submitted."""
        return bool(self.queued) and self.queued.popleft() < self.stopped_at

    def stop(self) -> bool:
        """Stop the current job within one step and cancel this session's queued runs; False when there is none."""
        self.stopped_at = time.monotonic()
        running = self.running
        if running:
            self.stop_event.set()
        return running or bool(self.queued)

    def claim(self) -> threading.Event | None:
        """The stop flag of a new job (a run or a sweep), or None while another job of this session is going."""
        if self.running:
            return None
        self.stop_event = threading.Event()
        return self.stop_event

    def release(self, stop: threading.Event) -> None:
        """The job that claimed `stop` has ended."""
        if self.stop_event is stop:
            self.stop_event = None

    def workfolder(self) -> Path:
        """This session's folder for exports, made on first use; `close` deletes it."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="gidm-session-"))
        return self.workdir

    def close(self) -> None:
        """End of the session (gr.State's delete_callback): stop its run and delete its files."""
        self.stop()
        self.queued.clear()  # its waiting runs no longer hold places
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def running(self) -> bool:
        return self.stop_event is not None and not self.stop_event.is_set()

    def find(self, label: str | None) -> RunRecord | None:
        """The run a compare dropdown names."""
        for record in self.runs:
            if record.label == label:
                return record
        return None

    def table(self) -> list[list[Any]]:
        """One row per run, under TABLE_HEADERS."""
        rows = []
        for r in self.runs:
            m = r.metrics
            rows.append([r.number, METHOD_LABELS[r.settings.method], r.model_name, r.size, r.settings.batch_size,
                         r.threat, r.iterations, _fmt(m.get("psnr"), 2), _fmt(m.get("ssim"), 3),
                         _fmt(m.get("lpips"), 3), _fmt(m.get("t_accuracy"), 2), _fmt(m.get("eps_error"), 3),
                         round(r.seconds, 1), r.status])
        return rows


def _fmt(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(float(value), digits)
