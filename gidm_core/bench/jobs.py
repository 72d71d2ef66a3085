"""What a benchmark job is: a `Cell` (one method against one setting) or a `SpeedProbe`, each a frozen config whose
stable hash names its JSON file, so that a rerun finds the jobs already done and any worker can run any job."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..methods import METHODS, spec

BENCH_VERSION = 3  # 2: equal time per cell, attacker seeds apart from the client's; 3: step ratios on the budget clock
METHOD_ORDER = METHODS  # column order in every table: the registry's
THRESHOLDS_DB = (25.0, 30.0)  # a run records the seconds and iterations it took to reach each PSNR
ATTACKER_SEED_OFFSET = 1000  # the attacker's seed is the client's + this: two numbers, drawn into two streams


@dataclass(frozen=True)
class Cell:
    """One benchmark cell: one method against one setting, over several image groups and seeds.

    `images` are bundled victim names or `skimage:<name>`; with `batch` B they are attacked in consecutive groups of
    B. `seconds` > 0 is each run's budget of attack time (CPU seconds on a CPU, wall seconds on a GPU): every method
    in a row gets the same, and `total_iterations` then only splits it between phases (`budget_split`). With
    `seconds` 0, `total_iterations` is the budget itself. `t` fixes the client's timestep (None: drawn from the seed).
    `defence` is (clip, sigma, keep). Each client seed s is the client's; the attacker's is s + `ATTACKER_SEED_OFFSET`.
    `client` is a FedAvg client's `LocalTraining` as (field, value) pairs, its N images the group of `batch`
    (empty: a FedSGD client). `control` hands the attack a control update instead of the real one (`control.py`),
    still scored against the real victims.
    """

    method: str
    model: str
    images: tuple[str, ...]
    client_seeds: tuple[int, ...] = (0,)
    size: int = 32
    batch: int = 1
    knows_eps: bool = True
    knows_t: bool = True
    prior: str = "attacked"
    defence: tuple[float, float, float] = (0.0, 0.0, 1.0)
    total_iterations: int = 100
    latent_share: float = 0.3
    ddim_steps: int = 2
    t: int | None = 100
    report_every: int = 5
    optimizer: str = "lbfgs"
    seconds: float = 0.0
    device: str = "auto"
    client: tuple[tuple[str, object], ...] = ()
    control: str = "none"

    @property
    def id(self) -> str:
        # Fields added later are left out at their defaults, so the cells run before them keep their ids.
        later = {"client": (), "control": "none"}
        fields_ = {k: v for k, v in asdict(self).items() if k not in later or v != later[k]}
        payload = json.dumps({"v": BENCH_VERSION, **fields_}, sort_keys=True)
        return f"{self.method}-{self.size}px-" + hashlib.sha1(payload.encode()).hexdigest()[:12]

    def budget_split(self) -> dict[str, int]:
        """AttackConfig iteration fields giving this method a total of `total_iterations`: GIDM and GIDM+ give
        `latent_share` of it to the latent phase (GIDM+ splits the rest into its joint and residual stages)."""
        n, method = self.total_iterations, spec(self.method)
        if not method.pixel_phase:
            return dict(latent_iterations=n, pixel_iterations=0)
        if method.latent_phase:
            latent = max(1, round(n * self.latent_share))
            return dict(latent_iterations=latent, pixel_iterations=n - latent)
        return dict(pixel_iterations=n, latent_iterations=0)

    def groups(self) -> list[tuple[tuple[str, ...], int]]:
        """(image group, seed) pairs this cell runs."""
        groups = [self.images[i:i + self.batch] for i in range(0, len(self.images) - self.batch + 1, self.batch)]
        return [(g, s) for g in groups for s in self.client_seeds]

    def cost(self) -> float:
        """Rough relative cost, for ordering work (largest first)."""
        if self.seconds > 0:
            return self.seconds * 10 * len(self.groups())  # ~10 evaluations a second: the same scale as below
        split = self.budget_split()
        units = split.get("pixel_iterations", 0) + split.get("latent_iterations", 0) * (self.ddim_steps + 1.5)
        if spec(self.method).for_private_secrets:  # eps is searched too
            units *= 1.5
        return units * (self.size / 32) ** 2 * self.batch * len(self.groups())

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        names = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        for key in ("images", "client_seeds", "defence"):
            if key in data:
                data[key] = tuple(data[key])
        if "client" in data:
            data["client"] = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in data["client"])
        return cls(**data)


@dataclass(frozen=True)
class SpeedProbe:
    """Per-step cost of each attack's phase as a ratio to one forward+backward of the same UNet, all measured in
    one process: (time of n+warm steps - time of warm steps) / n, so set-up costs cancel; median of `reps`."""

    model: str
    size: int = 32
    batch: int = 1
    ddim_steps: int = 2
    steps: int = 10
    reps: int = 3
    optimizer: str = "adam"
    device: str = "auto"

    @property
    def id(self) -> str:
        payload = json.dumps({"v": BENCH_VERSION, "probe": asdict(self)}, sort_keys=True)
        return f"speed-{self.size}px-" + hashlib.sha1(payload.encode()).hexdigest()[:12]

    def cost(self) -> float:
        return 1e9  # start it first: it is the one every cell's ratio is compared against


def cell_path(out: Path, job: Cell | SpeedProbe) -> Path:
    """Where a job's JSON lives under the suite's output folder."""
    return out / "cells" / f"{job.id}.json"
