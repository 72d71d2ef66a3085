"""The Gradio Blocks: lays out the settings column (controls.py), the live view, comparison and sweep (panels.py),
the tune view (tune_view.py), and wires each event to its handler (handlers.py, sweep_view.py, tune_view.py). No
work is done here."""

from __future__ import annotations

from typing import Any

import gradio as gr

from . import handlers, lesson, steer, sweep_view, tune_view
from .controls import settings_column
from .model_cache import default_model
from .panels import compare_section, sweep_section, view_column
from .presets import DEFAULT_PRESET
from .session import Session, concurrency, queue_size
from .settings import CELL_FIELDS, METHOD_FIELDS, PRESET_FIELDS, SETTING_FIELDS, Settings, applies
from .texts import CSS, INTRO, SHOW_REFUSED_TAB
from .victims import gallery_items
from .zerogpu import gpu, run_duration, sweep_duration

# The controls whose value changes which other controls apply (and the hints); the number boxes among them update
# when the user leaves them rather than on every keystroke.
_REFRESH_ON_CHANGE = ("method", "optimizer", "defence", "source", "secrets", "distance", "layer_weights",
                      "client_update", "client_optimizer", "control")
_REFRESH_ON_BLUR = ("client_t", "clip", "sigma")


def build_app() -> gr.Blocks:
    """The whole page, with the default preset on the first gallery image and this install's default model."""
    items = gallery_items()
    s = Settings.from_preset(DEFAULT_PRESET, model=default_model(), gallery=[items[0].name] if items else [])
    with gr.Blocks(title="GIDM Explorer", fill_width=True, delete_cache=(1800, 3600)) as demo:
        session = gr.State(Session, delete_callback=Session.close)
        gr.Markdown(INTRO)
        with gr.Row():
            c, w = settings_column(s, items, applies(s.__dict__))
            w.update(view_column(s))
        w.update(compare_section())
        w.update(sweep_section())
        w.update(lesson.lesson_section())
        w.update(tune_view.tune_section())
        _wire(demo, session, c, w)
    return demo


def _wire(demo: gr.Blocks, session: gr.State, c: dict[str, Any], w: dict[str, Any]) -> None:
    """Every event: `c` holds the settings' controls by field name, `w` every other component by name."""
    attacks = dict(concurrency_limit=concurrency(), concurrency_id="attack")
    private: dict[str, Any] = dict(api_visibility="private")
    inputs = [c[name] for name in SETTING_FIELDS]
    run_outputs = [w[name] for name in ("status", "original", "reconstruction", "diff", "loss_plot", "metrics_plot",
                                        "t_plot", "filmstrip", "table", "pick_a", "pick_b", "export_file", "tabs",
                                        "server_plot", "pairs")]
    compare_io = ([session, w["pick_a"], w["pick_b"]], [w["view_a"], w["view_b"], w["compare_md"]])
    # The validator runs at submission, before the queue holds the run (API calls too): Stop can then cancel it.
    w["run_btn"].click(gpu(handlers.run, run_duration), [session, *inputs], run_outputs, api_name="run",
                       show_progress="minimal", validator=handlers.submit, **attacks).then(
        handlers.compare, *compare_io, **private).then(None, js=SHOW_REFUSED_TAB)
    # Stop bypasses the queue: it must work when every waiting place is taken (it only sets a flag).
    w["stop_btn"].click(handlers.stop, [session], [w["status"]], api_name="stop", queue=False, show_progress="hidden")
    steer.wire(w, session)
    lesson.wire(w, session, attacks)

    # Which controls apply, and what this combination will do, follow every control they depend on. A preset
    # changes several at once and each change fires a refresh, some with half the preset applied: all refreshes
    # share one first-in-first-out slot, and one more runs after the preset, so the last to end saw all of it.
    dependent = list(applies({}))
    holders = {**c, "uploads": w["upload_row"]}  # the upload's preview shows and hides with it
    refresh_outputs = [holders[name] for name in dependent] + [w["t_plot"], w["hints"]]
    refresh: dict[str, Any] = dict(show_progress="hidden", concurrency_id="refresh", concurrency_limit=1, **private)

    def refreshed(*values: Any) -> tuple:
        return handlers.refresh(dependent, *values)

    w["preset"].input(handlers.apply_preset, [w["preset"]], [c[name] for name in PRESET_FIELDS], **private).then(
        refreshed, inputs, refresh_outputs, **refresh)
    c["method"].input(handlers.method_defaults, [c["method"]], [c[name] for name in METHOD_FIELDS], **private)
    for name in _REFRESH_ON_CHANGE + _REFRESH_ON_BLUR:
        event = c[name].change if name in _REFRESH_ON_CHANGE else c[name].blur
        event(refreshed, inputs, refresh_outputs, **refresh)
    w["gallery_view"].select(handlers.pick_gallery, [c["gallery"], c["batch_size"]], [c["gallery"], c["source"]],
                             **private)
    c["uploads"].change(handlers.upload_previews, [c["uploads"]], [w["upload_preview"]], **private)
    c["webcam"].input(lambda: "Webcam", None, [c["source"]], **private)
    w["pick_a"].input(handlers.compare, *compare_io, **private)
    w["pick_b"].input(handlers.compare, *compare_io, **private)
    w["export_a"].click(handlers.export_pick, [session, w["pick_a"]], [w["export_file"]], **private)

    sweep_inputs = [w[name] for name in ("x_axis", "x_values", "y_axis", "y_values", "cell_iterations")]
    w["sweep_btn"].click(gpu(sweep_view.run_sweep, sweep_duration), [session, *sweep_inputs, *inputs],
                         [w["sweep_plot"], w["sweep_table"], w["sweep_status"], w["grid_state"]], api_name="sweep",
                         api_visibility="undocumented", validator=handlers.submit, **attacks)
    w["sweep_table"].select(sweep_view.load_cell, [w["grid_state"]], [c[name] for name in CELL_FIELDS] + [w["status"]],
                            **private).then(gpu(handlers.run, run_duration), [session, *inputs], run_outputs, **private,
                                            validator=handlers.submit, concurrency_id="attack")
    tune_view.wire(session, c, w, run_outputs, attacks)
    demo.load(handlers.refresh_choices, None, [c["model"], c["prior"]], **private)


def launch_kwargs() -> dict[str, Any]:
    """Arguments for `demo.launch` (Gradio 6 takes theme/css here, not in Blocks())."""
    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"],  # no web fonts: works offline
                           font_mono=["ui-monospace", "Consolas", "monospace"])
    return dict(css=CSS, theme=theme, max_file_size="25mb", show_error=True)


# Places in Gradio's own queue beyond the waiting runs: for Stop and the light events (presets, comparisons), which
# then never meet a full queue. The runs' own limit is `Session.submit`'s (Gradio's size check races with it).
QUEUE_HEADROOM = 64


def queue(demo: gr.Blocks) -> gr.Blocks:
    """The app's queue: GIDM_QUEUE_SIZE waiting runs and sweeps at most (admitted by their validator), two events
    at once unless an event says otherwise."""
    return demo.queue(max_size=queue_size() + QUEUE_HEADROOM, default_concurrency_limit=2)
