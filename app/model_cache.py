"""The models a user can pick, and a small process-wide cache of loaded ones (read-only; each run gets a copy)."""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict

import torch

from gidm_core.models import DiffusionModel, bundled_specs, load_model

RANDOM_SPECS = ["random:small-32", "random:attn-32", "random:tiny-32", "random:small-64"]

_MODELS: OrderedDict[tuple[str, str], DiffusionModel] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_MODEL_CACHE_SIZE = 4


def default_model() -> str:
    """The first bundled model, preferring faces32; a seeded random model when none is bundled (checked now)."""
    specs = bundled_specs()
    return "faces32" if "faces32" in specs else specs[0] if specs else RANDOM_SPECS[0]


def model_choices() -> list[str]:
    """The model dropdown's choices: what this install has bundled, then the seeded random models."""
    return bundled_specs() + RANDOM_SPECS


def get_model(spec: str, device: str) -> DiffusionModel:
    """A private copy of the model `spec` on `device`; loads (outside the lock, so a slow hub download does not
    hold up other sessions) and caches the first time."""
    key = (spec, device)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
    if model is None:
        model = load_model(spec, device)
        with _MODELS_LOCK:
            _MODELS[key] = model
            while len(_MODELS) > _MODEL_CACHE_SIZE:
                _MODELS.popitem(last=False)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
    return copy.deepcopy(model)


def run_device() -> str:
    """Where runs go: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"
