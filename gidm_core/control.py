"""Control updates: what the server is handed in place of the client's real update in a control run.

A generative prior can paint a plausible face from any objective, so a good-looking reconstruction is not by itself
leakage (arXiv 2503.11514, sec. III-C: GGL fed random noise still returns images like the victim). A control run
hands the attack an update that holds nothing of the victim and still scores its answer against the victim:

- "other-image": the update the same client would share for an unrelated image of the same kind (another held-out
  face), with its own secrets drawn under the same policy (t fixed when the real run fixes it, else drawn) and the
  same defence, revealed to the attacker as far as the threat model reveals the real ones;
- "noise": Gaussian noise scaled tensor by tensor to the real (defended) update's L2 norms, with the real update's
  revealed eps and t.

Every draw comes from the "control" stream of the client's seed (`seeds.stream`), apart from the client's own
secrets, its defence's noise and the attacker's guesses.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from .client import PrivateBatch, SharedUpdate, share
from .config import ConfigError, LocalTraining, ThreatModel
from .models import DiffusionModel
from .seeds import MAX_SEED, stream


def control_update(model: DiffusionModel, real: SharedUpdate, threat: ThreatModel, client_seed: int, *,
                   others: torch.Tensor | None = None, t: list[int] | None = None,
                   training: LocalTraining | None = None) -> SharedUpdate:
    """The update handed to the attacker under `threat.control` ("none" returns `real`). `others` are the unrelated
    images for "other-image" (the real batch's shape), `t` and `training` the real client's fixed timesteps and
    local training, so that the control client follows the same policy."""
    if threat.control == "none":
        return real
    generator = stream(client_seed, "control")
    if threat.control == "noise":
        noise = []
        for g in real.gradients:
            draw = torch.randn(g.shape, generator=generator).to(g)
            noise.append(draw * (torch.linalg.vector_norm(g) / torch.linalg.vector_norm(draw).clamp_min(1e-30)))
        return replace(real, gradients=tuple(noise))
    if others is None or others.shape[0] != real.batch_size or tuple(others.shape[1:]) != real.image_shape:
        raise ConfigError(f"an other-image control needs {real.batch_size} unrelated image(s) of the victims' "
                          f"shape {real.image_shape}", "control")
    seed = int(torch.randint(0, MAX_SEED, (1,), generator=generator))  # the control client's own seed
    batch = PrivateBatch.draw(others, model.num_train_timesteps, seed, t, training)
    return share(model, batch, threat, seed=seed, training=training)
