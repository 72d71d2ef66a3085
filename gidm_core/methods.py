"""The attack methods, one frozen spec each: what every front end (config, CLI, bench, plots, app, export) needs to
know about a method lives here and nowhere else. Adding a method is its attack module plus one entry below.

A spec describes; it does not run anything. Its `code` names the attack function ("module:function" inside
`gidm_core.attacks`), which `attacks.ATTACKS` imports, so this module stays free of torch; the attack contract test
checks that each method emits the phases its spec lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """One attack method.

    `phases` are the optimisation phases it runs, in order (an event's `phase`; the informational "timestep"
    phase, emitted when t is recovered, is not one of them). `latent_phase` / `pixel_phase`: whether
    `latent_iterations` / `pixel_iterations` apply. `defaults` are its own `AttackConfig` values.
    `for_private_secrets`: made for eps and t kept private (GIDM+); the others are run with them known.
    `colour` is its RGB colour in every plot. `code`: where its attack function is, "module:function" inside
    `gidm_core.attacks`.
    """

    name: str
    label: str
    colour: tuple[int, int, int]
    code: str
    phases: tuple[str, ...]
    latent_phase: bool
    pixel_phase: bool
    for_private_secrets: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


# Each method's own defaults: DLG matches squared L2 distance; Inverting Gradients uses cosine distance plus total
# variation (Geiping et al. 2020); GIDM matches L2 in both phases, as the paper does. The pixel-space methods get
# 400 evaluations by default; GIDM+ 1000 (300 in GIDM's latent phase, then 490 joint pixel and 210 residual),
# which it needs to converge on eps as well as the image (docs/gidm_plus.md). In table order.
SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("dlg", "DLG", (31, 119, 180), "pixel:pixel_attack", ("pixel",), latent_phase=False,
               pixel_phase=True, defaults=dict(distance="l2", tv_weight=0.0, pixel_iterations=400)),
    MethodSpec("ig", "IG", (255, 127, 14), "pixel:pixel_attack", ("pixel",), latent_phase=False, pixel_phase=True,
               defaults=dict(distance="cosine", tv_weight=1e-3, layer_weights="uniform", pixel_iterations=400)),
    MethodSpec("gidm-latent", "GIDM-latent", (148, 103, 189), "gidm:gidm_attack", ("latent",), latent_phase=True,
               pixel_phase=False, defaults=dict(distance="l2", tv_weight=0.0, latent_iterations=400)),
    MethodSpec("gidm", "GIDM", (44, 160, 44), "gidm:gidm_attack", ("latent", "pixel"), latent_phase=True,
               pixel_phase=True, defaults=dict(distance="l2", tv_weight=0.0)),
    MethodSpec("gidm-plus", "GIDM+", (214, 39, 40), "gidm_plus:gidm_plus_attack", ("latent", "pixel", "residual"),
               latent_phase=True, pixel_phase=True, for_private_secrets=True,
               defaults=dict(distance="l2", tv_weight=0.0, latent_iterations=300, pixel_iterations=700)),
)
REGISTRY: Mapping[str, MethodSpec] = MappingProxyType({spec.name: spec for spec in SPECS})
METHODS: tuple[str, ...] = tuple(REGISTRY)  # table order: every front end lists methods in this order
METHOD_LABELS: Mapping[str, str] = MappingProxyType({spec.name: spec.label for spec in SPECS})
KNOWN_SECRET_METHODS: tuple[str, ...] = tuple(spec.name for spec in SPECS if not spec.for_private_secrets)

# Peers: the reference toolkit breaching's shipped attack configs, run on the same rounds by `attacks/peer.py`
# (optional: requirements-peer.txt). Not methods of this project: no front end but the benchmark offers them.
# name -> (breaching's config, label), in table order after the project's methods.
PEER_METHODS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "breaching-ig": ("invertinggradients", "breaching IG"), "breaching-dlg": ("deepleakage", "breaching DLG"),
    "breaching-modern": ("modern", "breaching modern")})
PEER_INSTALL_HINT = ("the peer suite runs the reference toolkit breaching, which is not installed: "
                     "pip install -r requirements-peer.txt")


def spec(method: str) -> MethodSpec:
    """The spec of `method` (a KeyError names an unknown one: callers validate names first, in `config`)."""
    return REGISTRY[method]
