"""Steering a run while it streams: the controls under Run / Stop, the `steer` API action, the marks on the loss
curve, and the schedule a steered run's export replays.

The app only forwards the user's request to the core's steering channel (gidm_core/attacks/steering.py), which the
attack reads at its next evaluation; what was applied, and where, comes back in the run's events and result.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from gidm_core.attacks.steering import schedule_from_log
from gidm_core.config import ConfigError

from .session import RunRecord, Session
from .settings import number

# What the action menu shows -> the core's action name.
ACTIONS = {"learning rate": "lr", "next phase now": "next_phase", "extend phase by": "extend", "pause": "pause",
           "resume": "resume"}
NEEDS_VALUE = {"lr": "a learning rate, e.g. 0.01", "extend": "a number of evaluations, e.g. 50"}

TEACH_STEER = """**Steer the run** while it streams: change the learning rate of an Adam or SGD phase, end the
current phase now, give it more evaluations, or pause and resume. Each action lands at the attack's next evaluation,
shows as a dotted line on the loss curve, and goes into the export, whose `command.txt` replays it
(`--steer steering.json`)."""


def steer_controls() -> dict[str, Any]:
    """The steering row, laid out in the current Blocks context (the live view, under Run / Stop)."""
    with gr.Accordion("Steer the running attack", open=False, elem_id="steer-box"):
        gr.Markdown(TEACH_STEER, elem_classes="teach")
        with gr.Row(equal_height=False):
            action = gr.Dropdown(list(ACTIONS), value="pause", label="Action", elem_id="steer-action", min_width=150)
            value = gr.Textbox("", label="Value", placeholder="lr or evaluations", max_lines=1,
                               elem_id="steer-value", min_width=110)
            button = gr.Button("Steer", elem_id="steer-btn", min_width=90, scale=0, size="md")
        result = gr.Markdown("", elem_id="steer-status")
    return dict(steer_action=action, steer_value=value, steer_btn=button, steer_status=result)


def wire(w: dict[str, Any], session: gr.State) -> None:
    """Steer bypasses the queue, as Stop does: the running attack holds the slot it would wait for."""
    w["steer_btn"].click(steer, [session, w["steer_action"], w["steer_value"]], [w["steer_status"]],
                         api_name="steer", queue=False, show_progress="hidden")


def steer(session: Session, action: str, value: Any = "") -> str:
    """Ask this session's running attack to change course at its next evaluation. `action` is a menu label or the
    core's name (lr, next_phase, extend, pause, resume); `value` the learning rate or the evaluations to add.
    Returns one line: what will happen, or why not."""
    name = ACTIONS.get(action, action)
    if name not in ACTIONS.values():
        return f"**Refused:** unknown action {action!r}: choose one of {', '.join(ACTIONS)}"
    steering = session.steering
    if steering is None or not session.running:
        return "**Refused:** no run is going in this session: press **Run** first."
    parsed = None
    if name in NEEDS_VALUE:
        text = str(value if value is not None else "").strip()
        if not text:
            return f"**Refused:** {action} needs {NEEDS_VALUE[name]}."
        try:
            parsed = number(text)
        except ValueError as err:
            return f"**Refused:** {err}"
    try:
        request = steering.request(name, parsed)
    except ConfigError as err:
        return f"**Refused:** {err}"
    return f"**Steering:** {request.describe()} at the next evaluation."


def schedule(record: RunRecord) -> list[dict]:
    """The steering schedule that replays `record` (empty for an unsteered run): what was applied, where, and for a
    stopped run the stop, so the rerun ends where this one did."""
    if not record.steering:
        return []
    entries = schedule_from_log(record.steering)
    return entries + ([{"at": record.iterations, "action": "stop"}] if record.status == "stopped" else [])
