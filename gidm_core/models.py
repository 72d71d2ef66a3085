"""One place to get a diffusion model: a bundled one, a local diffusers folder, a hub id, or a seeded random one.

Every model comes back ready for gradient inversion: float32, eval mode, and attention that supports double
backward (PyTorch's fused CPU attention kernel has no second derivative; the plain processor does).
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.models.attention_processor import Attention, AttnProcessor

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_DIR = ASSETS / "models"
DEFAULT_CHECKPOINT = "final"


class ModelLoadError(RuntimeError):
    """A model spec that cannot be loaded; the message is one line meant for the user."""


@dataclass
class DiffusionModel:
    """A UNet and the noise schedule it was trained with: all that the client trains and the server attacks."""

    unet: UNet2DModel
    scheduler: DDPMScheduler
    name: str

    @property
    def image_size(self) -> int:
        size = self.unet.config.sample_size
        return int(size if isinstance(size, int) else size[0])

    @property
    def channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def prediction_type(self) -> str:
        return str(self.scheduler.config.prediction_type)

    @property
    def downsample_factor(self) -> int:
        """Input sizes must be multiples of this for the UNet's skip connections to line up."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def check_size(self, size: int) -> None:
        if size < self.downsample_factor or size % self.downsample_factor:
            raise ModelLoadError(
                f"image size {size} must be a positive multiple of {self.downsample_factor} for model {self.name}"
            )

    def to(self, device: str | torch.device) -> DiffusionModel:
        self.unet.to(device)
        return self


def prepare_for_inversion(unet: UNet2DModel) -> UNet2DModel:
    """Make `unet` twice differentiable and deterministic: plain attention, float32, eval mode, grads on."""
    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor())
    unet.float().eval()
    unet.requires_grad_(True)
    return unet


# Seeded random-init architectures, for tests and demos before any training. Sizes follow NOTES.md's cost table.
RANDOM_ARCHITECTURES: dict[str, dict] = {
    "tiny": dict(
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    ),
    "small": dict(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    ),
    "attn": dict(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    ),
}
_RANDOM_SPEC = re.compile(r"^random:(?P<arch>[a-z]+)(?:-(?P<size>\d+))?(?:-(?P<pred>epsilon|v_prediction|sample))?$")


def random_model(arch: str = "tiny", size: int = 32, prediction_type: str = "epsilon", channels: int = 3,
                 seed: int = 0) -> DiffusionModel:
    """A seeded random-init UNet2DModel with a 1000-step linear DDPM schedule."""
    if arch not in RANDOM_ARCHITECTURES:
        raise ModelLoadError(f"unknown random architecture {arch!r}: choose one of {', '.join(RANDOM_ARCHITECTURES)}")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels,
                           **RANDOM_ARCHITECTURES[arch])
    finally:
        torch.random.set_rng_state(generator_state)
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type)
    suffix = "" if prediction_type == "epsilon" else f"-{prediction_type}"
    return DiffusionModel(prepare_for_inversion(unet), scheduler, f"random:{arch}-{size}{suffix}")


def bundled_models() -> dict[str, list[str]]:
    """Bundled model names and their checkpoints (e.g. {"faces32": ["early", "final"]})."""
    found: dict[str, list[str]] = {}
    if BUNDLED_DIR.is_dir():
        for model_dir in sorted(p for p in BUNDLED_DIR.iterdir() if p.is_dir()):
            checkpoints = sorted(c.name for c in model_dir.iterdir() if (c / "unet" / "config.json").is_file())
            if checkpoints:
                found[model_dir.name] = checkpoints
    return found


def bundled_specs() -> list[str]:
    """Every bundled model as a spec string, the default checkpoint written as the bare name."""
    return [name if ckpt == DEFAULT_CHECKPOINT else f"{name}@{ckpt}"
            for name, ckpts in bundled_models().items() for ckpt in ckpts]


def _load_folder(folder: Path, name: str) -> DiffusionModel:
    """A diffusers pipeline folder (unet/ + scheduler/) or a bare UNet folder with scheduler_config.json beside it."""
    unet_dir = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    sched_dir = folder / "scheduler" if (folder / "scheduler").is_dir() else folder
    if not (unet_dir / "config.json").is_file():
        raise ModelLoadError(f"{folder} is not a diffusers model folder (no unet/config.json or config.json)")
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, EnvironmentError, ValueError) as err:
        raise ModelLoadError(f"cannot load UNet from {unet_dir}: {str(err).splitlines()[0]}") from None
    if (sched_dir / "scheduler_config.json").is_file():
        scheduler = DDPMScheduler.from_pretrained(sched_dir)
    else:
        scheduler = DDPMScheduler(num_train_timesteps=int(unet.config.get("num_train_timesteps") or 1000))
    return DiffusionModel(prepare_for_inversion(unet), scheduler, name)


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_model(spec: str, device: str | torch.device = "cpu") -> DiffusionModel:
    """Resolve `spec`, in this order: `random:<arch>[-<size>][-<prediction type>]`, a bundled `name[@checkpoint]`,
    a local folder, then a hub id (online only; offline it fails at once with a clear message)."""
    spec = spec.strip()
    if not spec:
        raise ModelLoadError("empty model spec: give a bundled model name, a local folder or a hub id")
    match = _RANDOM_SPEC.match(spec)
    if spec.startswith("random:"):
        if not match:
            raise ModelLoadError(f"bad random model spec {spec!r}: use random:<arch>[-<size>][-<prediction type>]")
        model = random_model(match["arch"], int(match["size"] or 32), match["pred"] or "epsilon")
        return model.to(device)
    name, _, checkpoint = spec.partition("@")
    bundled = bundled_models()
    if name in bundled:
        checkpoint = checkpoint or DEFAULT_CHECKPOINT
        if checkpoint not in bundled[name]:
            raise ModelLoadError(f"bundled model {name} has no checkpoint {checkpoint!r}: {', '.join(bundled[name])}")
        return _load_folder(BUNDLED_DIR / name / checkpoint, spec).to(device)
    path = Path(spec).expanduser()
    if path.exists():
        return _load_folder(path, spec).to(device)
    if spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        known = ", ".join(bundled_specs()) or "none bundled"
        raise ModelLoadError(f"unknown model {spec!r}: not a bundled model ({known}), a local folder, or a hub id")
    return _load_hub(spec).to(device)


def _load_hub(repo_id: str) -> DiffusionModel:
    if not _hub_reachable():
        raise ModelLoadError(f"no network: cannot fetch {repo_id!r}; use a bundled model or a local folder")
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"])
    except Exception as err:  # the hub client raises many types; the user needs one line either way
        raise ModelLoadError(f"cannot fetch {repo_id!r} from the hub: {str(err).splitlines()[0]}") from None
    return _load_folder(Path(folder), repo_id)
