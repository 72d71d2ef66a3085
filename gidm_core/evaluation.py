"""The teacher's view: scores an attack's events and result against the client's private batch.

Only this module holds the truth next to an attack's output. It pairs a batch's reconstructions with the originals
(attacks recover them in no particular order) before scoring, and never feeds anything back to the attack.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

import torch

from .attacks.events import Event, Result
from .client import PrivateBatch
from .metrics import pair_images, psnr_per_sample, score, to_unit


def set_accuracy(estimate: list[int], truth: list[int]) -> float:
    """The fraction of the true timesteps (a multiset) that the estimate holds, ignoring order: what the
    time-embedding gradient can tell when it cannot say which step drew which t."""
    return sum((Counter(estimate) & Counter(truth)).values()) / max(len(truth), 1)


class Evaluator:
    """Adds MSE, PSNR, SSIM, LPIPS, t accuracy (per image, and as a set) and eps error to events and results.

    LPIPS costs an AlexNet pass, so events get it every `lpips_every`-th scoring (0: never) and results always.
    """

    def __init__(self, batch: PrivateBatch, lpips_every: int = 5) -> None:
        self.batch = batch
        self.truth = to_unit(batch.x0)
        self.lpips_every = lpips_every
        self._scored = 0

    def metrics(self, reconstruction: torch.Tensor, t_estimate: Iterable[int] | None = None,
                eps_estimate: torch.Tensor | None = None, lpips: bool = True) -> dict[str, float]:
        recon, order = self._paired(reconstruction)
        out = score(recon, self.truth, lpips=lpips, order=order)
        # One secret per image follows its image's pairing; fresh noise's E x B secrets belong to steps, not images.
        per_image = self.batch.schedule is None or not self.batch.schedule.fresh
        if t_estimate is not None:
            t_hat = torch.as_tensor(list(t_estimate))
            if per_image and t_hat.numel() == self.batch.t.numel():
                t_hat = t_hat[order]
                out["t_accuracy"] = float((t_hat == self.batch.t).float().mean())
                out["t_abs_error"] = float((t_hat - self.batch.t).abs().float().mean())
            out["t_set_accuracy"] = set_accuracy(t_hat.tolist(), self.batch.t.tolist())
        if eps_estimate is not None and eps_estimate.shape == self.batch.eps.shape:
            eps_hat = eps_estimate.detach().cpu().float()
            eps_hat = eps_hat[order] if per_image else eps_hat
            diff = (eps_hat - self.batch.eps).flatten(1).norm(dim=1) / self.batch.eps.flatten(1).norm(dim=1)
            out["eps_error"] = float(diff.mean())
        return out

    def psnr_per_image(self, reconstruction: torch.Tensor) -> list[float]:
        """Each local image's PSNR (dB), in the client's order, against its paired reconstruction."""
        recon, order = self._paired(reconstruction)
        return psnr_per_sample(recon[order], self.truth)

    def _paired(self, reconstruction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction in [0, 1] and the Hungarian pairing of its slots with the originals."""
        recon = to_unit(reconstruction.detach().cpu().float())
        return recon, pair_images(recon, self.truth)

    def score_event(self, event: Event) -> Event:
        if not event.losses:  # the timestep event and a run that never produced a guess carry no image
            return event
        with_lpips = event.kind in ("done", "stopped", "error") or (
            self.lpips_every > 0 and self._scored % self.lpips_every == 0)
        self._scored += 1
        return event.with_metrics(self.metrics(event.reconstruction, event.t_estimate, event.eps_estimate,
                                               lpips=with_lpips))

    def track(self, events: Iterable[Event]) -> Iterator[Event]:
        """The same stream, every event scored."""
        for event in events:
            yield self.score_event(event)

    def score_result(self, result: Result) -> dict[str, float]:
        return self.metrics(result.reconstruction, result.t_estimate, result.eps_estimate)

    def per_image(self, result: Result) -> dict[str, list[float] | list[int] | bool | None]:
        """Each original's PSNR against its reconstruction after the Hungarian pairing, and whether the attack's
        timesteps alone pair them the same way (slot b holds the guess made at t_estimate[b]; None when the
        timesteps repeat, so they cannot tell the samples apart)."""
        recon, order = self._paired(result.reconstruction)
        by_t = pairing_by_t(result.t_estimate, self.batch.t.tolist())
        return {"psnr_per_image": psnr_per_sample(recon[order], self.truth), "pairing": order.tolist(),
                "pairing_by_t": by_t, "pairing_by_t_agrees": None if by_t is None else by_t == order.tolist()}


def pairing_by_t(t_estimate: Iterable[int] | None, t_true: list[int]) -> list[int] | None:
    """The pairing the timesteps give: entry i is the slot whose timestep is original i's (None when timesteps
    repeat or differ from the truth, so that they pair nothing)."""
    if t_estimate is None:
        return None
    slots = {t: i for i, t in enumerate(t_estimate)}
    if len(slots) != len(t_true) or len(set(t_true)) != len(t_true) or any(t not in slots for t in t_true):
        return None
    return [slots[t] for t in t_true]
