"""The tune view: the attacker tunes the main view's method on one shared update (`gidm_core.tuning`), ranked by
matching loss alone. The trial table and Optuna's own plotly figures (optimization history, parameter importances)
fill as trials finish; the evaluator's PSNR of each trial is shown beside it, never read by the tuner. When the study
ends, its best trial's hyperparameters become the main view's and run there (the main view's iteration budget).

The main view has no controls for starts, restarts or GIDM+'s residual share, so the app's studies hold those at the
method's defaults: whatever the study picks, the main view can run.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from typing import Any

import gradio as gr
import torch

from gidm_core.errors import UserError
from gidm_core.evaluation import Evaluator
from gidm_core.protocol import share_scenario
from gidm_core.tuning import TrialRecord, TuneConfig, best, tune

from . import handlers
from .model_cache import get_model, run_device
from .session import Session
from .settings import SETTING_FIELDS, Refusal, as_typed, configs, parse
from .settings import scenario as settings_scenario
from .texts import teach
from .victims import pick_victims, run_size
from .zerogpu import MAX_GPU_S, REFUSED_S, SETUP_S, active, gpu, run_duration

FROZEN = ("starts", "restarts", "residual_share")  # not tuned: trials keep the method's own (starts: one)
TRIALS = (1, 40)
SECONDS = (1.0, 60.0)
# The main view's controls a best trial sets (its latent share becomes the two iteration counts).
LOADED = ("distance", "layer_weights", "optimizer", "lr", "latent_lr", "lr_schedule", "ddim_steps", "tv_weight",
          "latent_iterations", "pixel_iterations")
HEADERS = ["#", "state", "loss", "PSNR", "s", "hyperparameters"]
TEACH_TUNE = """The attacker cannot see the client's images, so it cannot tune for PSNR, but it can tune for **matching
loss**: how far the update its guess would produce is from the update it received. **Tune** runs an Optuna study
(TPE, seeded by the attacker's seed) over the method's hyperparameters, every trial a short attack on the same shared
update, ranked by one fixed matching loss (normalised L2); a trial worse than the median at a checkpoint is pruned.
The PSNR column is the teacher's view: the tuner never reads it. The best trial then runs in the main view."""


def tune_section() -> dict[str, Any]:
    """The study's budget, its button, the live table and Optuna's two figures."""
    with gr.Accordion("Tune: the attacker tunes itself by matching loss", open=False, elem_id="tune-panel"):
        teach(TEACH_TUNE)
        with gr.Row():
            tune_trials = gr.Number(8, label="Trials", precision=0, minimum=TRIALS[0], maximum=TRIALS[1],
                                    elem_id="tune-trials")
            tune_seconds = gr.Number(5, label="Seconds per trial", minimum=SECONDS[0], maximum=SECONDS[1],
                                     elem_id="tune-seconds")
            tune_btn = gr.Button("Tune", elem_id="tune-btn", scale=0, min_width=120)
        tune_status = gr.Markdown("", elem_id="tune-status")
        tune_table = gr.Dataframe(value=[], headers=HEADERS, interactive=False, elem_id="tune-table", wrap=True,
                                  column_widths=["44px", "90px", "80px", "64px", "52px", "560px"],
                                  label="Trials: loss is the matching loss the tuner ranks by; PSNR (dB) is the "
                                  "evaluator's, never read by the tuner")
        with gr.Row():
            tune_history = gr.Plot(None, label="Optimization history", elem_id="tune-history")
            tune_importance = gr.Plot(None, label="Parameter importances", elem_id="tune-importance")
        tune_best = gr.State(None)
    return dict(tune_trials=tune_trials, tune_seconds=tune_seconds, tune_btn=tune_btn, tune_status=tune_status,
                tune_table=tune_table, tune_history=tune_history, tune_importance=tune_importance,
                tune_best=tune_best)


def _budget(trials: Any, seconds: Any) -> tuple[int, float]:
    """The study's trial count and per-trial seconds, or a ValueError naming the one at fault."""
    try:
        count, per_trial = float(trials), float(seconds)
    except (TypeError, ValueError):
        raise ValueError("trials and seconds per trial must be numbers") from None
    if not (count.is_integer() and TRIALS[0] <= count <= TRIALS[1]):
        raise ValueError(f"trials must be a whole number in [{TRIALS[0]}, {TRIALS[1]}], got {trials}")
    if not (math.isfinite(per_trial) and SECONDS[0] <= per_trial <= SECONDS[1]):
        raise ValueError(f"seconds per trial must be in [{SECONDS[0]:g}, {SECONDS[1]:g}], got {seconds}")
    if active() and count * per_trial > MAX_GPU_S - SETUP_S:
        raise ValueError(f"ZeroGPU lends a call at most {MAX_GPU_S} s: give trials x seconds <= "
                         f"{MAX_GPU_S - SETUP_S}")
    return int(count), per_trial


def tune_duration(session: Any, trials: Any, seconds: Any, *values: Any) -> int:
    """The GPU seconds a study asks for on ZeroGPU: its trials' budget plus set-up, capped."""
    try:
        count, per_trial = _budget(trials, seconds)
    except ValueError:
        return REFUSED_S
    return min(MAX_GPU_S, math.ceil(SETUP_S + count * per_trial * 1.1))


def run_tune(session: Session, trials: Any, seconds: Any, *values: Any) -> Iterator[tuple]:
    """Run the study on the main view's settings, yielding (status, table, history, importances, best params)."""
    skip = gr.skip()
    if session.cancelled_while_queued():
        yield "**Tuning stopped** before it started: Stop was pressed while it waited.", skip, skip, skip, None
        return
    try:
        count, per_trial = _budget(trials, seconds)
        settings = parse(dict(zip(SETTING_FIELDS, values)))
        base, threat = configs(settings)
        frozen = tuple(f for f in FROZEN if f in _space(settings.method))
        config = TuneConfig(method=settings.method, trials=count, seconds=per_trial, clock="wall",
                            attack_seed=base.attack_seed, frozen=frozen)
        device = run_device()
        model = get_model(settings.model, device)
        size = run_size(settings, model)
        named = pick_victims(settings, size, model.channels)
        scenario = settings_scenario(settings, tuple(name for name, _, _ in named), size)
        # The client's side, once: only the update goes to the tuner; the batch stays with the evaluator.
        shared = share_scenario(scenario, lambda spec: get_model(spec, device),
                                images=torch.cat([v[1] for v in named]))
    except (Refusal, UserError, ValueError) as err:
        yield f"**Tuning refused**: {str(err).splitlines()[0]}", skip, skip, skip, None
        return
    stop = session.claim()
    if stop is None:
        yield "A run is already going in this session: press Stop first.", skip, skip, skip, None
        return
    evaluator = Evaluator(shared.batch, lpips_every=0)
    rows: list[list[Any]] = []
    records: list[TrialRecord] = []
    history = importance = None
    try:
        yield f"Tuning {settings.method}: trial 0 (the defaults) of {count} ...", [], None, None, None
        for record in tune(shared.model, shared.update, threat, config, prior=shared.prior, stop=stop):
            records.append(record)
            rows.append(_row(record, evaluator))
            history, importance = _figures(record.study, history, importance)
            yield (f"Tuning {settings.method}: {len(records)} of {count} trials done.",
                   rows, history, importance, None)
    finally:
        session.release(stop)
    chosen = best(records)
    if stop.is_set() or chosen is None:
        yield (f"**Tuning stopped** after {len(records)} trials" + (f"; the best so far was trial {chosen.number}."
                                                                    if chosen else "."), rows, history, importance,
               None)
        return
    params = {**chosen.outcome.params, "total": settings.latent_iterations + settings.pixel_iterations}
    yield (f"**Tuning finished**: trial {chosen.number} has the lowest matching loss "
           f"({chosen.outcome.matching_loss:.3g}); running it in the main view ...", rows, history, importance,
           params)


# The API names the study's parameters after the settings, as it does the run's (gradio reads the signature).
run_tune.__signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                            for name in ("session", "trials", "seconds", *SETTING_FIELDS)])


def _space(method: str) -> tuple[str, ...]:
    from gidm_core.tuning import SPACES

    return tuple(SPACES[method])


def _row(record: TrialRecord, evaluator: Evaluator) -> list[Any]:
    o = record.outcome
    score = (evaluator.metrics(o.reconstruction, lpips=False)["psnr"] if o.reconstruction is not None else math.nan)
    params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in o.params.items())
    state = {"COMPLETE": "done"}.get(record.state, record.state.lower())
    return [record.number, state, f"{o.matching_loss:.3g}", round(score, 2), round(o.seconds, 1), params]


def _figures(study: Any, history: Any, importance: Any) -> tuple[Any, Any]:
    """Optuna's optimization history (log loss) and parameter importances; the importances need two finished
    trials that differ, so until then (or if they cannot be computed) the last figure stays."""
    import optuna

    history = optuna.visualization.plot_optimization_history(study, target_name="matching loss")
    history.update_yaxes(type="log")
    try:
        importance = optuna.visualization.plot_param_importances(study, target_name="matching loss")
    except (RuntimeError, ValueError, ZeroDivisionError):
        pass
    for figure in (history, importance):
        if figure is not None:
            figure.update_layout(height=300, template="plotly_white", margin=dict(l=50, r=20, t=20, b=40),
                                 title=None, legend=dict(orientation="h", y=-0.25))
    return history, importance


def load_best(params: dict[str, Any] | None, *values: Any) -> tuple:
    """The best trial's hyperparameters into the main view's controls (its latent share splits the main view's
    iterations); refuses (so the chained run does not start) when no study finished."""
    if not params:
        raise gr.Error("No finished study to run.", print_exception=False)
    settings = parse(dict(zip(SETTING_FIELDS, values)))
    total = params["total"]
    base, _ = configs(settings)
    share = params.get("latent_share", base.latent_iterations / max(base.total_iterations, 1))
    latent = min(round(share * total), total - (share < 1))
    chosen = {**{name: getattr(base, name) for name in LOADED}, **params, "latent_iterations": latent,
              "pixel_iterations": total - latent, "lr_schedule": "cosine"}
    return tuple(as_typed(chosen[name]) for name in LOADED)


def wire(session: gr.State, c: dict[str, Any], w: dict[str, Any], run_outputs: list[Any], attacks: dict) -> None:
    """Tune (public API name `tune`), then the best trial's settings into the main view, then its run."""
    inputs = [c[name] for name in SETTING_FIELDS]
    outputs = [w[name] for name in ("tune_status", "tune_table", "tune_history", "tune_importance", "tune_best")]
    w["tune_btn"].click(gpu(run_tune, tune_duration), [session, w["tune_trials"], w["tune_seconds"], *inputs], outputs,
                        api_name="tune", validator=handlers.submit, **attacks).success(
        load_best, [w["tune_best"], *inputs], [c[name] for name in LOADED], api_visibility="private").success(
        gpu(handlers.run, run_duration), [session, *inputs], run_outputs, api_visibility="private",
        validator=handlers.submit, concurrency_id="attack")
