"""The view side of the page: the live view (Run/Stop, status, the three images, plots, filmstrip, export), the
comparison of this session's runs, and the sweep grid. Each function lays its part out in the current Blocks
context and returns its components by name for the wiring."""

from __future__ import annotations

from typing import Any

import gradio as gr

from . import steer, sweep
from .server_view import TEACH_SERVER
from .session import TABLE_HEADERS
from .settings import Settings
from .texts import TEACH_SWEEP, TEACH_VIEW, teach


def view_column(s: Settings) -> dict[str, Any]:
    """The live view, beside the settings on a desktop and above them on a phone."""
    with gr.Column(scale=3, min_width=360, elem_id="view-col"):
        with gr.Row():
            run_btn = gr.Button("Run", variant="primary", elem_id="run-btn")
            stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
        status = gr.Markdown("Ready. Press **Run**.", elem_id="status")
        steering = steer.steer_controls()
        pairs = gr.HTML("", elem_id="batch-pairs", js_on_load=None)  # a batch (batch_view.py); hides the row below
        with gr.Row(elem_id="images-row"):
            original = gr.Image(label="Private image", format="png", elem_id="original",
                                elem_classes="pixelated", interactive=False, height=250, buttons=[],
                                min_width=110)
            reconstruction = gr.Image(label="Reconstruction", format="png", elem_id="reconstruction",
                                      elem_classes="pixelated", interactive=False, height=250, buttons=[],
                                      min_width=110)
            diff = gr.Image(label="Difference (x4)", format="png", elem_classes="pixelated",
                            interactive=False, height=250, buttons=[], min_width=110)
        teach(TEACH_VIEW)
        loss_plot = gr.Plot(None, label="Loss", elem_id="loss-plot")
        with gr.Row():
            metrics_plot = gr.Plot(None, label="Metrics")
            t_plot = gr.Plot(None, label="t and eps", visible=s.secrets == "private")
        filmstrip = gr.Gallery(label="Filmstrip (snapshots of the run)", columns=5, height=280,
                               format="png", elem_classes="pixelated", allow_preview=True,
                               elem_id="filmstrip")
        export_file = gr.File(label="Export: PNGs, metrics.json, loss.csv, command.txt", interactive=False)
        # Open from the start: a plot first drawn inside a closed accordion stays blank when it opens.
        with gr.Accordion("What the server sees", open=True, elem_id="server-box"):
            teach(TEACH_SERVER)
            server_plot = gr.Plot(None, label="The shared update", elem_id="server-plot")
    return dict(**steering, server_plot=server_plot, pairs=pairs, run_btn=run_btn, stop_btn=stop_btn, status=status,
                original=original, reconstruction=reconstruction, diff=diff, loss_plot=loss_plot,
                metrics_plot=metrics_plot, t_plot=t_plot, filmstrip=filmstrip, export_file=export_file)


def compare_section() -> dict[str, Any]:
    """Two of this session's runs side by side, and the table of all of them."""
    with gr.Accordion("Compare this session's runs", open=False):
        table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, wrap=True)
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
    return dict(table=table, pick_a=pick_a, pick_b=pick_b, view_a=view_a, view_b=view_b, compare_md=compare_md,
                export_a=export_a)


def sweep_section() -> dict[str, Any]:
    """One or two hyperparameters across a grid of short runs, as a heatmap and a clickable table."""
    with gr.Accordion("Sweep: a grid of short runs", open=False):
        teach(TEACH_SWEEP)
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
    return dict(x_axis=x_axis, x_values=x_values, y_axis=y_axis, y_values=y_values, cell_iterations=cell_iterations,
                sweep_btn=sweep_btn, sweep_status=sweep_status, sweep_plot=sweep_plot, sweep_table=sweep_table,
                grid_state=grid_state)
