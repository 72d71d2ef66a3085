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

from .errors import UserError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED_DIR = ASSETS / "models"
DEFAULT_CHECKPOINT = "final"
# Every attack differentiates the UNet's gradient (double backward), which keeps the activations of two passes:
# we measured a 20 GB peak on our 2-core CPU at 128 px for a 4.4 M-parameter UNet, batch 1, and memory grows with
# the pixel count. 256 px (4x that) is the most a large GPU holds; anything larger only exhausts the machine.
MAX_IMAGE_SIZE = 256
# Hub downloads: the UNet's safetensors and JSON files only, at most this many megabytes (a public server's disk).
HUB_MAX_MB = float(os.environ.get("GIDM_HUB_MAX_MB", "500"))


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def local_models_allowed() -> bool:
    """Whether model specs may name folders on this machine: off unless GIDM_ALLOW_LOCAL_MODELS=1, so a public
    app cannot be used to probe or load the server's files. The CLI passes `allow_local=True` (its user owns the
    machine)."""
    return _env_flag("GIDM_ALLOW_LOCAL_MODELS", False)


def hub_models_allowed() -> bool:
    """Whether hub ids may be downloaded (when online): on unless GIDM_HUB_MODELS=0, e.g. on a Space."""
    return _env_flag("GIDM_HUB_MODELS", True)


class ModelLoadError(UserError):
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
        check_image_size(size)

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


# Seeded random-init architectures, for tests and demos before any training. Their costs on a 2-core CPU were measured
# at 32-128 px (0.02-0.12 s per forward+backward at 32 px, batch 1).
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
    # A full-size attacked model: the DDPM CIFAR-10 UNet's layout (Ho et al. 2020; the config of diffusers'
    # google/ddpm-cifar10-32, 35.7 M parameters at 32 px). The benchmark's GPU row attacks it at 128 px.
    "ddpm": dict(
        block_out_channels=(128, 256, 256, 256),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
    ),
}


def check_image_size(size: int, limit: int = MAX_IMAGE_SIZE) -> None:
    """Refuse sizes whose double backward cannot fit in memory (see MAX_IMAGE_SIZE)."""
    if not 1 <= size <= limit:
        raise ModelLoadError(f"image size {size} is out of bounds: 1 to {limit} px (the attack's double backward "
                             f"needs memory that grows with the pixel count)")


_RANDOM_SPEC = re.compile(r"^random:(?P<arch>[a-z]+)(?:-(?P<size>\d+))?(?:-(?P<pred>epsilon|v_prediction|sample))?$")


def random_model(arch: str = "tiny", size: int = 32, prediction_type: str = "epsilon", channels: int = 3,
                 seed: int = 0) -> DiffusionModel:
    """A seeded random-init UNet2DModel with a 1000-step linear DDPM schedule."""
    if arch not in RANDOM_ARCHITECTURES:
        raise ModelLoadError(f"unknown random architecture {arch!r}: choose one of {', '.join(RANDOM_ARCHITECTURES)}")
    check_image_size(size)
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
    except (OSError, ValueError) as err:
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


def check_spec(spec: str, allow_local: bool | None = None, max_size: int = MAX_IMAGE_SIZE) -> str:
    """Classify `spec` without loading anything: "random", "bundled", "local" or "hub"; raise `ModelLoadError` for
    a spec that cannot load here. With local folders off (`local_models_allowed`), the file system is never
    consulted, so the answer is the same for paths that exist and those that do not."""
    spec = spec.strip()
    if not spec:
        raise ModelLoadError("empty model spec: give a bundled model name, random:<arch>[-<size>] or a hub id")
    if spec.startswith("random:"):
        match = _RANDOM_SPEC.match(spec)
        if not match:
            raise ModelLoadError(f"bad random model spec {spec!r}: use random:<arch>[-<size>][-<prediction type>]")
        if match["arch"] not in RANDOM_ARCHITECTURES:
            raise ModelLoadError(f"unknown random architecture {match['arch']!r}: choose one of "
                                 f"{', '.join(RANDOM_ARCHITECTURES)}")
        check_image_size(int(match["size"] or 32), max_size)
        return "random"
    name, _, checkpoint = spec.partition("@")
    bundled = bundled_models()
    if name in bundled:
        if (checkpoint or DEFAULT_CHECKPOINT) not in bundled[name]:
            raise ModelLoadError(f"bundled model {name} has no checkpoint {checkpoint!r}: {', '.join(bundled[name])}")
        return "bundled"
    local = local_models_allowed() if allow_local is None else allow_local
    if local and Path(spec).expanduser().exists():
        return "local"
    hub_shaped = spec.count("/") == 1 and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None
    if hub_shaped and ".." not in spec and hub_models_allowed():
        return "hub"
    known = ", ".join(bundled_specs()) or "none bundled"
    other = "a local folder, or a hub id" if local else \
        "or a hub id (local folders are off here: GIDM_ALLOW_LOCAL_MODELS=1 turns them on)"
    if not hub_models_allowed():
        other = "or a local folder" if local else "(local folders and hub ids are off on this server)"
    raise ModelLoadError(f"unknown model {spec!r}: not a bundled model ({known}), random:<arch>[-<size>], {other}")


def load_model(spec: str, device: str | torch.device = "cpu", allow_local: bool | None = None) -> DiffusionModel:
    """Resolve `spec` (see `check_spec`), in this order: `random:<arch>[-<size>][-<prediction type>]`, a bundled
    `name[@checkpoint]`, a local folder (when allowed), then a hub id (online only; offline it fails at once)."""
    spec = spec.strip()
    kind = check_spec(spec, allow_local)
    if kind == "random":
        match = _RANDOM_SPEC.match(spec)
        return random_model(match["arch"], int(match["size"] or 32), match["pred"] or "epsilon").to(device)
    if kind == "bundled":
        name, _, checkpoint = spec.partition("@")
        return _load_folder(BUNDLED_DIR / name / (checkpoint or DEFAULT_CHECKPOINT), spec).to(device)
    if kind == "local":
        return _load_folder(Path(spec).expanduser(), spec).to(device)
    return _load_hub(spec).to(device)


def _hub_files(repo_id: str) -> list[str]:
    """The files to fetch for a hub UNet2DModel, checked before any weights download: the UNet's config names
    UNet2DModel, its weights are safetensors (no pickles), and they fit in HUB_MAX_MB."""
    import json

    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi().model_info(repo_id, files_metadata=True)
    sizes = {f.rfilename: f.size or 0 for f in info.siblings or []}
    prefix = "unet/" if "unet/config.json" in sizes else ""
    if f"{prefix}config.json" not in sizes:
        raise ModelLoadError(f"{repo_id!r} has no UNet config (config.json or unet/config.json)")
    config = json.loads(Path(hf_hub_download(repo_id, f"{prefix}config.json")).read_text())
    if config.get("_class_name") != "UNet2DModel":
        raise ModelLoadError(f"{repo_id!r} is a {config.get('_class_name')}, not a UNet2DModel")
    weights = f"{prefix}diffusion_pytorch_model.safetensors"
    if weights not in sizes:
        raise ModelLoadError(f"{repo_id!r} has no safetensors weights ({weights}); pickled weights are refused")
    configs = [name for name in sizes if name.endswith(".json") and name.startswith((prefix, "scheduler/"))
               and name.count("/") <= 1]
    files = [weights, *configs]
    megabytes = sum(sizes[name] for name in files) / 1e6
    if megabytes > HUB_MAX_MB:
        raise ModelLoadError(f"{repo_id!r} is {megabytes:.0f} MB, over this server's {HUB_MAX_MB:.0f} MB limit "
                             f"(GIDM_HUB_MAX_MB)")
    return files


def _load_hub(repo_id: str) -> DiffusionModel:
    if not _hub_reachable():
        raise ModelLoadError(f"no network: cannot fetch {repo_id!r}; use a bundled model or a random one")
    from huggingface_hub import snapshot_download

    try:
        files = _hub_files(repo_id)
        folder = snapshot_download(repo_id, allow_patterns=files)
    except ModelLoadError:
        raise
    except Exception as err:  # the hub client raises many types; the user needs one line either way
        raise ModelLoadError(f"cannot fetch {repo_id!r} from the hub: {str(err).splitlines()[0]}") from None
    return _load_folder(Path(folder), repo_id)


def resolve_device(name: str) -> str:
    """"auto" (cuda when there is one, else cpu), "cpu", "cuda" or "cuda:N", checked against this machine before
    any model loads."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UserError(f"device {name}: no CUDA GPU is available here (use cpu or auto)")
        if ":" in name and int(name[5:]) >= torch.cuda.device_count():
            raise UserError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return name
    raise UserError(f"device {name!r}: choose cpu, cuda, cuda:N or auto")
