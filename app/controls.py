"""The settings column: the preset box, then one tab per part of the threat story (victim, model, threat, attack).

Each setting's control is keyed by its `Settings` field name and labelled from `settings.CONTROLS`, so validation
can name the control and the tab that hold a bad value.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from gidm_core.config import CLIENT_OPTIMIZERS, NOISE_POLICIES, OPTIMIZERS
from gidm_core.methods import METHOD_LABELS

from .model_cache import model_choices
from .presets import DEFAULT_PRESET, PRESETS
from .settings import (
    CLIENT_UPDATES,
    CONTROL_UPDATES,
    CONTROLS,
    DEFENCES,
    MAX_BATCH,
    MAX_BATCH_LARGE,
    METHODS,
    RESOLUTIONS,
    SECRETS,
    SMALL_IMAGE_PX,
    SOURCES,
    Settings,
)
from .texts import TEACH_ATTACK, TEACH_MODEL, TEACH_THREAT, TEACH_VICTIM, teach
from .victims import GalleryItem, gallery_previews


def _number(s: Settings, name: str, **kwargs: Any) -> gr.Textbox:
    """A number typed as text: the app's own validation reads it (see settings.number)."""
    return gr.Textbox(str(getattr(s, name)), label=CONTROLS[name][1], max_lines=1, elem_id=f"ctl-{name}",
                      **kwargs)


def settings_column(s: Settings, items: list[GalleryItem], shown: dict[str, bool]) -> tuple[dict, dict]:
    """The controls, laid out in the current Blocks context with `s`'s values (hidden where `shown` says they do not
    apply): (every setting's control by field name, the other parts the wiring needs by name)."""
    c: dict[str, Any] = {}
    label = {name: tab_label[1] for name, tab_label in CONTROLS.items()}
    with gr.Column(scale=2, min_width=360, elem_id="settings-col"):
        preset = gr.Dropdown(list(PRESETS), value=DEFAULT_PRESET, label="Preset",
                             info="fills in the settings below", elem_id="preset")
        hint_md = gr.Markdown("", elem_id="hints")
        with gr.Tabs(overflow_behavior="wrap", elem_id="settings-tabs") as tabs:
            with gr.Tab("Victim", id="Victim"):
                teach(TEACH_VICTIM)
                c["source"] = gr.Radio(list(SOURCES), value=s.source, label=label["source"])
                gallery_view = gr.Gallery(gallery_previews(items), label="Held-out images",
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
                    c["batch_size"] = _number(s, "batch_size", info=f"1 to {MAX_BATCH} ({MAX_BATCH_LARGE} above "
                                                                     f"{SMALL_IMAGE_PX} px), padded from the gallery")
            with gr.Tab("Model", id="Model"):
                teach(TEACH_MODEL)
                c["model"] = gr.Dropdown(model_choices(), value=s.model, allow_custom_value=True,
                                         label=label["model"], info="bundled[@round], folder, hub id")
            with gr.Tab("Threat", id="Threat"):
                teach(TEACH_THREAT)
                c["secrets"] = gr.Radio([(v, k) for k, v in SECRETS.items()], value=s.secrets,
                                        label=label["secrets"])
                with gr.Row():
                    c["client_t"] = _number(s, "client_t", info="-1: drawn from the client's seed. Private "
                                            "eps: GIDM+ works for t ~100-400; small t makes the matching "
                                            "landscape rugged, large t amplifies errors")
                    c["client_seed"] = _number(s, "client_seed", info="draws the client's private eps (and t if -1)")
                c["prior"] = gr.Dropdown(["attacked"] + model_choices(), value=s.prior,
                                         allow_custom_value=True, label=label["prior"],
                                         info="'attacked' = the attacked model itself",
                                         visible=shown["prior"])
                c["defence"] = gr.Radio(list(DEFENCES), value=s.defence, label=label["defence"])
                c["client_update"] = gr.Radio([(v, k) for k, v in CLIENT_UPDATES.items()], value=s.client_update,
                                              label=label["client_update"],
                                              info="its training settings are public: the server sets them")
                with gr.Row():
                    c["local_steps"] = _number(s, "local_steps", visible=shown["local_steps"])
                    c["client_optimizer"] = gr.Dropdown(list(CLIENT_OPTIMIZERS), value=s.client_optimizer,
                                                        label=label["client_optimizer"],
                                                        visible=shown["client_optimizer"])
                    c["client_lr"] = _number(s, "client_lr", visible=shown["client_lr"])
                    c["weight_decay"] = _number(s, "weight_decay", visible=shown["weight_decay"])
                    c["noise_per_step"] = gr.Radio(list(NOISE_POLICIES), value=s.noise_per_step,
                                                   label=label["noise_per_step"],
                                                   info="fresh: new eps and t at every step (diffusers' loop)",
                                                   visible=shown["noise_per_step"])
                with gr.Row():
                    c["clip"] = _number(s, "clip", visible=shown["clip"])
                    c["sigma"] = _number(s, "sigma", info="noise std = sigma x clip norm",
                                         visible=shown["sigma"])
                    c["keep"] = _number(s, "keep", visible=shown["keep"])
                c["control"] = gr.Radio(list(CONTROL_UPDATES), value=s.control, label=label["control"],
                                        info="hand the attack another face's update, or noise, instead: a face that "
                                             "still appears came from the prior, not from the victim's update")
            with gr.Tab("Attack", id="Attack"):
                teach(TEACH_ATTACK)
                c["method"] = gr.Dropdown([(METHOD_LABELS[m], m) for m in METHODS], value=s.method,
                                          label=label["method"])
                with gr.Row():
                    c["latent_iterations"] = _number(s, "latent_iterations",
                                                     visible=shown["latent_iterations"])
                    c["ddim_steps"] = _number(s, "ddim_steps", visible=shown["ddim_steps"])
                    c["latent_lr"] = _number(s, "latent_lr", visible=shown["latent_lr"])
                with gr.Row():
                    c["pixel_iterations"] = _number(s, "pixel_iterations",
                                                    info="GIDM+: its joint and residual stages together",
                                              visible=shown["pixel_iterations"])
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
                with gr.Row():
                    c["attack_seed"] = _number(s, "attack_seed", info="the attacker's own first guess; "
                                               "independent of the client's secret seed")
                    c["starts"] = _number(s, "starts", info="run this many starts, halving them by matching loss "
                                          "as they go: the status line says which leads")
                    c["plateau"] = _number(s, "plateau", info="end once the matching loss has stopped improving "
                                           "for this many evaluations (0: run the whole budget)")

    parts = dict(preset=preset, hints=hint_md, tabs=tabs, gallery_view=gallery_view, upload_row=upload_row,
                 upload_preview=upload_preview)
    return c, parts
