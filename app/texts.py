"""The app's words and looks: the teaching texts beside each part of the UI (Markdown with LaTeX), and the CSS and
JavaScript that the layout needs."""

from __future__ import annotations

from typing import Any

import gradio as gr

# Phones (Gradio stacks the two columns below 768 px): the live view comes first, the settings after it.
CSS = """
.pixelated img, .pixelated canvas { image-rendering: pixelated; image-rendering: crisp-edges; }
.teach { font-size: 0.88em; opacity: 0.9; }
#status { min-height: 2.6em; }
#hints { color: #9a5b00; }
#filmstrip .caption-label { max-width: 96%; font-size: 11px; padding: 1px 4px; }
@media (max-width: 768px) { #view-col { order: -1; } }
#batch-pairs .pairs { display: grid; gap: 10px 8px;
  grid-template-columns: repeat(auto-fill, minmax(min(100%, var(--pair)), 1fr)); }
#batch-pairs .pair { margin: 0; }
#batch-pairs .pair-images { display: flex; gap: 2px; }
#batch-pairs .pair img { width: 50%; height: auto; image-rendering: pixelated; display: block; }
#batch-pairs figcaption { font-size: 12px; text-align: center; line-height: 1.3; }
#batch-pairs .pairs-note { font-size: 0.85em; opacity: 0.85; margin-bottom: 6px; }
#view-col:has(#batch-pairs .pair) #images-row { display: none; }
@media (max-width: 768px) { #batch-pairs .pairs { --pair: 120px !important; } }
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
still carry the image. The server knows the defence and applies it to its own guesses. **Real clients** train
locally before they share (FedAvg): several SGD, Adam or AdamW steps, new $\epsilon$ and $t$ at every step. The
server set those steps, so it replays them on its guesses; a one-step Adam delta still encodes the gradient."""

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
amplified 4x. A batch shows each private image beside its reconstruction, with its timestep and PSNR; its *Batch*
line says whether the update split into per-sample parts (and how well: the residual) or why not."""


def teach(text: str, **kwargs: Any) -> gr.Markdown:
    """A teaching text, smaller than the controls it explains, with its maths rendered."""
    return gr.Markdown(text, latex_delimiters=LATEX, elem_classes="teach", **kwargs)
