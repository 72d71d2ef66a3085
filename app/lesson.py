"""Lesson mode: the threat story in four one-click steps for a class, each a short run on the same held-out face
with a wall-clock budget (so each step ends in under a minute on a CPU), the results side by side.

Each step is one of the app's presets (presets.py) with a time budget: the same `protocol.play_scenario` as a Run,
scored by the same evaluator. API name `lesson(step)`, step 1 to 4; the results of a session's steps accumulate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from typing import Any

import gradio as gr
import torch
from PIL import Image

from gidm_core.errors import UserError
from gidm_core.evaluation import Evaluator
from gidm_core.protocol import play_scenario

from .frames import verdict
from .images import paired, show
from .model_cache import get_model, run_device
from .session import Session
from .settings import Settings, configs
from .settings import scenario as settings_scenario
from .victims import gallery_items, pick_victims

LESSON_MODEL = "faces32"  # GIDM_LESSON_MODEL overrides it (tests use a tiny random model)
LESSON_SECONDS = 40.0  # each step's attack budget (wall clock; GIDM_LESSON_SECONDS); the client's update and the
# scoring add a few seconds


@dataclass(frozen=True)
class Step:
    title: str
    sentence: str
    preset: str


STEPS = (
    Step("1. The gradient leaks the face", "The server knows the client's noise eps and timestep t (the paper's "
         "setting) and finds the image whose gradient matches the one it received.", "Fast CPU demo"),
    Step("2. Secret eps and t do not help", "The client keeps eps and t to itself: GIDM+ reads t off the update "
         "exactly and recovers eps with the image, racing two starts (the status line says which leads); it is "
         "slower: 78 s took this face past 30 dB on our busy 2-core CPU.",
         "Private eps and t (GIDM+)"),
    Step("3. A realistic client", "The client trains 4 AdamW steps with fresh noise before sharing; the server "
         "reads all 4 timesteps and replays the steps on its guesses, 4 times the work per guess.",
         "Realistic client (AdamW, 4 steps, fresh noise)"),
    Step("4. Differential privacy helps, at a price", "The client clips its update and adds Gaussian noise "
         "(sigma 0.01 x clip 1.0, as DP-SGD does): the face drowns, and so does part of what the model learns, "
         "although one such round is only (epsilon 5.6e3, delta 1e-5)-DP by Opacus' accountant.",
         "Under DP (clip + noise)"),
)
TABLE_HEADERS = ["step", "threat", "PSNR dB", "verdict", "t read", "evaluations", "seconds"]

TEACH_LESSON = """**Lesson: four clicks.** Each step attacks the same held-out face on the bundled `faces32` model
for about 40 seconds; the results collect side by side below."""


def lesson_section() -> dict[str, Any]:
    """The lesson's buttons, sentences and results, in the current Blocks context."""
    with gr.Accordion("Lesson: the story in four steps", open=False, elem_id="lesson-box"):
        gr.Markdown(TEACH_LESSON, elem_classes="teach")
        buttons = []
        with gr.Row():
            for i, step in enumerate(STEPS, 1):
                with gr.Column(min_width=160):
                    buttons.append(gr.Button(step.title, elem_id=f"lesson-{i}", size="sm"))
                    gr.Markdown(step.sentence, elem_classes="teach")
        status = gr.Markdown("", elem_id="lesson-status")
        gallery = gr.Gallery(label="Private image | reconstruction, per step", columns=4, height=220, format="png",
                             elem_classes="pixelated", elem_id="lesson-gallery", allow_preview=False,
                             object_fit="contain")
        table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, elem_id="lesson-table")
        step = gr.Number(1, visible=False, precision=0)  # the API's `lesson(step)` reads the step from here
        api_trigger = gr.Button(visible=False)
    return dict(lesson_buttons=buttons, lesson_step=step, lesson_api=api_trigger, lesson_status=status,
                lesson_gallery=gallery, lesson_table=table)


def wire(w: dict[str, Any], session: gr.State, concurrency: dict[str, Any]) -> None:
    """Each step's button runs it; the API's `lesson(step)` runs the same handler (through a hidden trigger). The
    results live in the session, so steps clicked in any order all stay."""
    outputs = [w["lesson_status"], w["lesson_gallery"], w["lesson_table"]]
    for i, button in enumerate(w["lesson_buttons"], 1):
        button.click(lambda s, i=i: lesson(i, s), [session], outputs, api_visibility="private", **concurrency)
    w["lesson_api"].click(lesson, [w["lesson_step"], session], outputs, api_name="lesson", **concurrency)


def lesson(step: Any, session: Session) -> tuple[str, list, list]:
    """Run lesson step `step` (1-4): (status line, the gallery of this session's steps so far, their table)."""
    try:
        index = int(float(step))
        if not 1 <= index <= len(STEPS):
            raise ValueError
    except (TypeError, ValueError):
        return f"**Refused:** the lesson has steps 1 to {len(STEPS)}, not {step!r}.", *_views(session)
    try:
        session.lesson[index] = result = run_step(index)
    except UserError as err:
        return f"**Cannot start:** {err}", *_views(session)
    return (f"**{STEPS[index - 1].title}**: {result['verdict']}, PSNR {result['psnr']:.1f} dB after "
            f"{result['seconds']:.0f} s."), *_views(session)


def run_step(index: int) -> dict:
    """One step on the first held-out face: the preset's attack with a wall-clock budget, scored by the evaluator."""
    step = STEPS[index - 1]
    began = time.perf_counter()
    seconds = float(os.environ.get("GIDM_LESSON_SECONDS", LESSON_SECONDS))
    name = os.environ.get("GIDM_LESSON_MODEL", LESSON_MODEL)
    settings = Settings.from_preset(step.preset, model=name, gallery=[gallery_items()[0].name])
    config, threat = configs(settings)
    config = replace(config, seconds=seconds, plateau=0 if index > 1 else config.plateau)
    device = run_device()
    model = get_model(name, device)
    victim, x0, _ = pick_victims(settings, model.image_size, model.channels)[0]
    scenario = settings_scenario(settings, (victim,), attack=config)
    played = play_scenario(scenario, lambda spec: get_model(spec, device), images=x0)
    result = played.run.run_to_end()
    if result is None:
        raise UserError("the attack produced no finite guess")
    metrics = Evaluator(played.batch).score_result(result)
    recon = paired(result.reconstruction, x0)
    return dict(step=index, threat=step.title.split(". ", 1)[1], psnr=metrics["psnr"], verdict=verdict(metrics["psnr"]),
                t=list(result.t_estimate) if result.t_estimate else None, t_true=played.batch.t.tolist(),
                iterations=result.iterations, seconds=time.perf_counter() - began, victim=victim,
                image=show(torch.cat([x0, recon]).clamp(-1, 1)))


def _views(session: Session) -> tuple[list[tuple[Image.Image, str]], list[list]]:
    results = [session.lesson[step] for step in sorted(session.lesson)]
    gallery = [(r["image"], f"{r['step']}: {r['psnr']:.1f} dB") for r in results]
    rows = [[r["step"], r["threat"], round(r["psnr"], 1), r["verdict"],
             "" if r["t"] is None else f"{r['t']} (true {r['t_true']})", r["iterations"], round(r["seconds"], 1)]
            for r in results]
    return gallery, rows
