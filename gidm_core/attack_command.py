"""`python -m gidm_core attack`: its flags, the configs they make, and the run that writes a result folder.

The app's "rerun this" command is written with the same flags (`attack_argv`), so the app imports this module,
never the whole command line.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

from .config import (
    CLIENT_OPTIMIZERS,
    CONTROLS,
    DEFAULT_DROPOUT,
    METHODS,
    NOISE_POLICIES,
    THREAT_PRESETS,
    AttackConfig,
    ConfigError,
    DefenceConfig,
    LocalTraining,
    ThreatModel,
    attack_config,
    threat_preset,
)
from .errors import UsageError, out_of_memory, out_of_memory_message
from .outputs import check_out_folder, write_loss_csv
from .scenario import Scenario
from .seeds import MAX_SEED

MAX_IMAGES = 64  # a batch's pixels cost memory like one image's: 64 images of 32 px are one of 256 px


def add_attack_arguments(parser: argparse.ArgumentParser) -> None:
    """The attack's flags; the app builds its "rerun this" command from the same names."""
    parser.add_argument("--model", default="faces32", help="bundled name[@checkpoint], local folder, hub id, "
                        "or random:<arch>[-<size>][-<prediction type>]")
    parser.add_argument("--image", action="append", default=None,
                        help="victim image path or bundled image name; repeat for a batch")
    parser.add_argument("--scenario", type=Path, default=None, help="replay a saved run: the scenario.json of an "
                        "earlier result folder (model, images, client, threat and attack all come from it)")
    parser.add_argument("--method", default="gidm", help=f"one of {', '.join(METHODS)}")
    parser.add_argument("--threat", default="paper", help=f"threat preset: {', '.join(THREAT_PRESETS)}")
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (default: the model's)")
    parser.add_argument("--t", type=int, action="append", default=None,
                        help="the client's timestep (repeat per image; default: drawn from --client-seed)")
    parser.add_argument("--client-seed", "--seed", dest="client_seed", type=int, default=0,
                        help="the client's seed: its private eps and t, its defence's noise (--seed: old spelling)")
    parser.add_argument("--attack-seed", type=int, default=None, help="the attacker's own seed for its initial "
                        "guesses (default: --client-seed; the two always draw from independent streams)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<method>-<time>)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto")
    parser.add_argument("--prior", default=None, help="prior model spec for GIDM (default: the attacked model)")
    parser.add_argument("--control", default="none", choices=CONTROLS, help="a control run: attack the update the "
                        "client would share for another held-out image of the same kind (other-image), or Gaussian "
                        "noise with the update's per-tensor norms (noise), still scored against the victim: what "
                        "the attack returns when nothing leaks (default: none, the real update)")
    parser.add_argument("--steer", type=Path, default=None, help="a steering schedule to replay: a JSON list of "
                        '{"at": evaluation, "action": lr|next_phase|extend|pause|resume|stop, "value": ...} '
                        "(the app's export writes one for a steered run)")
    hyper = parser.add_argument_group("hyperparameters (default: the method's own)")
    hyper.add_argument("--pixel-iterations", "--iterations", dest="pixel_iterations", type=int,
                       help="pixel-phase iterations (GIDM+: its joint and residual stages together); one objective "
                       "evaluation is one iteration (--iterations: old spelling)")
    hyper.add_argument("--lr", type=float, help="pixel-phase learning rate")
    hyper.add_argument("--latent-iterations", type=int, help="GIDM phase-1 iterations")
    hyper.add_argument("--latent-lr", type=float, help="GIDM phase-1 learning rate")
    hyper.add_argument("--ddim-steps", type=int, help="DDIM steps K in GIDM's sampler")
    hyper.add_argument("--distance", help="gradient distance: l2 or cosine")
    hyper.add_argument("--layer-weights", help="uniform or normalized")
    hyper.add_argument("--tv-weight", type=float, help="total-variation weight")
    hyper.add_argument("--optimizer", help="lbfgs (default; needs no learning rate), adam or sgd")
    hyper.add_argument("--lr-schedule", help="constant or cosine")
    hyper.add_argument("--restarts", type=int, help="GIDM: best of this many start latents")
    hyper.add_argument("--starts", type=int, help="run this many starts, dropping the worse half by matching loss "
                       "at checkpoints (successive halving); --seconds covers them all")
    hyper.add_argument("--residual-share", type=float, help="GIDM+: fraction of its iterations for the residual "
                       "stage (default 0.9)")
    hyper.add_argument("--separation", help="auto (default: split a batch's update into per-sample parts through "
                       "the time conditioning where it can) or off")
    hyper.add_argument("--report-every", type=int, help="iterations between events")
    hyper.add_argument("--plateau", type=int, help="end the run once its matching loss has stopped improving for "
                       "this many evaluations (0: off, the default: the whole budget runs)")
    hyper.add_argument("--seconds", type=float, help="time budget in wall seconds: stop there, with the "
                       "iteration counts only splitting the time between phases (default: none)")
    client = parser.add_argument_group("the client's update (default: one FedSGD gradient)")
    client.add_argument("--local-steps", type=int, help="share a FedAvg weight delta after this many local "
                        "steps on the batch instead (public: the attacker re-simulates them)")
    client.add_argument("--client-lr", type=float, help=f"the client's learning rate for --local-steps "
                        f"(default {LocalTraining.lr:g})")
    client.add_argument("--client-optimizer", choices=CLIENT_OPTIMIZERS, help="the client's local optimiser for "
                        "--local-steps: sgd (default), adam or adamw (torch's, betas (0.9, 0.999), eps 1e-8, a "
                        "fresh state each round)")
    client.add_argument("--weight-decay", type=float, help="the client's weight decay (adamw: decoupled, as "
                        "torch.optim.AdamW; sgd and adam: added to the gradient; default 0)")
    client.add_argument("--local-batch", type=int, help="the client's mini-batch B: each local step trains on B "
                        "of its N images (the --image list), shuffled from its own stream (default: all N)")
    client.add_argument("--noise-per-step", choices=NOISE_POLICIES, help="same (default): one eps and t per "
                        "image, reused at every step; fresh: new eps and t at every step (diffusers' loop)")
    client.add_argument("--client-clip", type=float, help="clip each local step's gradient to this L2 norm "
                        "(diffusers' example: 1.0; default: none)")
    client.add_argument("--dropout", choices=("off", "on"), help=f"on: train with the UNet's ResNet dropout at "
                        f"{DEFAULT_DROPOUT:g}, masks drawn from the client's stream (default: off)")
    defence = parser.add_argument_group("defence (overrides the preset's)")
    defence.add_argument("--clip", type=float, help="clip the update's L2 norm to this")
    defence.add_argument("--sigma", type=float, help="Gaussian noise multiplier (std = sigma * clip)")
    defence.add_argument("--keep", type=float, help="top-k pruning: fraction of each tensor kept")


def configs_from_args(args: argparse.Namespace) -> tuple[AttackConfig, ThreatModel]:
    """Validated configs from parsed flags (raises `ConfigError` with a one-line message)."""
    threat = threat_preset(args.threat)
    if args.prior:
        threat = replace(threat, prior=args.prior)
    if args.control != "none":
        threat = replace(threat, control=args.control)
    overrides = {k: getattr(args, k) for k in ("clip", "sigma", "keep") if getattr(args, k) is not None}
    if overrides:
        threat = replace(threat, defence=DefenceConfig(**{**threat.defence.__dict__, **overrides}))
    config = attack_config(
        args.method, pixel_iterations=args.pixel_iterations, lr=args.lr, latent_iterations=args.latent_iterations,
        latent_lr=args.latent_lr, ddim_steps=args.ddim_steps, distance=args.distance,
        layer_weights=args.layer_weights, tv_weight=args.tv_weight, optimizer=args.optimizer,
        lr_schedule=args.lr_schedule, restarts=args.restarts, starts=args.starts,
        residual_share=args.residual_share, report_every=args.report_every, seconds=args.seconds,
        plateau=args.plateau, separation=args.separation,
        attack_seed=args.client_seed if args.attack_seed is None else args.attack_seed)
    return config, threat


# flag -> LocalTraining field, for every client-training flag but --local-steps and --dropout
_TRAINING_FLAGS = {"--client-lr": "client_lr", "--client-optimizer": "client_optimizer",
                   "--weight-decay": "weight_decay", "--local-batch": "local_batch",
                   "--noise-per-step": "noise_per_step", "--client-clip": "client_clip"}
_TRAINING_FIELDS = {"client_lr": "lr", "client_optimizer": "optimizer", "weight_decay": "weight_decay",
                    "local_batch": "local_batch", "noise_per_step": "noise", "client_clip": "clip"}


def training_from_args(args: argparse.Namespace) -> LocalTraining | None:
    """The client's local training from the flags: None (FedSGD) unless --local-steps is given."""
    given = {flag: getattr(args, name) for flag, name in _TRAINING_FLAGS.items() if getattr(args, name) is not None}
    if args.dropout is not None:
        given["--dropout"] = args.dropout
    if args.local_steps is None:
        if given:
            raise UsageError(f"{next(iter(given))} needs --local-steps: a FedSGD client shares its gradient, "
                             "with no step")
        return None
    fields = {_TRAINING_FIELDS[name]: getattr(args, name) for name in _TRAINING_FLAGS.values()
              if getattr(args, name) is not None}
    dropout = DEFAULT_DROPOUT if args.dropout == "on" else 0.0
    training = LocalTraining(steps=args.local_steps, dropout=dropout, **fields)
    training.batch_size(len(args.image))  # B <= N, refused before any model loads
    if training.noise == "fresh" and args.t is not None:
        raise UsageError("--t fixes the timesteps, but --noise-per-step fresh draws a new t at every local step")
    return training


def attack_argv(config: AttackConfig, threat: ThreatModel, *, model: str, images: list[str], client_seed: int,
                size: int | None = None, t: list[int] | None = None, out: str | None = None,
                training: LocalTraining | None = None, steer: str | None = None) -> list[str]:
    """The `attack` flags that `configs_from_args` reads back as `config` and `threat` (every hyperparameter spelled
    out), so a front end's "rerun this" command is written with the same flags the parser defines."""
    if threat.knows_t != threat.knows_eps:
        raise ConfigError("the command line's threat presets reveal eps and t together, or neither")
    argv = ["attack", "--model", model, *(a for image in images for a in ("--image", image)), "--method",
            config.method, "--threat", "paper" if threat.knows_eps else "private-eps-t",
            *(["--size", str(size)] if size else []), "--client-seed", str(client_seed),
            "--attack-seed", str(config.attack_seed),
            *(["--out", out] if out else []), *(["--steer", steer] if steer else [])]
    argv += [a for step in t or [] for a in ("--t", str(step))]
    argv += ["--prior", threat.prior] if threat.prior != "attacked" else []
    argv += ["--control", threat.control] if threat.control != "none" else []
    argv += _training_argv(training) if training else []
    for name in ("pixel_iterations", "lr", "latent_iterations", "latent_lr", "ddim_steps", "distance", "layer_weights",
                 "tv_weight", "optimizer", "lr_schedule", "restarts", "starts", "residual_share", "report_every",
                 "seconds", "plateau", "separation"):
        argv += ["--" + name.replace("_", "-"), str(getattr(config, name))]
    defence = threat.defence
    argv += ["--clip", str(defence.clip), "--sigma", str(defence.sigma)] if defence.clip or defence.sigma else []
    return argv + (["--keep", str(defence.keep)] if defence.keep < 1 else [])


def _training_argv(training: LocalTraining) -> list[str]:
    """The client flags for `training` (only the defaults the command line can say are left out)."""
    if training.dropout not in (0.0, DEFAULT_DROPOUT):
        raise ConfigError(f"the command line trains with dropout off or at {DEFAULT_DROPOUT:g}, not "
                          f"{training.dropout:g}")
    if (training.betas, training.adam_eps) != (LocalTraining.betas, LocalTraining.adam_eps):
        raise ConfigError("the command line's Adam uses torch's betas (0.9, 0.999) and eps 1e-8")
    argv = ["--local-steps", str(training.steps), "--client-lr", str(training.lr), "--client-optimizer",
            training.optimizer, "--noise-per-step", training.noise]
    argv += ["--weight-decay", str(training.weight_decay)] if training.weight_decay else []
    argv += ["--local-batch", str(training.local_batch)] if training.local_batch else []
    argv += ["--client-clip", str(training.clip)] if training.clip else []
    return argv + (["--dropout", "on"] if training.dropout else [])


def _check_attack_args(args: argparse.Namespace) -> None:
    """Everything about the flags that can be checked before a model loads (one line, exit 2, on failure)."""
    from .models import check_image_size, check_spec

    for flag, seed in (("--client-seed", args.client_seed), ("--attack-seed", args.attack_seed)):
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise UsageError(f"{flag} must be in [0, 2**63 - 1], got {seed}")
    if len(args.image) > MAX_IMAGES:
        raise UsageError(f"--image given {len(args.image)} times: at most {MAX_IMAGES} images in a batch")
    if args.t is not None:
        if len(args.t) not in (1, len(args.image)):
            raise UsageError(f"--t given {len(args.t)} times for {len(args.image)} image(s): give it once, or "
                             "once per image")
        if min(args.t) < 0:
            raise UsageError(f"--t must be >= 0, got {min(args.t)}")
    if args.size is not None:
        check_image_size(args.size)
    check_spec(args.model, allow_local=True)
    if args.prior and args.prior != "attacked":
        check_spec(args.prior, allow_local=True)


# Flags that describe the round; with --scenario the file says all of it, so none of these may be given too.
_SCENARIO_FLAGS = ("image", "model", "method", "threat", "size", "t", "client_seed", "attack_seed", "prior",
                   "control",
                   *(a for a in ("pixel_iterations", "lr", "latent_iterations", "latent_lr", "ddim_steps", "distance",
                                 "layer_weights", "tv_weight", "optimizer", "lr_schedule", "restarts", "starts",
                                 "residual_share", "separation", "report_every", "plateau", "seconds")),
                   "local_steps", *_TRAINING_FLAGS.values(), "dropout", "clip", "sigma", "keep")


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    """The round the flags describe, or the saved one of --scenario (then no other round flag may be given)."""
    from .images import open_image

    if args.scenario is not None:
        defaults = argparse.ArgumentParser()
        add_attack_arguments(defaults)
        given = [name for name in _SCENARIO_FLAGS if getattr(args, name) != defaults.get_default(name)]
        if given:
            raise UsageError(f"--scenario replays a saved run: change it in the file, not with "
                             f"--{given[0].replace('_', '-')}")
        return Scenario.load(args.scenario)
    if not args.image:
        raise UsageError("give the private image(s) with --image, or a saved run with --scenario")
    _check_attack_args(args)
    config, threat = configs_from_args(args)
    for source in args.image:  # an unreadable image is refused before any model loads
        open_image(source)
    return Scenario(model=args.model, images=tuple(args.image), size=args.size, client_seed=args.client_seed,
                    t=None if args.t is None else tuple(args.t), training=training_from_args(args), threat=threat,
                    attack=config)


def run_attack(args: argparse.Namespace) -> int:
    from .attacks.steering import Steering, load_schedule
    from .images import grid
    from .models import load_model, resolve_device
    from .protocol import play_scenario

    scenario = scenario_from_args(args)
    config, threat, training = scenario.attack, scenario.threat, scenario.training
    steering = Steering(config, load_schedule(args.steer, config), live=False) if args.steer else None
    device = resolve_device(args.device)
    out = check_out_folder(args.out or Path("runs") / f"{config.method}-{time.strftime('%Y%m%d-%H%M%S')}")
    played = play_scenario(scenario, lambda spec: load_model(spec, device, allow_local=True), steering=steering)
    batch, run, evaluator = played.batch, played.run, played.evaluator
    x0 = batch.x0
    size = x0.shape[-1]
    model_name = scenario.model

    progress = _progress_bar(None if config.seconds else config.total_iterations)
    last = None
    try:
        for event in played.events():
            last = event
            progress.total = None if config.seconds else event.total_iterations  # several starts plan more
            progress.update(event.iteration - progress.n)
            if event.metrics:
                progress.set_postfix(phase=event.phase, loss=f"{event.losses.get('matching', 0):.3g}",
                                     psnr=f"{event.metrics.get('psnr', 0):.1f}")
            if event.message and event.kind != "progress":
                progress.write(event.message)
    except (RuntimeError, MemoryError) as err:
        if not out_of_memory(err):
            raise
        raise UsageError(out_of_memory_message(size, x0.shape[0])) from None
    finally:
        progress.close()
    result = run.result
    if result is None:
        print(f"error: {last.message if last else 'the attack produced nothing'}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no empty folder
    metrics = evaluator.score_result(result)
    report = {
        **metrics, "method": config.method, "model": model_name, "threat": threat.describe(), "status": result.status,
        "control": threat.control, "dp": dp_record(threat.defence), "message": result.message,
        "matching_loss": result.matching_loss, "iterations": result.iterations,
        "seconds": result.seconds, "seconds_per_iteration": result.seconds / max(result.iterations, 1),
        "t_true": batch.t.tolist(), "t_estimate": list(result.t_estimate) if result.t_estimate else None,
        "phase_starts": result.phase_starts, "config": config.__dict__, "client_seed": scenario.client_seed,
        "update": {"kind": played.update.kind, **(training.__dict__ if training else {})},
        "attack_seed": config.attack_seed, "device": str(device), **result.details, **evaluator.per_image(result),
        "steering": result.steering,
        "command": command_line(sys.argv[1:]),
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    scenario.save(out / "scenario.json")  # `attack --scenario` plays this same round again
    grid(result.reconstruction).save(out / "reconstruction.png")
    grid(batch.x0).save(out / "original.png")
    for phase, image in result.snapshots.items():
        grid(image).save(out / f"snapshot-{phase}.png")
    write_loss_csv(result.history, out / "loss.csv")
    print(f"{config.method}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}, LPIPS {metrics['lpips']:.3f}"
          f" in {result.iterations} iterations, {result.seconds:.1f} s -> {out}")
    return 0 if result.status != "error" else 1


def dp_record(defence: DefenceConfig) -> dict | None:
    """The (epsilon, delta) one round of the client's clip + noise buys (`privacy.py`); None without noise."""
    from .privacy import DELTA, epsilon, noise_multiplier

    value = epsilon(defence)
    if value is None:
        return None
    return {"epsilon": value if math.isfinite(value) else None, "delta": DELTA,
            "noise_multiplier": noise_multiplier(defence), "accountant": "opacus RDP, sample rate 1, one step"}


def command_line(argv: list[str]) -> str:
    return "python -m gidm_core " + " ".join(shlex.quote(a) for a in argv)


def _progress_bar(total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, unit="it", dynamic_ncols=True, file=sys.stderr)
