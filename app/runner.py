"""Turns the core's event stream into UI updates: settings -> validated configs -> a run -> `Frame`s.

The app adds no attack logic. A run is the core's `protocol.play_scenario` iterated in a worker thread, its events
scored by the core's `Evaluator`; this module only throttles them into frames (frames.py) for the UI, files the
finished run in the session (session.py) and lets a Stop button end the run within one step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import torch

from gidm_core.attacks.events import Event, Result
from gidm_core.attacks.steering import Steering
from gidm_core.client import PrivateBatch
from gidm_core.config import AttackConfig, ConfigError, ThreatModel
from gidm_core.errors import UserError, out_of_memory, out_of_memory_message
from gidm_core.evaluation import Evaluator
from gidm_core.models import DiffusionModel
from gidm_core.protocol import play_scenario

from .export import rerun_command
from .frames import Frame, final_frame, live_frame, separation_line, thin
from .images import pairing, show
from .model_cache import get_model, run_device
from .server_view import server_figure
from .session import RunRecord, Session
from .settings import Refusal, Settings, configs, hints
from .settings import scenario as settings_scenario
from .victims import pick_victims, run_size
from .zerogpu import fit_run

ORPHAN_S = 60.0  # a run whose page stopped pulling updates for this long (tab closed) stops itself
HEARTBEAT_S = 0.75  # the status line updates at least this often, however slow the attack's steps


def stream(session: Session, settings: Settings, min_interval: float = 0.4) -> Iterator[Frame]:
    """Generator of `Frame`s for one run. Errors end it with a one-line message in the status; never raises for
    bad input. Stopping (session.stop()) ends the attack within one step and keeps its best guess."""
    started = time.perf_counter()
    stop = session.claim()
    if stop is None:
        yield Frame("A run is already going in this session: press Stop first.", error=True)
        return
    worker: threading.Thread | None = None
    steering: Steering | None = None  # the channel the steer action writes to (steer.py)
    size: int | str = settings.resolution
    try:
        notes = "".join(f"  \n*Note:* {hint}" for hint in hints(settings))
        yield Frame(f"Loading {settings.model} ..." + notes, pairs="")
        try:
            config, threat = configs(settings)
            config, budget_note = fit_run(config, settings)  # ZeroGPU: a run too long for its call gets a budget
            notes += f"  \n*Note:* {budget_note}" if budget_note else ""
            device = run_device()
            model = get_model(settings.model, device)
            size = run_size(settings, model)
            named = pick_victims(settings, size, model.channels)
            x0 = torch.cat([v[1] for v in named])
            if settings.client_t >= model.num_train_timesteps:
                raise ConfigError(f"client t must be below {model.num_train_timesteps} for {model.name}")
            scenario = settings_scenario(settings, tuple(name for name, _, _ in named), size, config)
            steering = session.steering = Steering(config)
            played = play_scenario(scenario, lambda spec: get_model(spec, device), images=x0, stop=stop,
                                   lpips_every=5, steering=steering)
        except Refusal as err:  # a bound that depends on the model (its own image size): said as the others are
            yield Frame(err.status, error=True)
            return
        except (UserError, ValueError, RuntimeError, MemoryError) as err:
            if isinstance(err, (RuntimeError, MemoryError)) and not out_of_memory(err):
                raise
            message = out_of_memory_message(size, settings.batch_size) if out_of_memory(err) else _one_line(err)
            yield Frame(f"**Cannot start:** {message}", error=True)
            return

        events: queue.Queue = queue.Queue()
        done = object()
        alive = [time.perf_counter()]  # when the UI last pulled events; a run nobody watches stops itself

        def work() -> None:
            torch.set_grad_enabled(True)
            try:
                for event in played.events():
                    events.put(event)
                    if time.perf_counter() - alive[0] > ORPHAN_S:
                        stop.set()
            except Exception as err:  # noqa: BLE001  (shown to the user; the app keeps serving)
                events.put(MemoryError(out_of_memory_message(size, x0.shape[0])) if out_of_memory(err) else err)
            finally:
                events.put(done)

        worker = threading.Thread(target=work, name="gidm-attack", daemon=True)
        worker.start()
        yield Frame("**Attacking** ...", server_figure=server_figure(model, played.update, played.batch.t.tolist()))
        trail = yield from _frames(played.batch, events, done, threat, config, started, min_interval, alive, notes,
                                   steering)
        result = played.run.result
        if result is None and stop.is_set():  # Stop pressed before the first guess
            yield Frame("**Stopped** before the attack's first image.", original=trail.original_img)
            return
        if result is None:
            yield Frame(f"**The run ended without an image:** {trail.error or 'no finite guess'}",
                        original=trail.original_img, error=True)
            return
        record = _record(session, settings, result, played.batch, trail, named, model, threat, config, size)
        session.runs.append(record)
        yield final_frame(record, trail.original_img, threat.knows_t, config.total_iterations)
    finally:
        stop.set()
        if worker is not None:
            worker.join(timeout=30)
        session.release(stop)
        if steering is not None and session.steering is steering:
            session.steering = None


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


class _Trail:
    """What the live view gathered from the events: the metrics and t trace, the loss curve, the filmstrip."""

    def __init__(self, truth: torch.Tensor) -> None:
        self.original_img = show(truth)
        self.trace: list[dict] = []
        self.curve: list[dict] = []  # the matching loss at each event: the live loss plot
        self.phase_starts: dict[str, int] = {}
        self.film: list[tuple[torch.Tensor, str]] = []
        self.error: str | None = None
        self.first_image_s: float | None = None
        self.time_to_30: float | None = None
        self.separation = ""  # what the attack said about splitting the batch

    def add(self, event: Event, since_start: float) -> None:
        """File a scored event (one with losses)."""
        self.phase_starts.setdefault(event.phase, event.iteration)
        self.curve.append({"iteration": event.iteration, **event.losses})
        if self.first_image_s is None:
            self.first_image_s = since_start
        psnr = event.metrics.get("psnr")
        if self.time_to_30 is None and psnr is not None and psnr >= 30:
            self.time_to_30 = since_start
        self.trace.append({"iteration": event.iteration, "phase": event.phase, "elapsed": event.elapsed,
                           **event.metrics, "t_estimate": list(event.t_estimate) if event.t_estimate else None})
        if event.kind in ("phase", "progress"):
            self.film.append((event.reconstruction, f"{event.iteration}: {psnr:.0f} dB"
                              if psnr is not None else f"{event.iteration}"))


def _frames(batch: PrivateBatch, events: queue.Queue, done: object, threat: ThreatModel, config: AttackConfig,
            started: float, min_interval: float, alive: list[float], notes: str,
            steering: Steering) -> Iterator[Frame]:
    """Live frames until the worker is done, throttled to one per `min_interval` (plus one at each phase change and
    a heartbeat while steps are slow); returns the `_Trail` it gathered."""
    trail = _Trail(batch.x0)
    t_true = batch.t.tolist()
    latest: Event | None = None
    last_shown = 0.0
    finished = False
    fresh = False  # a scored event arrived since the last frame
    shown = "**Starting the attack** ..."  # the last live status, repeated with the time while steps are slow
    began = time.perf_counter()
    while not finished:
        alive[0] = time.perf_counter()
        try:
            item = events.get(timeout=0.25)
        except queue.Empty:
            item = None
        if item is done:
            finished = True
        elif isinstance(item, Exception):
            trail.error = _one_line(item)
        elif isinstance(item, Event):
            if item.losses and item.kind != "error":
                latest = item
                fresh = True
                trail.add(item, time.perf_counter() - started)
            elif item.kind == "error":
                trail.error = item.message
            elif item.kind == "steer":  # show the mark (and the new plan) with the next frame, without waiting
                fresh = latest is not None
                last_shown = 0.0
                latest = latest and replace(latest, total_iterations=item.total_iterations)
            elif item.phase == "separation":
                trail.separation = item.message
            elif item.phase == "timestep":
                trail.trace.append({"iteration": item.iteration, "phase": "timestep", "elapsed": item.elapsed,
                                    "t_estimate": list(item.t_estimate) if item.t_estimate else None,
                                    "message": item.message})
        due = time.perf_counter() - last_shown >= min_interval
        if fresh and not finished and (due or (isinstance(item, Event) and item.kind == "phase")):
            last_shown = time.perf_counter()
            fresh = False
            frame = live_frame(latest, batch.x0, trail.original_img, trail.trace, trail.curve, trail.phase_starts,
                               t_true, threat.knows_t, config.total_iterations,
                               separation_line(trail.separation) + notes, list(steering.log))
            shown = frame.status
            yield frame
        elif latest is None and not finished and due and isinstance(item, Event) and item.phase in ("timestep",
                                                                                                  "separation"):
            last_shown = time.perf_counter()
            shown = f"{'Timestep' if item.phase == 'timestep' else 'Batch'}: {item.message}"
            yield Frame(shown, original=trail.original_img)
        elif not finished and time.perf_counter() - max(last_shown, began) >= HEARTBEAT_S:
            # Slow steps (the paper setting's K = 16 latent phase): the screen still moves once a second.
            last_shown = time.perf_counter()
            yield Frame(f"{shown}  \n*Paused at iteration {latest.iteration if latest else 0}: choose **resume** "
                        "under Steer to go on.*" if steering.paused else
                        f"{shown}  \n*Working: {last_shown - started:.0f} s so far; a new snapshot every "
                        f"{config.report_every} iterations.*")
    return trail


def _record(session: Session, settings: Settings, result: Result, batch: PrivateBatch, trail: _Trail,
            named: list[tuple[str, torch.Tensor, bool]], model: DiffusionModel, threat: ThreatModel,
            config: AttackConfig, size: int) -> RunRecord:
    """The finished run, scored by the core's evaluator, with its rerun command."""
    metrics = Evaluator(batch).score_result(result)
    order, by_t = pairing(result.reconstruction, batch.x0, result.t_estimate, batch.t.tolist())
    status = result.status if trail.error is None or result.status != "done" else "error"
    record = RunRecord(
        number=next(session.counter), settings=settings, model_name=model.name, threat=threat.describe(),
        size=size, original=batch.x0, reconstruction=result.reconstruction[order], victims=named,
        t_true=batch.t.tolist(), t_estimate=list(result.t_estimate) if result.t_estimate else None,
        metrics=metrics, history=list(result.history), phase_starts=dict(result.phase_starts), trace=trail.trace,
        filmstrip=thin(trail.film, 8) + [(result.reconstruction, f"final {metrics['psnr']:.1f} dB")],
        status=status, message=result.message if trail.error is None else trail.error, seconds=result.seconds,
        iterations=result.iterations, matching_loss=result.matching_loss, first_image_s=trail.first_image_s,
        time_to_30db_s=trail.time_to_30, config=dict(config.__dict__), steering=list(result.steering),
        separation=trail.separation, paired_by_t=by_t)
    record.command = rerun_command(record)
    return record
