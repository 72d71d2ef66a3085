"""The damped Fourier basis of the pixel phase: an exact change of variables, chosen only for SGD deltas with a
low-noise step, which an attack then searches (its gain is measured on faces32 in docs/realistic_clients.md: it
does not show at a test's budget)."""

from __future__ import annotations

import pytest
import torch

from gidm_core.attacks.spectral import SpectralPixels, damped
from gidm_core.client import PrivateBatch, share
from gidm_core.config import LocalTraining, ThreatModel, attack_config
from gidm_core.protocol import play


def test_the_basis_is_a_change_of_variables():
    basis = SpectralPixels(32, 32, torch.device("cpu"))
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.allclose(basis.image(basis.coefficients(x)), x, atol=1e-5)
    assert basis.weight.max() == 1 and basis.weight.min() < 0.2  # the finest detail moves 5x slower


@pytest.mark.parametrize("training, t, expected", [
    (LocalTraining(steps=2, noise="fresh"), [5, 300], True),
    (LocalTraining(steps=2, noise="fresh"), [60, 300], False),
    (LocalTraining(steps=2, noise="fresh", optimizer="adamw"), [5, 300], False),
    (None, [5], False),
])
def test_only_sgd_deltas_with_a_low_noise_step_are_damped(tiny_model, photo32, training, t, expected):
    batch = PrivateBatch.draw(photo32, tiny_model.num_train_timesteps, 0, t=None if training else t,
                              training=training)
    update = share(tiny_model, batch, ThreatModel(), 0, training)
    assert damped(tiny_model, update, torch.tensor(t)) is expected


def test_an_attack_on_a_low_noise_sgd_delta_searches_the_damped_basis(tiny_model, photo32, one_thread):
    """E = 4 fresh steps, one of them low-noise: the pixel phase runs in the basis, says so, and descends."""
    training = LocalTraining(steps=4, lr=1e-3, noise="fresh")
    alpha_bar = tiny_model.scheduler.alphas_cumprod

    def drawn_t(seed: int) -> torch.Tensor:
        return PrivateBatch.draw(photo32, len(alpha_bar), seed, training=training).t

    seed = next(s for s in range(200) if ((1 - alpha_bar[drawn_t(s)]).sqrt() < 0.1).any())  # a low-noise step
    config = attack_config("dlg", pixel_iterations=12, report_every=1000)
    played = play(tiny_model, photo32, ThreatModel(), config, client_seed=seed, training=training)
    result = played.run.run_to_end()
    assert result.details["pixel_basis"] == "damped Fourier"
    history = [h["matching"] for h in result.history if h["phase"] == "pixel"]
    assert result.matching_loss < 0.5 * history[0]
