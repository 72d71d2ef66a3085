"""The Gradio Blocks layout and its wiring. All work is delegated to `settings` (what a user can set) and `runner`
(which calls the core)."""

from __future__ import annotations

import inspect
import os
from typing import Any

import gradio as gr

from gidm_core.config import OPTIMIZERS, attack_config
from gidm_core.models import ModelLoadError

from . import runner, sweep
from .export import export_zip
from .settings import (
    CONTROLS,
    DEFAULT_PRESET,
    DEFENCES,
    MAX_BATCH,
    METHOD_LABELS,
    PRESETS,
    RESOLUTIONS,
    SECRETS,
    SETTING_FIELDS,
    SOURCES,
    Refusal,
    Settings,
    applies,
    hints,
    number,
    parse,
)

# Phones (Gradio stacks the two columns below 768 px): the live view comes first, the settings after it.
CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; image-rendering: crisp-edges; }
.teach { font-size: 0.88em; opacity: 0.9; }
#status { min-height: 2.6em; }
#hints { color: #9a5b00; }
#filmstrip .caption-label { max-width: 96%; font-size: 11px; padding: 1px 4px; }
@media (max-width: 768px) { #view-col { order: -1; } }
"""

# After a refused Run, bring the tab that holds the bad value into view (on a phone it is below the images).
SHOW_REFUSED_TAB = """() => { if (document.querySelector('#status').innerText.startsWith('Refused'))
  document.querySelector('#settings-tabs').scrollIntoView({block: 'start'}); }"""

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

INTRO = """# GIDM Explorer
**Gradient inversion of federated diffusion models.** A client trains a diffusion model on its private images and
sends only the *gradient* of its loss to the server. The server here is the attacker: starting from noise, it searches
for an image whose gradient matches the shared one. Press **Run** and watch the private image emerge."""

TEACH_VICTIM = """The victim is the client's private training batch. The gallery holds face images **held out** of every
bundled model's training, so the attack cannot have memorised them. With batch size 1 a click picks the image; with a
larger batch clicks add and remove images (the batch is padded from the gallery). Larger batches are harder: the
gradients of several images are summed. Click an image below to pick it."""

TEACH_MODEL = """The attacked model is the federated **global model** the server sent out. `@early` checkpoints come
from early training rounds; the bare name is the final round. Random models are untrained. A local diffusers folder
or a hub id (online only) can be typed in."""

TEACH_THREAT = r"""**What the server receives:** the gradient $\nabla_\theta \lVert \epsilon -
\epsilon_\theta(x_t, t) \rVert^2$ of the client's loss, where $x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 -
\bar\alpha_t}\, \epsilon$ mixes its private image $x_0$ with noise $\epsilon$ at timestep $t$. In the paper's setting
$\epsilon$ and $t$ are sent too (GIDM). **GIDM+** assumes they stay private: $t$ is read off the time-embedding
gradient, $\epsilon$ is recovered with the image. **Two seeds:** the client's secret seed draws its private
$\epsilon$ (and $t$ when not set); the attacker's seed (Attack tab) draws the attacker's first guess, from an
independent stream. **Defences:** clipping + Gaussian noise (as in DP-SGD) drowns the fine detail that matching needs
once the noise is comparable to the gradient; top-k pruning hides most entries but keeps the large ones, which often
still carry the image. The server knows the defence and applies it to its own guesses."""

TEACH_ATTACK = r"""**Phase 1 (GIDM, latent):** search the start noise $x_T$ of the model's own DDIM sampler
($K$ steps, differentiated end to end), so the guess stays on the model's image manifold. **Phase 2 (pixel):**
fine-tune pixels $\hat x_0$ to minimise $\sum_l w_l \lVert \nabla_{\theta_l} L(\hat x_0) - g_l \rVert^2$, the
distance to the shared gradient $g$. DLG and IG do phase 2 from noise (IG: cosine distance + total variation).
Each latent step costs about $K$ pixel steps. **Optimiser:** `lbfgs` (the default) is quasi-Newton: it builds a
curvature estimate from recent gradients and picks each step's length by a line search, so it needs no learning
rate and converges in a few hundred evaluations on trained models; `adam` and `sgd` take the learning rates and
schedule shown when you pick them."""

TEACH_SWEEP = """Pick one or two hyperparameters and their values (separated by spaces). Every other setting comes
from the main view (victim images from the gallery, model, threat, method). Each cell is a short run through the
benchmark's own cell function (`gidm_core.bench.run_cell`); the heatmap fills as cells finish, each with its PSNR
and its time to 30 dB. **Stop** (above) ends the sweep after the current cell. Click a cell of the table to load its
settings into the main view and watch that run."""

TEACH_VIEW = r"""**How to read it.** The status line names what the reconstruction looks like by its PSNR
$= 10 \log_{10}(1/\mathrm{MSE})$: below 15 dB *noise*, 15-20 *a blur*, 20-25 *a rough likeness*, 25-35
*recognisable*, 35-45 *a close copy*, from 45 dB *near-exact*. The difference image is $|\hat x_0 - x_0|$,
amplified 4x."""


def _teach(text: str, **kwargs: Any) -> gr.Markdown:
    return gr.Markdown(text, latex_delimiters=LATEX, elem_classes="teach", **kwargs)


def _number(s: Settings, name: str, **kwargs: Any) -> gr.Textbox:
    """A number typed as text: the app's own validation reads it (see settings.number)."""
    return gr.Textbox(str(getattr(s, name)), label=CONTROLS[name][1], max_lines=1, elem_id=f"ctl-{name}",
                      **kwargs)


def build_app() -> gr.Blocks:
    items = runner.gallery_items()
    s = Settings.from_preset(DEFAULT_PRESET, model=runner.default_model(),
                             gallery=[items[0].name] if items else [])
    shown = applies(s.__dict__)
    c: dict[str, Any] = {}  # every setting's control, by field name
    label = {name: tab_label[1] for name, tab_label in CONTROLS.items()}
    with gr.Blocks(title="GIDM Explorer", fill_width=True, delete_cache=(1800, 3600)) as demo:
        session = gr.State(runner.Session, delete_callback=runner.Session.close)
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2, min_width=360, elem_id="settings-col"):
                preset = gr.Dropdown(list(PRESETS), value=DEFAULT_PRESET, label="Preset",
                                     info="fills in the settings below", elem_id="preset")
                hint_md = gr.Markdown("", elem_id="hints")
                with gr.Tabs(overflow_behavior="wrap", elem_id="settings-tabs") as tabs:
                    with gr.Tab("Victim", id="Victim"):
                        _teach(TEACH_VICTIM)
                        c["source"] = gr.Radio(list(SOURCES), value=s.source, label=label["source"])
                        gallery_view = gr.Gallery(runner.gallery_previews(items), label="Held-out images",
                                                  show_label=False, columns=4, height=310, allow_preview=False,
                                                  elem_classes="pixelated", format="png", elem_id="gallery-view")
                        c["gallery"] = gr.Dropdown([item.name for item in items], value=s.gallery, multiselect=True,
                                                   label=label["gallery"], info="several images make a batch",
                                                   elem_id="ctl-gallery")
                        with gr.Row(visible=shown["uploads"]) as upload_row:
                            c["uploads"] = gr.File(file_count="multiple", type="filepath", label=label["uploads"],
                                                   height=170)
                            upload_preview = gr.Gallery(label="Uploaded images",
                                                        columns=4, height=170, allow_preview=False, format="png",
                                                        elem_classes="pixelated", elem_id="upload-preview")
                        with gr.Row():
                            c["webcam"] = gr.Image(sources=["webcam"], type="numpy", label=label["webcam"],
                                                   height=170, visible=shown["webcam"])
                        with gr.Row():
                            c["resolution"] = gr.Dropdown(list(RESOLUTIONS), value=s.resolution,
                                                          label=label["resolution"])
                            c["batch_size"] = _number(s, "batch_size", info=f"1 to {MAX_BATCH}, padded from the "
                                                                             "gallery")
                    with gr.Tab("Model", id="Model"):
                        _teach(TEACH_MODEL)
                        c["model"] = gr.Dropdown(runner.model_choices(), value=s.model, allow_custom_value=True,
                                                 label=label["model"], info="bundled[@round], folder, hub id")
                    with gr.Tab("Threat", id="Threat"):
                        _teach(TEACH_THREAT)
                        c["secrets"] = gr.Radio([(v, k) for k, v in SECRETS.items()], value=s.secrets,
                                                label=label["secrets"])
                        with gr.Row():
                            c["client_t"] = _number(s, "client_t", info="-1: drawn from the client's seed. Private "
                                                    "eps: GIDM+ works near t = 400; at small t eps hardly shows in "
                                                    "the gradient, at large t errors are amplified")
                            c["seed"] = _number(s, "seed", info="draws the client's private eps (and t if -1)")
                        c["prior"] = gr.Dropdown(["attacked"] + runner.model_choices(), value=s.prior,
                                                 allow_custom_value=True, label=label["prior"],
                                                 info="'attacked' = the attacked model itself",
                                                 visible=shown["prior"])
                        c["defence"] = gr.Radio(list(DEFENCES), value=s.defence, label=label["defence"])
                        with gr.Row():
                            c["clip"] = _number(s, "clip", visible=shown["clip"])
                            c["sigma"] = _number(s, "sigma", info="noise std = sigma x clip norm",
                                                 visible=shown["sigma"])
                            c["keep"] = _number(s, "keep", visible=shown["keep"])
                    with gr.Tab("Attack", id="Attack"):
                        _teach(TEACH_ATTACK)
                        c["method"] = gr.Dropdown([(v, k) for k, v in METHOD_LABELS.items()], value=s.method,
                                                  label=label["method"])
                        with gr.Row():
                            c["latent_iterations"] = _number(s, "latent_iterations",
                                                             visible=shown["latent_iterations"])
                            c["ddim_steps"] = _number(s, "ddim_steps", visible=shown["ddim_steps"])
                            c["latent_lr"] = _number(s, "latent_lr", visible=shown["latent_lr"])
                        with gr.Row():
                            c["iterations"] = _number(s, "iterations", info="GIDM+: all of its iterations",
                                                      visible=shown["iterations"])
                            c["lr"] = _number(s, "lr", visible=shown["lr"])
                            c["report_every"] = _number(s, "report_every")
                        with gr.Row():
                            c["optimizer"] = gr.Radio(list(OPTIMIZERS), value=s.optimizer, label=label["optimizer"],
                                                      info="lbfgs: quasi-Newton with a line search, no learning "
                                                           "rate; adam/sgd: first-order, with the rates shown")
                            c["lr_schedule"] = gr.Radio(["constant", "cosine"], value=s.lr_schedule,
                                                        label=label["lr_schedule"],
                                                        visible=shown["lr_schedule"])
                        with gr.Row():
                            c["distance"] = gr.Radio(["l2", "cosine"], value=s.distance, label=label["distance"])
                            c["tv_weight"] = _number(s, "tv_weight")
                            c["layer_weights"] = gr.Radio(["normalized", "uniform"], value=s.layer_weights,
                                                          label=label["layer_weights"],
                                                          info="normalized: every layer's gradient counts alike")
                        c["attack_seed"] = _number(s, "attack_seed", info="the attacker's own first guess; "
                                                   "independent of the client's secret seed")
            with gr.Column(scale=3, min_width=360, elem_id="view-col"):
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                status = gr.Markdown("Ready. Press **Run**.", elem_id="status")
                with gr.Row():
                    original = gr.Image(label="Private image", format="png", elem_id="original",
                                        elem_classes="pixelated", interactive=False, height=250, buttons=[],
                                        min_width=110)
                    reconstruction = gr.Image(label="Reconstruction", format="png", elem_id="reconstruction",
                                              elem_classes="pixelated", interactive=False, height=250, buttons=[],
                                              min_width=110)
                    diff = gr.Image(label="Difference (x4)", format="png", elem_classes="pixelated",
                                    interactive=False, height=250, buttons=[], min_width=110)
                _teach(TEACH_VIEW)
                loss_plot = gr.Plot(None, label="Loss", elem_id="loss-plot")
                with gr.Row():
                    metrics_plot = gr.Plot(None, label="Metrics")
                    t_plot = gr.Plot(None, label="t and eps", visible=s.secrets == "private")
                filmstrip = gr.Gallery(label="Filmstrip (snapshots of the run)", columns=5, height=280,
                                       format="png", elem_classes="pixelated", allow_preview=True,
                                       elem_id="filmstrip")
                export_file = gr.File(label="Export: PNGs, metrics.json, loss.csv, command.txt", interactive=False)
        with gr.Accordion("Compare this session's runs", open=False):
            table = gr.Dataframe(headers=runner.TABLE_HEADERS, value=[], interactive=False, wrap=True)
            with gr.Row():
                pick_a = gr.Dropdown([], label="Run A")
                pick_b = gr.Dropdown([], label="Run B")
            with gr.Row():
                view_a = gr.Image(label="A: original above, reconstruction below", format="png",
                                  elem_classes="pixelated", interactive=False, height=300, elem_id="view-a")
                view_b = gr.Image(label="B: original above, reconstruction below", format="png",
                                  elem_classes="pixelated", interactive=False, height=300, elem_id="view-b")
            compare_md = gr.Markdown()
            export_a = gr.Button("Export run A as zip")
        with gr.Accordion("Sweep: a grid of short runs", open=False):
            _teach(TEACH_SWEEP)
            with gr.Row():
                x_axis = gr.Dropdown(list(sweep.AXES), value="iterations (total)", label="Across (x)")
                x_values = gr.Textbox("50 100 200", label="x values", max_lines=1, elem_id="sweep-x")
                y_axis = gr.Dropdown([sweep.NONE, *sweep.AXES], value="method", label="Down (y)")
                y_values = gr.Textbox("dlg gidm", label="y values", max_lines=1, elem_id="sweep-y")
                cell_iterations = gr.Textbox("100", label="Iterations per cell", max_lines=1,
                                             info="unless an axis sets them")
            sweep_btn = gr.Button("Run sweep", elem_id="sweep-btn")
            sweep_status = gr.Markdown("", elem_id="sweep-status")
            sweep_plot = gr.Plot(None, label="Sweep", elem_id="sweep-plot")
            sweep_table = gr.Dataframe(value=[], interactive=False, elem_id="sweep-table",
                                       label="PSNR (dB) per cell: click one to load it into the main view")
            grid_state = gr.State(None)

        inputs = [c[name] for name in SETTING_FIELDS]
        run_outputs = [status, original, reconstruction, diff, loss_plot, metrics_plot, t_plot, filmstrip, table,
                       pick_a, pick_b, export_file, tabs]
        compare_io = ([session, pick_a, pick_b], [view_a, view_b, compare_md])
        run_btn.click(_gpu(run), [session, *inputs], run_outputs, api_name="run",
                      concurrency_limit=int(os.environ.get("GIDM_CONCURRENCY", "2")), concurrency_id="attack",
                      show_progress="minimal").then(compare, *compare_io, api_visibility="private").then(
            None, js=SHOW_REFUSED_TAB)
        stop_btn.click(stop, [session], [status], api_name="stop", concurrency_limit=None,
                       concurrency_id="stop", show_progress="hidden")

        preset.input(apply_preset, [preset], [c[name] for name in PRESET_FIELDS], api_visibility="private")
        c["method"].input(method_defaults, [c["method"]], [c[name] for name in METHOD_FIELDS],
                          api_visibility="private")
        # Which controls apply, and what this combination will do, follow every control they depend on.
        dependent = list(applies({}))
        holders = {**c, "uploads": upload_row}  # the upload's preview shows and hides with it
        refresh_outputs = [holders[name] for name in dependent] + [t_plot, hint_md]
        for name in ("method", "optimizer", "defence", "source", "secrets", "distance", "layer_weights"):
            c[name].change(lambda *values: refresh(dependent, *values), inputs, refresh_outputs,
                           api_visibility="private", show_progress="hidden")
        for name in ("client_t", "clip", "sigma"):
            c[name].blur(lambda *values: refresh(dependent, *values), inputs, refresh_outputs,
                         api_visibility="private", show_progress="hidden")
        gallery_view.select(pick_gallery, [c["gallery"], c["batch_size"]], [c["gallery"], c["source"]],
                            api_visibility="private")
        c["uploads"].change(upload_previews, [c["uploads"]], [upload_preview], api_visibility="private")
        c["webcam"].input(lambda: "Webcam", None, [c["source"]], api_visibility="private")
        pick_a.input(compare, *compare_io, api_visibility="private")
        pick_b.input(compare, *compare_io, api_visibility="private")
        export_a.click(export_pick, [session, pick_a], [export_file], api_visibility="private")
        sweep_btn.click(_gpu(run_sweep), [session, x_axis, x_values, y_axis, y_values, cell_iterations, *inputs],
                        [sweep_plot, sweep_table, sweep_status, grid_state], api_visibility="private",
                        concurrency_limit=int(os.environ.get("GIDM_CONCURRENCY", "2")), concurrency_id="attack")
        sweep_table.select(load_cell, [grid_state], [c[name] for name in CELL_FIELDS] + [status],
                           api_visibility="private").then(
            _gpu(run), [session, *inputs], run_outputs, api_visibility="private", concurrency_id="attack")
        demo.load(refresh_choices, None, [c["model"], c["prior"]], api_visibility="private")
    return demo


PRESET_FIELDS = ("method", "secrets", "client_t", "defence", "clip", "sigma", "keep", "iterations", "lr",
                 "latent_iterations", "latent_lr", "ddim_steps", "distance", "tv_weight", "lr_schedule", "optimizer",
                 "layer_weights", "report_every")
CELL_FIELDS = ("method", "iterations", "latent_iterations", "ddim_steps", "client_t", "seed", "attack_seed",
               "defence", "clip", "sigma", "keep", "optimizer", "distance", "tv_weight", "layer_weights",
               "lr_schedule", "lr", "latent_lr", "report_every")
METHOD_FIELDS = ("distance", "tv_weight", "lr", "lr_schedule", "optimizer", "layer_weights")


def _gpu(fn):
    """On Hugging Face Spaces with ZeroGPU, run on the GPU; everywhere else the function is unchanged."""
    try:
        import spaces  # noqa: PLC0415
    except ImportError:
        return fn
    return spaces.GPU(duration=300)(fn)


def run(session: runner.Session, *values):
    """Stream one attack: status, original, reconstruction, difference, three plots, filmstrip, compare table,
    run pickers, export, and (when a value is refused) the tab that holds it."""
    skip = gr.skip()
    try:
        settings = parse(dict(zip(SETTING_FIELDS, values)))
    except Refusal as err:  # say where, show it, and clear the last run's results so they are not taken for these
        yield (f"**Refused** ({err.tab} tab, {err.label}): {str(err).split(': ', 1)[1]}", None, None, None, None,
               None, None, [], skip, skip, skip, None, gr.Tabs(selected=err.tab))
        return
    sent_original = None  # the original does not change during a run: send it once (gradio rewrites the cached
    # file of an image each time it is sent, which can cut short a download of that same file)
    for frame in runner.stream(session, settings):
        if frame.error:
            gr.Warning(frame.status.replace("**", ""))
        original = skip if frame.original is sent_original else frame.original
        sent_original = frame.original or sent_original
        images = tuple(skip if v is None else v for v in (
            original, frame.reconstruction, frame.difference, frame.loss_figure, frame.metrics_figure,
            frame.t_figure, frame.filmstrip))
        if frame.finished is not None:
            labels = [r.label for r in session.runs]
            previous = labels[-2] if len(labels) > 1 else labels[-1]
            tail = (session.table(), gr.update(choices=labels, value=previous),
                    gr.update(choices=labels, value=labels[-1]),
                    str(export_zip(frame.finished, session.workfolder())), skip)
        else:
            tail = (skip,) * 5
        yield (frame.status,) + images + tail


# The API names run's parameters after the settings (gradio reads them from the signature).
run.__signature__ = inspect.Signature([inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                       for name in ("session", *SETTING_FIELDS)])


def stop(session: runner.Session) -> str:
    return "**Stopping** at the next step; the best guess so far is kept ..." if session.stop() else gr.skip()


def apply_preset(name: str):
    p = PRESETS[name]
    base = Settings()
    return tuple(_shown(p.get(k, getattr(base, k))) for k in PRESET_FIELDS)


def _shown(value: Any) -> Any:
    """A setting as its control holds it (numbers are typed as text)."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def method_defaults(method: str):
    """The method's own defaults for the controls it differs on (from the core's config)."""
    config = attack_config(method)
    return tuple(_shown(getattr(config, name)) for name in METHOD_FIELDS)


def refresh(dependent: list[str], *values):
    """Show the controls that apply, the t panel when t is private, and hints for this combination."""
    raw = dict(zip(SETTING_FIELDS, values))
    shown = applies(raw)
    try:
        notes = hints(parse(raw))
    except Refusal:
        notes = []
    return tuple(gr.update(visible=shown[name]) for name in dependent) + (
        gr.update(visible=raw.get("secrets") == "private"), "\n\n".join(f"*Note:* {n}" for n in notes))


def pick_gallery(current: list[str] | None, batch_size: Any, evt: gr.SelectData):
    """A click picks the image (batch size 1) or adds / removes it (larger batches)."""
    value = evt.value
    caption = value.get("caption") if isinstance(value, dict) else None
    names = [item.name for item in runner.gallery_items()]
    name = caption if caption in names else (names[evt.index] if evt.index is not None and evt.index < len(names)
                                             else None)
    if name is None:
        return gr.skip(), gr.skip()
    try:
        batch = int(number(batch_size))
    except ValueError:
        batch = 1
    if batch <= 1:
        return [name], "Gallery"
    current = list(current or [])
    current = [n for n in current if n != name] if name in current else current + [name]
    return current or [name], "Gallery"


def upload_previews(paths: list[str] | None):
    """Thumbnails of the uploads (an unreadable file shows none, and the Run says why)."""
    return runner.previews([(path, os.path.basename(path)) for path in paths or []])


def compare(session: runner.Session, a: str | None, b: str | None):
    ra, rb = session.find(a), session.find(b)
    rows = []
    for tag, r in (("A", ra), ("B", rb)):
        if r is None:
            continue
        m = r.metrics
        rows.append(f"| {tag} | {r.label} | {r.threat} | {r.iterations} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
                    f"{m['lpips']:.3f} | {r.seconds:.1f} |")
    table = ("| | run | threat | iters | PSNR | SSIM | LPIPS | s |\n|---|---|---|---|---|---|---|---|\n"
             + "\n".join(rows)) if rows else ""

    def pair(r):
        if r is None:
            return None
        import torch

        return runner.show(torch.cat([r.original[:4], r.reconstruction[:4]]))

    return pair(ra), pair(rb), table


def run_sweep(session: runner.Session, x_axis: str, x_text: str, y_axis: str, y_text: str, cell_iterations: str,
              *values):
    """Run the grid and fill the heatmap and table as cells finish (the main Stop button stops it between cells)."""
    try:
        settings = parse(dict(zip(SETTING_FIELDS, values)))
        xs = sweep.values(x_text, x_axis)
        ys = sweep.values(y_text, y_axis) if y_axis != sweep.NONE else [""]
        iterations = int(number(cell_iterations))
        if not 1 <= iterations <= 5000:
            raise ValueError(f"iterations per cell must be between 1 and 5000, got {iterations}")
        if len(xs) * len(ys) > sweep.MAX_CELLS:
            raise ValueError(f"{len(xs) * len(ys)} cells: at most {sweep.MAX_CELLS}")
        bundled = {item.name for item in runner.gallery_items() if item.bundled}
        images = tuple(settings.gallery[:max(1, settings.batch_size)])
        if settings.source != "Gallery" or not images or not set(images) <= bundled:
            raise ValueError("a sweep attacks bundled gallery images: pick them on the Victim tab")
        model = runner.get_model(settings.model, runner.device_name())
        size = model.image_size if settings.resolution == RESOLUTIONS[0] else int(settings.resolution)
    except (Refusal, ValueError, ModelLoadError) as err:
        yield gr.skip(), gr.skip(), f"**Sweep refused:** {err}", gr.skip()
        return
    grid = sweep.Grid(sweep.base_cell(settings, images, size, iterations), x_axis, tuple(xs), y_axis, tuple(ys))
    stop = session.claim()
    if stop is None:
        yield gr.skip(), gr.skip(), "A run is already going in this session: press Stop first.", gr.skip()
        return
    headers = [y_axis if y_axis != sweep.NONE else ""] + [f"{x_axis} = {x}" for x in xs]
    try:
        for table, text in sweep.run(grid, stop.is_set):
            yield (sweep.heatmap(grid, table), gr.Dataframe(sweep.rows(grid, table), headers=headers), text,
                   grid)
    finally:
        session.release(stop)


def load_cell(grid: sweep.Grid | None, evt: gr.SelectData):
    """The picked cell's settings into the main controls (the attack config the benchmark ran); a run follows."""
    row, col = evt.index if isinstance(evt.index, (list, tuple)) else (0, 0)
    if grid is None or col < 1:
        return (gr.skip(),) * len(CELL_FIELDS) + ("Pick a PSNR cell of the sweep table.",)
    cell = grid.cell(row, col - 1)
    config = attack_config(cell.method, ddim_steps=cell.ddim_steps, optimizer=cell.optimizer,
                           report_every=cell.report_every, **cell.budget_split())
    clip, sigma, keep = cell.defence
    defence = DEFENCES[2] if keep < 1 else DEFENCES[1] if clip > 0 or sigma > 0 else DEFENCES[0]
    chosen = {**{name: getattr(config, name) for name in CELL_FIELDS if hasattr(config, name)},
              "client_t": -1 if cell.t is None else cell.t, "seed": cell.seeds[0], "attack_seed": cell.seeds[0],
              "defence": defence, "clip": clip, "sigma": sigma, "keep": keep}
    return tuple(_shown(chosen[name]) for name in CELL_FIELDS) + (
        f"Loaded sweep cell ({grid.x_axis} = {grid.x_values[col - 1]}"
        + (f", {grid.y_axis} = {grid.y_values[row]}" if grid.y_axis != sweep.NONE else "") + "): running it ...",)


def export_pick(session: runner.Session, label: str | None):
    record = session.find(label) or (session.runs[-1] if session.runs else None)
    if record is None:
        gr.Warning("No finished run to export yet.")
        return gr.skip()
    return str(export_zip(record, session.workfolder()))


def refresh_choices():
    choices = runner.model_choices()
    return gr.update(choices=choices), gr.update(choices=["attacked"] + choices)


def launch_kwargs() -> dict[str, Any]:
    """Arguments for `demo.launch` (Gradio 6 takes theme/css here, not in Blocks())."""
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: works offline
                           font_mono=["ui-monospace", "Consolas", "monospace"])
    return dict(css=CSS, theme=theme, max_file_size="25mb", show_error=True)


def queue(demo: gr.Blocks) -> gr.Blocks:
    return demo.queue(max_size=int(os.environ.get("GIDM_QUEUE_SIZE", "16")), default_concurrency_limit=2)
