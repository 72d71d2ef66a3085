""""What the server sees": the shared update drawn as a picture, so the step of reading t off it is visible.

Three views of the one update the attack works from: the norm of each block's share of it, the singular values of
the time-embedding layer's part (its rank counts the distinct timesteps), and how far each candidate t lies from
that layer's row space, whose minima are the t the server reads (gidm_core/attacks/timestep.py does the reading).
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from gidm_core.attacks.timestep import LAYER, recover_timesteps
from gidm_core.client import SharedUpdate
from gidm_core.models import DiffusionModel

TIME_COLOUR, OTHER_COLOUR, TRUE_COLOUR = "#c0392b", "#1f3b73", "#7f8c8d"
SHOWN_SINGULAR = 12

TEACH_SERVER = r"""**What the server sees** is one number per model weight (millions of them), nothing else. Top:
how much of the update each block of the UNet holds. The time-embedding layer (red) multiplies the sinusoidal
embedding of the client's timestep, so its part has one direction per distinct $t$: its **singular values** drop
sharply after that many (bottom left). Bottom right: every candidate $t$'s embedding measured against that
direction; the dip is the $t$ the server reads, with no optimisation (grey: the client's true $t$, for comparison
only)."""

LABELLED_T = 4  # the read timesteps named beside their marks


def block_norms(model: DiffusionModel, update: SharedUpdate) -> list[tuple[str, float]]:
    """(block, L2 norm of its part of the update), in the UNet's order: `down_blocks.0.resnets`, `mid_block`, ..."""
    norms: dict[str, float] = {}
    for (name, _), tensor in zip(model.unet.named_parameters(), update.gradients):
        parts = name.split(".")
        block = ".".join(parts[:3]) if parts[0].endswith("blocks") and len(parts) > 3 else parts[0]
        norms[block] = norms.get(block, 0.0) + float(tensor.detach().double().pow(2).sum())
    return [(block, math.sqrt(total)) for block, total in norms.items()]


def server_figure(model: DiffusionModel, update: SharedUpdate, t_true: list[int] | None = None) -> go.Figure:
    """The update as a picture: block norms, the time-embedding singular values, and the t they reveal."""
    # Two rows, so that a phone's narrow plot still has room: the blocks above, the time embedding below.
    fig = make_subplots(rows=2, cols=2, specs=[[{"colspan": 2}, None], [{}, {}]], column_widths=[0.35, 0.65],
                        vertical_spacing=0.32, horizontal_spacing=0.14,
                        subplot_titles=("update norm per block", "time-emb. singular values", "distance of each t"))
    norms = block_norms(model, update)
    fig.add_trace(go.Bar(x=[b for b, _ in norms], y=[n for _, n in norms], name="block norm", showlegend=False,
                         marker_color=[TIME_COLOUR if b.startswith("time_embedding") else OTHER_COLOUR
                                       for b, _ in norms]), row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=8), row=1, col=1)
    names = [name for name, _ in model.unet.named_parameters()]
    estimate = recover_timesteps(model, update)
    if LAYER in names and estimate is not None:
        grad = update.gradients[names.index(LAYER)].detach().double().cpu()
        singular = torch.linalg.svdvals(grad)[:SHOWN_SINGULAR]
        singular = (singular / singular[0]).clamp_min(1e-12).tolist()
        fig.add_trace(go.Bar(x=list(range(1, len(singular) + 1)), y=singular, showlegend=False,
                             name="singular value / largest",
                             marker_color=[TIME_COLOUR if i < estimate.rank else "#bbb"
                                           for i in range(len(singular))]), row=2, col=1)
        fig.update_yaxes(type="log", exponentformat="power", row=2, col=1)
        fig.update_xaxes(title_text=f"rank {estimate.rank}", dtick=2, row=2, col=1)
        residuals = estimate.residuals.clamp_min(1e-9).tolist()
        fig.add_trace(go.Scatter(x=list(range(len(residuals))), y=residuals, mode="lines", showlegend=False,
                                 name="residual", line=dict(color=OTHER_COLOUR, width=1.2)), row=2, col=2)
        for t in sorted(set(t_true or [])):
            fig.add_vline(x=t, line=dict(color=TRUE_COLOUR, width=3, dash="dot"), row=2, col=2)
        read = sorted(set(estimate.t.tolist()))
        labelled = len(read) <= LABELLED_T  # more labels overlap (a batch of 16): the title lists them all
        fig.add_trace(go.Scatter(x=read, y=[residuals[t] for t in read], mode="markers+text" if labelled else
                                 "markers", showlegend=False, text=[f"t = {t}" for t in read] if labelled else None,
                                 textposition="top left",
                                 marker=dict(color=TIME_COLOUR, size=9), name="t the server reads"), row=2, col=2)
        fig.update_yaxes(type="log", exponentformat="power", row=2, col=2)
        fig.update_xaxes(title_text="candidate t", row=2, col=2)
        title = f"t = {read} read off the update" + ("" if estimate.confident else
                                                                          " (not confident: noise blurs it)")
    else:
        title = "What the server sees (this model has no time-embedding layer to read t from)"
    fig.update_annotations(font_size=11)
    fig.update_layout(title=dict(text=title, font=dict(size=13)), height=520, template="plotly_white",
                      margin=dict(l=45, r=15, t=70, b=50))
    return fig
