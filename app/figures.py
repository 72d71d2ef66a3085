"""Plotly figures for the live view: the loss curve with its phases, the image metrics, and GIDM+'s t and eps."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

PHASE_COLOURS = {"latent": "rgba(99, 110, 250, 0.10)", "pixel": "rgba(0, 204, 150, 0.10)",
                 "residual": "rgba(255, 161, 90, 0.12)"}
PHASE_NAMES = {"latent": "phase 1: DDIM latent", "pixel": "pixel matching", "residual": "GIDM+ residual"}
MAX_POINTS = 1500
HEIGHT = 280


def _layout(fig: go.Figure, title: str) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=HEIGHT, template="plotly_white",
                      margin=dict(l=50, r=20, t=64, b=30), legend=dict(orientation="h", y=-0.32, font=dict(size=10)))
    return fig


def _thin(rows: list[dict]) -> list[dict]:
    if len(rows) <= MAX_POINTS:
        return rows
    step = len(rows) / MAX_POINTS
    return [rows[int(i * step)] for i in range(MAX_POINTS)] + [rows[-1]]


def loss_figure(history: list[dict], phase_starts: dict[str, int], total_iterations: int,
                steered: list[dict] | None = None) -> go.Figure:
    """Matching loss per iteration on a log scale; each phase shaded, the transition between phases marked, and
    each steering action (the core's log: at, action, value) a dotted line labelled at the foot of the plot."""
    fig = go.Figure()
    rows = _thin([r for r in history if isinstance(r.get("matching"), (int, float)) and r["matching"] > 0])
    fig.add_trace(go.Scatter(x=[r["iteration"] for r in rows], y=[r["matching"] for r in rows], mode="lines",
                             name="gradient matching loss", line=dict(color="#1f3b73", width=1.6)))
    if any("tv" in r for r in rows):
        fig.add_trace(go.Scatter(x=[r["iteration"] for r in rows if "tv" in r],
                                 y=[max(r["tv"], 1e-12) for r in rows if "tv" in r], mode="lines",
                                 name="total variation", line=dict(color="#999", width=1, dash="dot")))
    starts = sorted(phase_starts.items(), key=lambda kv: kv[1])
    end = max(total_iterations, rows[-1]["iteration"] + 1 if rows else 1)
    for i, (phase, start) in enumerate(starts):
        stop = starts[i + 1][1] if i + 1 < len(starts) else end
        fig.add_vrect(x0=start, x1=stop, fillcolor=PHASE_COLOURS.get(phase, "rgba(128,128,128,0.08)"),
                      line_width=0, layer="below")
        # Phase names sit above the plot area, clear of the tick labels, on alternate lines so short phases do
        # not overlap.
        fig.add_annotation(x=start, y=1.0, xref="x", yref="paper", yanchor="bottom", xanchor="left",
                           yshift=13 * (i % 2), text=PHASE_NAMES.get(phase, phase), showarrow=False,
                           font=dict(size=10))
        if i > 0:
            fig.add_vline(x=start, line=dict(color="#c0392b", width=1.5, dash="dash"))
    for i, mark in enumerate(steered or []):
        fig.add_vline(x=mark["at"], line=dict(color="#8e44ad", width=1.2, dash="dot"))
        fig.add_annotation(x=mark["at"], y=0.0, xref="x", yref="paper", yanchor="bottom", xanchor="left",
                           yshift=12 * (i % 3), text=steer_label(mark), showarrow=False,
                           font=dict(size=9, color="#8e44ad"), bgcolor="rgba(255,255,255,0.7)")
    fig.update_yaxes(type="log", title_text="loss", exponentformat="power")
    fig.update_xaxes(title_text="iteration", range=[0, end])
    return _layout(fig, "Gradient matching loss (log scale)")


def steer_label(mark: dict) -> str:
    """A steering mark in a few characters: 'lr 0.01', 'next phase', '+50', 'pause'."""
    action, value = mark["action"], mark.get("value")
    if action == "lr":
        return f"lr {value:g}"
    if action == "extend":
        return f"+{value:g} evals"
    return action.replace("_", " ")


def metrics_figure(trace: list[dict]) -> go.Figure:
    """PSNR (left axis) and SSIM / LPIPS (right axis, 0..1) of every scored event."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    rows = [r for r in trace if "psnr" in r]
    its = [r["iteration"] for r in rows]
    fig.add_trace(go.Scatter(x=its, y=[r["psnr"] for r in rows], name="PSNR (dB)", mode="lines+markers",
                             marker=dict(size=4), line=dict(color="#1f77b4")), secondary_y=False)
    fig.add_trace(go.Scatter(x=its, y=[r.get("ssim") for r in rows], name="SSIM", mode="lines",
                             line=dict(color="#2ca02c")), secondary_y=True)
    lp = [r for r in rows if "lpips" in r]
    fig.add_trace(go.Scatter(x=[r["iteration"] for r in lp], y=[r["lpips"] for r in lp], name="LPIPS (lower is better)",
                             mode="lines+markers", marker=dict(size=5, symbol="diamond"),
                             line=dict(color="#d62728", dash="dot")), secondary_y=True)
    fig.add_hline(y=30, line=dict(color="#1f77b4", width=1, dash="dot"), secondary_y=False)
    fig.update_yaxes(title_text="PSNR dB", secondary_y=False)
    fig.update_yaxes(title_text="SSIM / LPIPS", range=[-0.05, 1.05], secondary_y=True)
    fig.update_xaxes(title_text="iteration")
    return _layout(fig, "Reconstruction quality (the evaluator's view)")


def t_figure(trace: list[dict], t_true: list[int], t_known: bool) -> go.Figure:
    """GIDM+: the recovered timesteps against the true ones, and the eps error over iterations."""
    has_eps = any("eps_error" in r for r in trace)
    eps_title = "eps error (relative L2)" if has_eps or not t_known else "eps error: eps was revealed"
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6], horizontal_spacing=0.15,
                        subplot_titles=("timestep per image", eps_title))
    estimates = next((r["t_estimate"] for r in reversed(trace) if r.get("t_estimate")), None)
    index = list(range(len(t_true)))
    fig.add_trace(go.Scatter(x=index, y=t_true, mode="markers", name="true t",
                             marker=dict(size=12, symbol="circle-open", color="#333")), row=1, col=1)
    if estimates is not None:
        fig.add_trace(go.Scatter(x=index, y=estimates, mode="markers",
                                 name="t the server uses" + (" (revealed)" if t_known else " (recovered)"),
                                 marker=dict(size=7, color="#d62728")), row=1, col=1)
    rows = [r for r in trace if "eps_error" in r]
    if rows:
        fig.add_trace(go.Scatter(x=[r["iteration"] for r in rows], y=[r["eps_error"] for r in rows],
                                 mode="lines", name="eps error", line=dict(color="#9467bd")), row=1, col=2)
    fig.update_annotations(font_size=11)
    fig.update_xaxes(title_text="image in batch", dtick=1, row=1, col=1)
    fig.update_yaxes(title_text="t", row=1, col=1)
    fig.update_xaxes(title_text="iteration", row=1, col=2)
    return _layout(fig, "GIDM+: private timestep and noise" if not t_known else "Timestep and noise (known here)")
