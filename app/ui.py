"""The Gradio Blocks layout and its wiring. All work is delegated to `runner` (which calls the core)."""

from __future__ import annotations

import os
from typing import Any

import gradio as gr

from gidm_core.config import attack_config

from . import runner
from .export import export_zip

CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; image-rendering: crisp-edges; }
.teach { font-size: 0.88em; opacity: 0.85; }
#status { min-height: 2.6em; }
"""

INTRO = """# GIDM Explorer
**Gradient inversion of federated diffusion models.** A client trains a diffusion model on its private images and
sends only the *gradient* of its loss to the server. The server here is the attacker: starting from noise, it searches
for an image whose gradient matches the shared one. Press **Run** and watch the private image emerge."""

TEACH_VICTIM = """<div class="teach">The victim is the client's private training batch. The gallery holds face images
<b>held out</b> of every bundled model's training, so the attack cannot have memorised them. Larger batches are
harder: the gradients of several images are summed.</div>"""

TEACH_MODEL = """<div class="teach">The attacked model is the federated <b>global model</b> the server sent out.
<code>@early</code> checkpoints come from early training rounds; the bare name is the final round. Random models are
untrained. A local diffusers folder or a hub id (online only) can be typed in.</div>"""

TEACH_THREAT = """<div class="teach"><b>What the server receives:</b> the gradient of the client's loss
||eps - eps_theta(x_t, t)||^2 for its private images x0, noise eps and timestep t. In the paper's setting eps and
t are sent too (GIDM). <b>GIDM+</b> assumes they stay private: t is read off the time-embedding gradient, eps is
recovered with the image. <b>Defences:</b> clipping + Gaussian noise (as in DP-SGD) drowns the fine detail that
matching needs once the noise is comparable to the gradient; top-k pruning hides most entries but keeps the large
ones, which often still carry the image.</div>"""

TEACH_ATTACK = """<div class="teach"><b>Phase 1 (GIDM, latent):</b> search the start noise x_T of the model's own
DDIM sampler (K steps, differentiated end to end), so the guess stays on the model's image manifold.
<b>Phase 2 (pixel):</b> fine-tune pixels from there to match the gradient exactly. DLG and IG do phase 2 from
noise (IG: cosine distance + total variation). Each latent step costs about K pixel steps.</div>"""

ALL_METHODS = list(runner.METHOD_LABELS)


def _defaults() -> dict[str, Any]:
    """Startup defaults, computed when the UI is built (models and images may appear after import)."""
    items = runner.gallery_items()
    model = runner.default_model()
    return {"items": items, "model": model, "settings": runner.Settings.from_preset(
        runner.DEFAULT_PRESET, model=model, gallery=[items[0].name] if items else [])}


def build_app() -> gr.Blocks:
    d = _defaults()
    s: runner.Settings = d["settings"]
    items: list[runner.GalleryItem] = d["items"]
    names = [item.name for item in items]
    # delete_cache: Gradio's copies of served files older than an hour are removed hourly (a public server's disk)
    with gr.Blocks(title="GIDM Explorer", fill_width=True, delete_cache=(3600, 3600)) as demo:
        session = gr.State(runner.Session, delete_callback=runner.Session.close)
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=2, min_width=360):
                with gr.Row():
                    preset = gr.Dropdown(list(runner.PRESETS), value=runner.DEFAULT_PRESET, label="Preset",
                                         info="fills in the settings below", scale=3)
                    run_btn = gr.Button("Run", variant="primary", scale=1, elem_id="run-btn")
                    stop_btn = gr.Button("Stop", variant="stop", scale=1, elem_id="stop-btn")
                with gr.Tabs():
                    with gr.Tab("Victim"):
                        gr.HTML(TEACH_VICTIM)
                        source = gr.Radio(list(runner.SOURCES), value=s.source, label="Source")
                        gallery_view = gr.Gallery(runner.gallery_previews(items), label="Held-out images "
                                                  "(click to pick)", columns=6, height=170, allow_preview=False,
                                                  elem_classes="pixelated", format="png")
                        gallery = gr.Dropdown(names, value=s.gallery, multiselect=True, label="Picked images",
                                              info="several images make a batch")
                        with gr.Row():
                            uploads = gr.File(file_count="multiple", type="filepath", label="Upload images",
                                              height=170)
                            webcam = gr.Image(sources=["webcam"], type="numpy", label="Webcam", height=170)
                        with gr.Row():
                            resolution = gr.Dropdown(list(runner.RESOLUTIONS), value=s.resolution,
                                                     label="Resolution (px)")
                            batch_size = gr.Number(s.batch_size, label="Batch size", precision=0,
                                                   info="padded from the gallery")
                    with gr.Tab("Model"):
                        gr.HTML(TEACH_MODEL)
                        model = gr.Dropdown(runner.model_choices(), value=s.model, allow_custom_value=True,
                                            label="Attacked model", info="bundled[@round], folder, hub id")
                    with gr.Tab("Threat model"):
                        gr.HTML(TEACH_THREAT)
                        secrets = gr.Radio([(v, k) for k, v in runner.SECRETS.items()], value=s.secrets,
                                           label="Noise eps and timestep t")
                        client_t = gr.Number(s.client_t, label="Client's timestep t (-1: drawn from the seed)",
                                             precision=0,
                                             info="private eps: t near 400 is where GIDM+ works; at small t eps "
                                                  "hardly shows in the gradient, at large t errors are amplified")
                        prior = gr.Dropdown(["attacked"] + runner.model_choices(), value=s.prior,
                                            allow_custom_value=True, label="Prior for GIDM's sampler",
                                            info="'attacked' = the attacked model itself")
                        defence = gr.Radio(list(runner.DEFENCES), value=s.defence, label="Client's defence")
                        with gr.Row():
                            clip = gr.Number(s.clip, label="clip norm")
                            sigma = gr.Number(s.sigma, label="noise sigma (std = sigma x clip)")
                            keep = gr.Number(s.keep, label="top-k: fraction kept")
                    with gr.Tab("Attack"):
                        gr.HTML(TEACH_ATTACK)
                        method = gr.Dropdown([(v, k) for k, v in runner.METHOD_LABELS.items()], value=s.method,
                                             label="Method")
                        with gr.Row():
                            latent_iterations = gr.Number(s.latent_iterations, label="Phase 1 iterations (latent)",
                                                          precision=0)
                            latent_lr = gr.Number(s.latent_lr, label="Phase 1 learning rate")
                            ddim_steps = gr.Number(s.ddim_steps, label="DDIM steps K", precision=0)
                        with gr.Row():
                            iterations = gr.Number(s.iterations, label="Pixel iterations (GIDM+: all of its)",
                                                   precision=0)
                            lr = gr.Number(s.lr, label="Pixel learning rate")
                            report_every = gr.Number(s.report_every, label="Update every (iterations)",
                                                     precision=0)
                        with gr.Row():
                            distance = gr.Radio(["l2", "cosine"], value=s.distance, label="Gradient distance")
                            tv_weight = gr.Number(s.tv_weight, label="TV weight")
                            lr_schedule = gr.Radio(["constant", "cosine"], value=s.lr_schedule,
                                                   label="Learning-rate schedule")
                        with gr.Row():
                            optimizer = gr.Radio(list(runner.OPTIMIZERS), value=s.optimizer, label="Optimiser",
                                                 info="lbfgs: quasi-Newton with a line search, no learning rate "
                                                      "needed (fast on trained models); adam/sgd use the rates above")
                            layer_weights = gr.Radio(["normalized", "uniform"], value=s.layer_weights,
                                                     label="Layer weights",
                                                     info="normalized: every layer's gradient counts alike")
                            seed = gr.Number(s.seed, label="Seed", precision=0)
            with gr.Column(scale=3, min_width=420):
                status = gr.Markdown("Ready. Press **Run**.", elem_id="status")
                with gr.Row():
                    original = gr.Image(label="Original (private)", format="png", elem_id="original",
                                        elem_classes="pixelated", interactive=False, height=270)
                    reconstruction = gr.Image(label="Reconstruction (from gradients)", format="png",
                                              elem_id="reconstruction", elem_classes="pixelated",
                                              interactive=False, height=270)
                    diff = gr.Image(label="Difference", format="png", elem_classes="pixelated",
                                    interactive=False, height=270)
                loss_plot = gr.Plot(None, label="Loss", elem_id="loss-plot")
                with gr.Row():
                    metrics_plot = gr.Plot(None, label="Metrics")
                    t_plot = gr.Plot(None, label="t and eps")
                filmstrip = gr.Gallery(label="Filmstrip (snapshots of the run)", columns=9, height=150,
                                       format="png", elem_classes="pixelated", allow_preview=True)
                export_file = gr.File(label="Export: PNGs, metrics.json, loss.csv, command.txt", interactive=False)
        with gr.Accordion("Compare this session's runs", open=False):
            table = gr.Dataframe(headers=runner.TABLE_HEADERS, value=[], interactive=False, wrap=True)
            with gr.Row():
                pick_a = gr.Dropdown([], label="Run A")
                pick_b = gr.Dropdown([], label="Run B")
            with gr.Row():
                view_a = gr.Image(label="A", format="png", elem_classes="pixelated", interactive=False, height=270)
                view_b = gr.Image(label="B", format="png", elem_classes="pixelated", interactive=False, height=270)
            compare_md = gr.Markdown()
            export_a = gr.Button("Export run A as zip")

        settings_inputs = [source, gallery, uploads, webcam, resolution, batch_size, model, secrets, client_t,
                           prior, defence, clip, sigma, keep, method, iterations, lr, latent_iterations,
                           latent_lr, ddim_steps, distance, tv_weight, lr_schedule, optimizer, layer_weights, seed,
                           report_every]
        assert [c for c in runner.SETTING_FIELDS] == [
            "source", "gallery", "uploads", "webcam", "resolution", "batch_size", "model", "secrets", "client_t",
            "prior", "defence", "clip", "sigma", "keep", "method", "iterations", "lr", "latent_iterations",
            "latent_lr", "ddim_steps", "distance", "tv_weight", "lr_schedule", "optimizer", "layer_weights",
            "seed", "report_every"]
        run_outputs = [status, original, reconstruction, diff, loss_plot, metrics_plot, t_plot, filmstrip, table,
                       pick_a, pick_b, export_file]

        def validate(session_, *values):
            # The Numbers carry no minimum/maximum: Gradio's own bound check would refuse an API call without
            # naming the control; this validator enforces runner.LIMITS and says which control is wrong.
            errors = runner.field_errors(dict(zip(runner.SETTING_FIELDS, values)))
            if not errors:  # runs at submission, before the queue holds the run: Stop can now cancel it
                session_.submit()
            return [gr.validate(True, "")] + [gr.validate(name not in errors, errors.get(name, ""))
                                              for name in runner.SETTING_FIELDS]

        run_btn.click(_gpu(run), [session, *settings_inputs], run_outputs, api_name="run", validator=validate,
                      concurrency_limit=int(os.environ.get("GIDM_CONCURRENCY", "2")), concurrency_id="attack",
                      show_progress="minimal")
        stop_btn.click(stop, [session], [status], api_name="stop", concurrency_limit=None,
                       concurrency_id="stop", show_progress="hidden")

        preset_outputs = [method, secrets, client_t, defence, clip, sigma, keep, iterations, lr, latent_iterations,
                          latent_lr, ddim_steps, distance, tv_weight, lr_schedule, optimizer, layer_weights,
                          report_every]
        preset.input(apply_preset, [preset], preset_outputs, api_visibility="private")
        method.input(method_defaults, [method], [distance, tv_weight, lr, lr_schedule, optimizer, layer_weights],
                     api_visibility="private")
        gallery_view.select(pick_gallery, [gallery], [gallery, source], api_visibility="private")
        uploads.upload(lambda: "Upload", None, [source], api_visibility="private")
        webcam.input(lambda: "Webcam", None, [source], api_visibility="private")
        pick_a.change(compare, [session, pick_a, pick_b], [view_a, view_b, compare_md], api_visibility="private")
        pick_b.change(compare, [session, pick_a, pick_b], [view_a, view_b, compare_md], api_visibility="private")
        export_a.click(export_pick, [session, pick_a], [export_file], api_visibility="private")
        demo.load(refresh_choices, None, [model, prior], api_visibility="private")
    return demo


def _gpu(fn):
    """On Hugging Face Spaces with ZeroGPU, run on the GPU; everywhere else the function is unchanged."""
    try:
        import spaces  # noqa: PLC0415
    except ImportError:
        return fn
    return spaces.GPU(duration=300)(fn)


def run(session: runner.Session, source, gallery, uploads, webcam, resolution, batch_size, model, secrets,
        client_t, prior, defence, clip, sigma, keep, method, iterations, lr, latent_iterations, latent_lr,
        ddim_steps, distance, tv_weight, lr_schedule, optimizer, layer_weights, seed, report_every):
    """Stream one attack: status, original, reconstruction, difference, three plots, filmstrip, compare table."""
    values = dict(zip(runner.SETTING_FIELDS, [
        source, gallery, uploads, webcam, resolution, batch_size, model, secrets, client_t, prior, defence, clip,
        sigma, keep, method, iterations, lr, latent_iterations, latent_lr, ddim_steps, distance, tv_weight,
        lr_schedule, optimizer, layer_weights, seed, report_every]))
    skip = gr.skip()
    try:
        settings = runner.parse(values)
    except runner.ConfigError as err:
        gr.Warning(str(err))
        yield (f"**Refused:** {err}",) + (skip,) * 11
        return
    for frame in runner.stream(session, settings):
        if frame.error:
            gr.Warning(frame.status.replace("**", ""))
        images = tuple(skip if v is None else v for v in (
            frame.original, frame.reconstruction, frame.difference, frame.loss_figure, frame.metrics_figure,
            frame.t_figure, frame.filmstrip))
        if frame.finished is not None:
            labels = [r.label for r in session.runs]
            previous = labels[-2] if len(labels) > 1 else labels[-1]
            tail = (session.table(), gr.update(choices=labels, value=previous),
                    gr.update(choices=labels, value=labels[-1]), str(export_zip(frame.finished, _workdir(session))))
        else:
            tail = (skip,) * 4
        yield (frame.status,) + images + tail


def _workdir(session: runner.Session):
    import tempfile
    from pathlib import Path

    if session.workdir is None:
        session.workdir = Path(tempfile.mkdtemp(prefix="gidm-session-"))
    return session.workdir


def stop(session: runner.Session) -> str:
    if session.running:
        session.stop()
        return "**Stopping** at the next step; the best guess so far is kept ..."
    return "**Stopped**: the queued run will not start." if session.stop() else gr.skip()


def apply_preset(name: str):
    p = runner.PRESETS[name]
    base = runner.Settings()
    get = lambda k: p.get(k, getattr(base, k))  # noqa: E731
    return tuple(get(k) for k in ("method", "secrets", "client_t", "defence", "clip", "sigma", "keep", "iterations",
                                  "lr", "latent_iterations", "latent_lr", "ddim_steps", "distance", "tv_weight",
                                  "lr_schedule", "optimizer", "layer_weights", "report_every"))


def method_defaults(method: str):
    """The method's own defaults for the controls it differs on (from the core's config)."""
    config = attack_config(method)
    return (config.distance, config.tv_weight, config.lr, config.lr_schedule, config.optimizer,
            config.layer_weights)


def pick_gallery(current: list[str] | None, evt: gr.SelectData):
    value = evt.value
    caption = value.get("caption") if isinstance(value, dict) else None
    names = [item.name for item in runner.gallery_items()]
    name = caption if caption in names else (names[evt.index] if evt.index is not None and evt.index < len(names)
                                             else None)
    if name is None:
        return gr.skip(), gr.skip()
    current = list(current or [])
    current = [n for n in current if n != name] if name in current else current + [name]
    return current or [name], "Gallery"


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


def export_pick(session: runner.Session, label: str | None):
    record = session.find(label) or (session.runs[-1] if session.runs else None)
    if record is None:
        gr.Warning("No finished run to export yet.")
        return gr.skip()
    return str(export_zip(record, _workdir(session)))


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
