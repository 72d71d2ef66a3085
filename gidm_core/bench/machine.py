"""What the benchmark measures about the machine: the device, peak memory, and one forward+backward of the attacked
UNet, the reference every step time is divided by so that ratios survive a noisy, shared machine."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..models import DiffusionModel


def device_name(device: str) -> str:
    """The GPU's name, or the CPU and its core count: what a result's wall times were measured on."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on CUDA, else RSS sampled every 10 ms (MB)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = 0.0
        self.base_mb = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError):
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, self.rss_mb())

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self.base_mb = torch.cuda.memory_allocated() / 2**20
        else:
            self.base_mb = self.peak_mb = self.rss_mb()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self.peak_mb, self.rss_mb())


def sync(device: str) -> None:
    """Wait for queued CUDA work, so that wall-clock timings cover it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def budget_clock(device: str) -> str:
    """The clock of attack budgets and step timings: CPU seconds where they measure the work alone, on a CPU with
    one torch thread (with more, idle threads spin and bill CPU time on a busy machine: 3 s for a 20 ms step,
    measured); otherwise wall seconds."""
    return "cpu" if device == "cpu" and torch.get_num_threads() == 1 else "wall"


def now(device: str) -> float:
    """A reading of `budget_clock(device)`, after any queued CUDA work: step ratios divide times on one clock."""
    sync(device)
    return time.process_time() if budget_clock(device) == "cpu" else time.perf_counter()


def time_forward_backward(model: DiffusionModel, batch: int, size: int, device: str, reps: int = 5) -> float:
    """Median seconds (on `budget_clock`) of one training-step gradient (forward + backward w.r.t. every weight)."""
    from ..client import client_update

    generator = torch.Generator().manual_seed(1234)
    x0 = (torch.rand(batch, model.channels, size, size, generator=generator) * 2 - 1).to(device)
    eps = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.full((batch,), 100, dtype=torch.long, device=device)
    times = []
    for _ in range(reps + 1):
        start = now(device)
        client_update(model, x0, eps, t)
        times.append(now(device) - start)
    return statistics.median(times[1:])  # the first call warms caches
