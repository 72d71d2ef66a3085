"""The benchmark's grid: which settings (rows) and methods (cells) each suite runs, and on what models and images.

Every row gives its methods the same attack time (`Cell.seconds`) and is read in one of two settings:
- "released": the setting of the paper's released code: a random-init attacked UNet, a separately trained prior
  for GIDM, a very small t (10), B = 1, eps and t known;
- "federated": the realistic one: the attacked model is the trained global model and is its own prior.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..faces import SKIMAGE_PHOTOS
from ..methods import KNOWN_SECRET_METHODS, PEER_METHODS
from .jobs import METHOD_ORDER, Cell, SpeedProbe

SUITES = ("quick", "standard", "resolution", "full", "peer", "tiny")
SETTINGS = {"released": "(a) released code", "federated": "(b) federated"}
RELEASED_T = 10  # "a very small t": the released code's setting


@dataclass(frozen=True)
class Row:
    """A table row: one setting, every method in it on the same budget."""

    label: str
    group: str  # what the row varies: "setting", "optimizer", "model", "defence", "t", "size", "batch"
    cells: tuple[Cell, ...]
    strength: float | None = None  # defence strength, for the defence plot
    defence_kind: str = ""
    setting: str = "federated"  # a key of SETTINGS
    training_round: int | None = None  # the attacked checkpoint's FedAvg round, for the leakage-by-round plot


def pick_models(size: int) -> tuple[str, str | None]:
    """(late model, early model or None): the bundled facesN when present, else a seeded random UNet."""
    from ..models import bundled_models

    bundled = bundled_models()
    name = f"faces{size}"
    if name in bundled:
        early = f"{name}@early" if "early" in bundled[name] else None
        return name, early
    return f"random:small-{size}", None


def training_round(spec: str) -> int | None:
    """The FedAvg round a bundled checkpoint was saved at (its training.json), None for anything else."""
    from ..models import BUNDLED_DIR, DEFAULT_CHECKPOINT

    name, _, checkpoint = spec.partition("@")
    record = BUNDLED_DIR / name / (checkpoint or DEFAULT_CHECKPOINT) / "training.json"
    return json.loads(record.read_text())["round"] if record.is_file() else None


def pick_images(count: int) -> tuple[str, ...]:
    """Bundled held-out victims when present, else scikit-image photos."""
    from ..images import victims

    bundled = [v.name for v in sorted(victims(), key=lambda v: v.kind != "face")]  # faces first: what models learn
    names = bundled if len(bundled) >= count else [f"skimage:{n}" for n in SKIMAGE_PHOTOS]
    return tuple(names[:count])


def _row(label: str, group: str, base: Cell, methods: Iterable[str], **extra) -> Row:
    cells = []
    for method in methods:
        cell = replace(base, method=method)
        if method in ("dlg", "ig"):
            cell = replace(cell, prior="attacked", ddim_steps=0, latent_share=0.0)  # unused: one cell, not two
        cells.append(cell)
    setting = extra.pop("setting", "federated")
    return Row(f"{SETTINGS[setting]}: {label}", group, tuple(cells), setting=setting,
               training_round=training_round(base.model), **extra)


NOISE_LEVELS = (1e-3, 1e-2, 1e-1)  # Gaussian noise std after clipping the update's norm to 1
PRUNE_LEVELS = (0.1, 0.01)  # fraction of each tensor kept
# Attack seconds per run at 32 px with eps and t known; private secrets get 3x (GIDM+ needs ~600 evaluations),
# batches of 4 3x, 64 px 4x (four times the pixels), 128 px on a GPU its own.
QUICK_SECONDS = 20.0
FULL_SECONDS = 60.0


def _tiny() -> tuple[list[Row], list[SpeedProbe]]:
    """Seconds on a tiny random UNet, iteration budgets (deterministic): for tests."""
    base = Cell(method="dlg", model="random:tiny-32", images=pick_images(1), total_iterations=12, ddim_steps=1,
                report_every=3)
    rows = [_row("32 px, eps and t known", "setting", base, ("dlg", "gidm")),
            _row("32 px, private eps and t", "setting", replace(base, knows_eps=False, knows_t=False),
                 ("gidm-plus",)),
            *[_row(f"noise {s:g}", "defence", replace(base, defence=(1.0, s, 1.0)), ("dlg",), strength=s,
                   defence_kind="noise") for s in (1e-4, 1e-2)],
            _row("32 px, eps and t known, control: noise", "control", replace(base, control="noise"), ("dlg",))]
    return rows, [SpeedProbe("random:tiny-32", steps=3, reps=1)]


def _quick() -> tuple[list[Row], list[SpeedProbe]]:
    """32 px on a 2-core CPU in <= 15 minutes: both settings, known and private, B = 1 and 4, one defence."""
    late, early = pick_models(32)
    base = Cell(method="dlg", model=late, images=pick_images(2), total_iterations=1000, t=100, report_every=5,
                seconds=QUICK_SECONDS)
    private = replace(base, knows_eps=False, knows_t=False, seconds=3 * QUICK_SECONDS)
    rows = [_row("eps and t known", "setting", base, KNOWN_SECRET_METHODS),
            _row("eps and t known, Adam", "optimizer", replace(base, optimizer="adam"), ("dlg", "gidm")),
            _row("private eps and t", "setting", private, METHOD_ORDER),
            # t = 100 for all four, so that the row isolates the batch (the full suite draws each sample's t).
            _row("batch 4, eps and t known", "batch",
                 replace(base, images=pick_images(4), batch=4, seconds=6 * QUICK_SECONDS), ("dlg", "gidm")),
            _row("clip 1 + noise 0.01", "defence", replace(base, defence=(1.0, 1e-2, 1.0)), ("dlg", "ig", "gidm"),
                 strength=1e-2, defence_kind="noise")]
    if early:
        rows.append(_row("early-round model, eps and t known", "model", replace(base, model=early), ("dlg", "gidm")))
    if not late.startswith("random:"):
        released = replace(base, model="random:small-32", prior=late, t=RELEASED_T)
        rows.append(_row(f"random-init UNet, prior {late}, t = {RELEASED_T}", "setting", released, KNOWN_SECRET_METHODS,
                         setting="released"))
    return rows, [SpeedProbe(late, optimizer="adam"), SpeedProbe(late, optimizer="lbfgs")]


# FedAvg clients as diffusers' training loop runs them (docs/realistic_clients.md): E local steps, fresh eps and t
# at every step, AdamW, N local images in mini-batches; eps, t and the batch order known (the paper's threat).
REALISTIC_CLIENTS = {
    "SGD, E = 4, fresh noise": dict(steps=4, noise="fresh"),
    "AdamW, E = 1": dict(steps=1, optimizer="adamw", weight_decay=0.01),
    "AdamW, E = 4, fresh noise": dict(steps=4, optimizer="adamw", weight_decay=0.01, noise="fresh"),
}


def _realistic_clients(base: Cell) -> list[Row]:
    """The "realistic clients" row group beside the FedSGD rows: the same methods and images, each client kind
    given the FedSGD row's time (x 5 for N = 4 images in mini-batches of 2)."""
    rows = [_row(f"32 px, client {label}", "realistic clients", replace(base, client=tuple(sorted(kw.items()))),
                 ("dlg", "gidm")) for label, kw in REALISTIC_CLIENTS.items()]
    four = dict(steps=4, noise="fresh", local_batch=2)
    rows.append(_row("32 px, client SGD, E = 4, fresh noise, N = 4 images in batches of 2", "realistic clients",
                     replace(base, batch=4, client=tuple(sorted(four.items())), seconds=5 * base.seconds),
                     ("dlg", "gidm")))
    return rows


def _full(device: str) -> tuple[list[Row], list[SpeedProbe]]:
    """Every axis at 32 and 64 px, four images x two seeds per cell; on a GPU also a 128 px released-setting row."""
    rows: list[Row] = []
    probes = []
    for size in (32, 64):
        late, early = pick_models(size)
        seconds = FULL_SECONDS * (size // 32) ** 2
        px = f"{size} px"
        base = Cell(method="dlg", model=late, images=pick_images(4), client_seeds=(0, 1), size=size,
                    total_iterations=1000, t=100, report_every=5, seconds=seconds)
        private = replace(base, knows_eps=False, knows_t=False, seconds=3 * seconds)
        batch = replace(base, batch=4, t=None, seconds=3 * seconds)
        rows += [_row(f"{px}, eps and t known", "size", base, KNOWN_SECRET_METHODS),
                 _row(f"{px}, eps and t known, Adam", "optimizer", replace(base, optimizer="adam"),
                      KNOWN_SECRET_METHODS),
                 _row(f"{px}, private eps and t", "setting", private, METHOD_ORDER),
                 _row(f"{px}, private eps and t, Adam", "optimizer", replace(private, optimizer="adam"), METHOD_ORDER),
                 _row(f"{px}, batch 4, eps and t known", "batch", batch, KNOWN_SECRET_METHODS),
                 _row(f"{px}, batch 4, private eps and t", "batch", replace(batch, knows_eps=False, knows_t=False),
                      ("dlg", "gidm-plus"))]
        for t in (10, 400, 800):
            rows += [_row(f"{px}, eps and t known, t = {t}", "t", replace(base, t=t), ("dlg", "gidm")),
                     _row(f"{px}, private eps and t, t = {t}", "t", replace(private, t=t), ("dlg", "gidm-plus"))]
        if early:
            rows += [_row(f"{px}, early-round model, eps and t known", "model", replace(base, model=early),
                          KNOWN_SECRET_METHODS),
                     _row(f"{px}, early-round model, private eps and t", "model", replace(private, model=early),
                          ("dlg", "gidm-plus"))]
        if not late.startswith("random:"):
            released = replace(base, model=f"random:small-{size}", prior=late, t=RELEASED_T)
            rows.append(_row(f"{px}, random-init UNet, prior {late}, t = {RELEASED_T}", "setting", released,
                             KNOWN_SECRET_METHODS, setting="released"))
        for s in NOISE_LEVELS:
            rows.append(_row(f"{px}, clip 1 + noise {s:g}", "defence", replace(base, defence=(1.0, s, 1.0)),
                             ("dlg", "ig", "gidm"), strength=s, defence_kind="noise"))
        for keep in PRUNE_LEVELS:
            rows.append(_row(f"{px}, keep top {keep:.0%}", "defence", replace(base, defence=(0.0, 0.0, keep)),
                             ("dlg", "ig", "gidm"), strength=1 - keep, defence_kind="pruning"))
        probes += [SpeedProbe(late, size=size, optimizer="adam"), SpeedProbe(late, size=size, optimizer="lbfgs")]
        if size == 32:
            rows += _realistic_clients(base)
    if device.startswith("cuda"):
        # The paper's scale: a full-size random-init UNet attacked at 128 px, K = 16 DDIM steps as in the released
        # code; the prior is the largest trained model we ship (fully convolutional, so it draws 128 px images).
        prior, _ = pick_models(64)
        big = Cell(method="dlg", model="random:ddpm-128", images=pick_images(4), client_seeds=(0, 1), size=128,
                   total_iterations=1000, t=RELEASED_T, ddim_steps=16, report_every=5, seconds=300.0, prior=prior)
        rows.append(_row(f"128 px, random-init DDPM UNet, prior {prior}, t = {RELEASED_T}", "size", big,
                         KNOWN_SECRET_METHODS, setting="released"))
        probes.append(SpeedProbe("random:ddpm-128", size=128, ddim_steps=16, optimizer="lbfgs"))
    return rows, probes


# The standard suite: n = 8 runs per cell (4 held-out faces x 2 client seeds; batches: 8 faces in groups x more
# seeds), STANDARD_SECONDS CPU-s per run and unit of cost. It holds 98 units of 8 runs (docs/evidence.md), so
# 98 x 8 x 15 = 11,760 attack CPU-seconds: 98 minutes on 2 workers of one thread, plus ~3 % scoring and set-up.
STANDARD_SECONDS = 15.0
STANDARD_HOURS = 2.0  # what the suite must fit on this 2-core CPU with 2 workers
STANDARD_CONTROL_METHODS = ("dlg", "gidm-latent", "gidm")


def _standard() -> tuple[list[Row], list[SpeedProbe]]:
    """The rows that test a claim, each cell n = 8 (the quick suite's rows, plus t, batch 8, every defence level,
    the control rows and the realistic clients), sized to fit `STANDARD_HOURS` on a 2-core CPU."""
    late, early = pick_models(32)
    base = Cell(method="dlg", model=late, images=pick_images(4), client_seeds=(0, 1), total_iterations=1000, t=100,
                report_every=5, seconds=STANDARD_SECONDS)
    private = replace(base, knows_eps=False, knows_t=False, seconds=3 * STANDARD_SECONDS)
    eight = pick_images(8)
    rows = [_row("eps and t known", "setting", base, KNOWN_SECRET_METHODS),
            _row("eps and t known, Adam", "optimizer", replace(base, optimizer="adam"), ("dlg", "gidm")),
            _row("private eps and t", "setting", private, METHOD_ORDER),
            _row("batch 4, eps and t known", "batch",
                 replace(base, images=eight, client_seeds=(0, 1, 2, 3), batch=4, seconds=3 * STANDARD_SECONDS),
                 ("dlg", "gidm")),
            _row("batch 8, eps and t known", "batch",
                 replace(base, images=eight, client_seeds=tuple(range(8)), batch=8, seconds=6 * STANDARD_SECONDS),
                 ("dlg", "gidm")),
            # Each image's own t, drawn by the client: the update separates per sample and DLG runs the curriculum.
            _row("batch 8, distinct t, eps and t known", "batch",
                 replace(base, images=eight, client_seeds=tuple(range(8)), batch=8, t=None,
                         seconds=6 * STANDARD_SECONDS), ("dlg", "gidm"))]
    rows += [_row(f"eps and t known, t = {t}", "t", replace(base, t=t), ("dlg", "gidm")) for t in (10, 400, 800)]
    rows += [_row(f"clip 1 + noise {s:g}", "defence", replace(base, defence=(1.0, s, 1.0)), ("dlg", "gidm-latent",
                  "gidm"), strength=s, defence_kind="noise") for s in NOISE_LEVELS]
    rows += [_row(f"keep top {keep:.0%}", "defence", replace(base, defence=(0.0, 0.0, keep)), ("dlg", "gidm"),
                  strength=1 - keep, defence_kind="pruning") for keep in PRUNE_LEVELS]
    rows += [_row(f"eps and t known, control: {control}", "control", replace(base, control=control),
                  STANDARD_CONTROL_METHODS) for control in ("other-image", "noise")]
    if early:
        rows.append(_row("early-round model, eps and t known", "model", replace(base, model=early), ("dlg", "gidm")))
    if not late.startswith("random:"):
        released = replace(base, model="random:small-32", prior=late, t=RELEASED_T)
        rows.append(_row(f"random-init UNet, prior {late}, t = {RELEASED_T}", "setting", released,
                         KNOWN_SECRET_METHODS, setting="released"))
    realistic = _realistic_clients(base)
    wide = realistic[-1]  # N = 4 images per client: 8 faces in two clients x 4 seeds, as the batch 4 row
    realistic[-1] = replace(wide, cells=tuple(replace(c, images=eight, client_seeds=(0, 1, 2, 3))
                                              for c in wide.cells))
    return rows + realistic, [SpeedProbe(late, optimizer="lbfgs")]


# The peer suite: breaching's shipped configs beside the project's IG, DLG and GIDM on the same rounds (held-out
# faces, client seeds, t = 100, eps and t known), each run PEER_SECONDS CPU-s: 6 x 4 x 30 = 720 attack CPU-s.
PEER_SECONDS = 30.0
PEER_PROJECT_METHODS = ("ig", "dlg", "gidm")


def _peer() -> tuple[list[Row], list[SpeedProbe]]:
    """One row: breaching (`attacks/peer.py`, optional) and the project's pixel and GIDM attacks, at equal time."""
    late, _ = pick_models(32)
    base = Cell(method="dlg", model=late, images=pick_images(4), client_seeds=(0,), total_iterations=1000, t=100,
                report_every=5, seconds=PEER_SECONDS)
    return [_row("eps and t known, breaching beside this project", "peer", base,
                 (*PEER_PROJECT_METHODS, *PEER_METHODS))], []


# What resolution costs on a CPU: the same attack at 32, 64 and 128 px, seconds growing with the pixels (x 4 per
# doubling), n = 2 per cell (21 attack CPU-minutes in all), with the step-time probe at each size.
RESOLUTION_SECONDS = 15.0


def _resolution() -> tuple[list[Row], list[SpeedProbe]]:
    """32 and 64 px on the bundled trained models (eps and t known, t = 100), and 128 px the only way this project
    reaches it: a random-init small UNet (the released code's setting, t = RELEASED_T) with the largest trained
    model as GIDM's prior (fully convolutional, so it draws 128 px images)."""
    rows, probes = [], []
    for size in (32, 64):
        late, _ = pick_models(size)
        cell = Cell(method="dlg", model=late, images=pick_images(2), size=size, total_iterations=1000, t=100,
                    report_every=5, seconds=RESOLUTION_SECONDS * (size // 32) ** 2)
        rows.append(_row(f"{size} px, eps and t known", "size", cell, ("dlg", "gidm")))
        probes.append(SpeedProbe(late, size=size, optimizer="lbfgs"))
    prior, _ = pick_models(64)
    big = Cell(method="dlg", model="random:small-128", images=pick_images(2), size=128, total_iterations=1000,
               t=RELEASED_T, report_every=5, seconds=16 * RESOLUTION_SECONDS, prior=prior)
    rows.append(_row(f"128 px, random-init UNet, prior {prior}, t = {RELEASED_T}", "size", big, ("dlg", "gidm"),
                     setting="released"))
    probes.append(SpeedProbe("random:small-128", size=128, optimizer="lbfgs"))
    return rows, probes


def build_suite(name: str, device: str = "cpu") -> tuple[list[Row], list[SpeedProbe]]:
    """The rows and speed probes of suite `name`: tiny (tests), quick (a 2-core CPU in 15 minutes), standard (n = 8
    per cell in 2 hours on a 2-core CPU), resolution (32 / 64 / 128 px on a CPU), full (hours; + 128 px on a GPU
    when `device` is cuda), peer (breaching beside this project, ~12 CPU-minutes)."""
    if name == "tiny":
        return _tiny()
    if name == "quick":
        return _quick()
    if name == "standard":
        return _standard()
    if name == "resolution":
        return _resolution()
    if name == "full":
        return _full(device)
    if name == "peer":
        return _peer()
    raise ValueError(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}")
