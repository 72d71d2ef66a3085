"""The benchmark's grid: which settings (rows) and methods (cells) each suite runs, and on what models and images."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from ..datasets import SKIMAGE_PHOTOS
from .jobs import METHOD_ORDER, Cell, SpeedProbe

SUITES = ("quick", "full", "tiny")


@dataclass(frozen=True)
class Row:
    """A table row: one setting, every method in it on the same budget."""

    label: str
    group: str  # what the row varies: "setting", "model", "defence", "t", "prior", "size", "batch"
    cells: tuple[Cell, ...]
    strength: float | None = None  # defence strength, for the defence plot
    defence_kind: str = ""


def pick_models(size: int) -> tuple[str, str | None]:
    """(late model, early model or None): the bundled facesN when present, else a seeded random UNet."""
    from ..models import bundled_models

    bundled = bundled_models()
    name = f"faces{size}"
    if name in bundled:
        early = f"{name}@early" if "early" in bundled[name] else None
        return name, early
    return f"random:small-{size}", None


def pick_images(count: int) -> tuple[str, ...]:
    """Bundled held-out victims when present, else scikit-image photos."""
    from ..data import victims

    bundled = [v.name for v in sorted(victims(), key=lambda v: v.kind != "face")]  # faces first: what models learn
    names = bundled if len(bundled) >= count else [f"skimage:{n}" for n in SKIMAGE_PHOTOS]
    return tuple(names[:count])


def _row(label: str, group: str, base: Cell, methods: Iterable[str], **extra) -> Row:
    cells = []
    for method in methods:
        cell = replace(base, method=method)
        if method in ("dlg", "ig", "gidm-plus"):
            cell = replace(cell, prior="attacked", ddim_steps=0, latent_share=0.0)  # unused: one cell, not two
        cells.append(cell)
    return Row(label, group, tuple(cells), **extra)


NOISE_LEVELS = (1e-3, 1e-2, 1e-1)  # Gaussian noise std after clipping the update's norm to 1
PRUNE_LEVELS = (0.5, 0.1, 0.01)  # fraction of each tensor kept


def build_suite(name: str) -> tuple[list[Row], list[SpeedProbe]]:
    """The rows and speed probes of suite `name`: tiny (tests), quick (a 2-core CPU), full (a GPU)."""
    if name == "tiny":
        base = Cell(method="dlg", model="random:tiny-32", images=pick_images(1), iterations=12, ddim_steps=1,
                    report_every=3)
        rows = [_row("32 px, eps and t known", "setting", base, ("dlg", "gidm")),
                _row("32 px, private eps and t", "setting", replace(base, knows_eps=False, knows_t=False),
                     ("gidm-plus",)),
                *[_row(f"noise {s:g}", "defence", replace(base, defence=(1.0, s, 1.0)), ("dlg",), strength=s,
                       defence_kind="noise") for s in (1e-4, 1e-2)]]
        return rows, [SpeedProbe("random:tiny-32", steps=3, reps=1)]
    if name == "quick":
        late, early = pick_models(32)
        base = Cell(method="dlg", model=late, images=pick_images(2), iterations=150, t=100)
        # GIDM+ is the private-secrets attack: with eps and t revealed it would only repeat its private result at
        # a higher cost per step, so the quick suite runs it where eps and t are private.
        known = tuple(m for m in METHOD_ORDER if m != "gidm-plus")
        rows = [_row("eps and t known", "setting", base, known),
                _row("eps and t known, Adam", "optimizer", replace(base, optimizer="adam"), known),
                _row("private eps and t", "setting", replace(base, knows_eps=False, knows_t=False), METHOD_ORDER)]
        if early:
            rows.append(_row("early-round model, eps and t known", "model", replace(base, model=early), known))
        for s in NOISE_LEVELS:
            rows.append(_row(f"clip 1 + noise {s:g}", "defence", replace(base, defence=(1.0, s, 1.0)),
                             ("dlg", "ig", "gidm"), strength=s, defence_kind="noise"))
        # GIDM+ needs ~1000 evaluations to converge: the rows by t give it and joint DLG 600 each.
        private = replace(base, knows_eps=False, knows_t=False, iterations=600)
        for t in (10, 100, 400, 800):
            rows.append(_row(f"private eps and t, t = {t}, 600 iterations", "t", replace(private, t=t),
                             ("dlg", "gidm-plus")))
        return rows, [SpeedProbe(late, optimizer="adam"), SpeedProbe(late, optimizer="lbfgs")]
    if name == "full":
        rows: list[Row] = []
        probes = []
        for size in (32, 64, 128):
            late, early = pick_models(size)
            budget = 1000 if size < 128 else 2000
            base = Cell(method="dlg", model=late, images=pick_images(4), seeds=(0, 1), size=size,
                        iterations=budget, ddim_steps=4, t=100, report_every=10)
            label = f"{size} px"
            rows.append(_row(f"{label}, eps and t known", "size", base, METHOD_ORDER))
            rows.append(_row(f"{label}, private eps and t", "setting",
                             replace(base, knows_eps=False, knows_t=False), METHOD_ORDER))
            rows.append(_row(f"{label}, batch 4", "batch", replace(base, batch=4, t=None), METHOD_ORDER))
            if early:
                rows.append(_row(f"{label}, early-round model", "model", replace(base, model=early), METHOD_ORDER))
                rows.append(_row(f"{label}, early-round model, prior = late model", "prior",
                                 replace(base, model=early, prior=late), METHOD_ORDER))
            if size == 32:
                for s in NOISE_LEVELS:
                    rows.append(_row(f"{label}, clip 1 + noise {s:g}", "defence",
                                     replace(base, defence=(1.0, s, 1.0)), METHOD_ORDER, strength=s,
                                     defence_kind="noise"))
                for keep in PRUNE_LEVELS:
                    rows.append(_row(f"{label}, keep top {keep:.0%}", "defence", replace(base, defence=(0, 0, keep)),
                                     METHOD_ORDER, strength=1 - keep, defence_kind="pruning"))
                for t in (10, 100, 400, 800):
                    rows.append(_row(f"{label}, private eps and t, t = {t}", "t",
                                     replace(base, knows_eps=False, knows_t=False, t=t), ("dlg", "gidm-plus")))
            probes.append(SpeedProbe(late, size=size, ddim_steps=4))
        return rows, probes
    raise ValueError(f"unknown suite {name!r}: choose one of {', '.join(SUITES)}")
