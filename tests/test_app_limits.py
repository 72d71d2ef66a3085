"""The app's API under bad input: each kind is refused with a message naming the control, while the app keeps
serving; a size bomb and a path probe; Stop while a run waits in the queue; session folders deleted at the end.

The app here runs one attack at a time (GIDM_CONCURRENCY=1), so a second session's run really waits in the queue.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from app.session import Session  # noqa: E402
from app.settings import CONTROLS, SETTING_FIELDS, Settings  # noqa: E402
from app.victims import gallery_items  # noqa: E402
from tests.conftest import serve_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(model="random:tiny-32", uploads=None, webcam=None, pixel_iterations=20, latent_iterations=2, ddim_steps=1,
            report_every=3, batch_size=1, source="Gallery", method="gidm", plateau=0)
STATUS = 0

# (kind, overrides, the control the message must name). Each is a different way to get an input wrong.
CASES = [
    ("lr 0", dict(lr=0, optimizer="adam"), "lr"),  # learning rates apply to Adam and SGD, not L-BFGS
    ("lr negative", dict(lr=-1, optimizer="sgd"), "lr"),
    ("lr huge", dict(lr=1e9, optimizer="adam"), "lr"),
    ("latent lr 0", dict(latent_lr=0, optimizer="adam"), "latent_lr"),
    ("iterations negative", dict(pixel_iterations=-5), "pixel_iterations"),
    ("iterations huge", dict(pixel_iterations=10**9), "pixel_iterations"),
    ("latent iterations negative", dict(latent_iterations=-1), "latent_iterations"),
    ("zero iterations in all", dict(pixel_iterations=0, latent_iterations=0), "pixel_iterations"),
    ("gidm-latent without latent iterations", dict(method="gidm-latent", latent_iterations=0), "latent_iterations"),
    ("DDIM K 0", dict(ddim_steps=0), "ddim_steps"),
    ("DDIM K huge", dict(ddim_steps=1000), "ddim_steps"),
    ("TV weight negative", dict(tv_weight=-1), "tv_weight"),
    ("seed negative", dict(client_seed=-1), "client_seed"),
    ("seed huge", dict(client_seed=2**40), "client_seed"),
    ("report every 0", dict(report_every=0), "report_every"),
    ("no start", dict(starts=0), "starts"),
    ("starts over the core's bound", dict(starts=65), "starts"),
    ("batch 0", dict(batch_size=0), "batch_size"),
    ("batch too large", dict(batch_size=99), "batch_size"),
    ("batch 17 at 32 px", dict(batch_size=17, resolution="32"), "batch_size"),
    ("batch 9 at 64 px", dict(batch_size=9, resolution="64"), "batch_size"),
    ("batch 9 at the model's own 64 px", dict(model="random:tiny-64", batch_size=9), "batch_size"),
    ("client t below -1", dict(client_t=-5), "client_t"),
    ("client t huge", dict(client_t=10**9), "client_t"),
    ("clip negative", dict(defence="clip + Gaussian noise", clip=-1), "clip"),
    ("sigma negative", dict(defence="clip + Gaussian noise", sigma=-1), "sigma"),
    ("keep 0", dict(defence="top-k pruning", keep=0), "keep"),
    ("keep everything with top-k", dict(defence="top-k pruning", keep=1.0), "keep"),
    ("no local step", dict(client_update="fedavg", local_steps=0), "local_steps"),
    ("client lr 0", dict(client_update="fedavg", client_lr=0), "client_lr"),
    ("negative weight decay", dict(client_update="fedavg", weight_decay=-0.1), "weight_decay"),
    ("fresh noise with a fixed t", dict(client_update="fedavg", noise_per_step="fresh", client_t=100), "client_t"),
    ("empty model", dict(model=""), "model"),
    ("size bomb", dict(model="random:tiny-100000"), "model"),
    ("over the app's size bound", dict(model="random:small-256"), "model"),
    ("unknown random architecture", dict(model="random:huge-32"), "model"),
    ("absolute path as model", dict(model="/etc"), "model"),
    ("bundled folder by path", dict(model="assets/models/faces32/final"), "model"),
    ("home path as model", dict(model="~/.cache/huggingface"), "model"),
    ("parent path as model", dict(model="../wt-12"), "model"),
    ("path as prior", dict(prior="/etc/passwd"), "prior"),
    ("size bomb as prior", dict(prior="random:tiny-100000"), "prior"),
    ("upload with no file", dict(source="Upload"), "uploads"),
    ("webcam with no picture", dict(source="Webcam"), "webcam"),
]


@pytest.fixture(scope="module")
def served():
    """(url, demo): the app on a free local port, one attack at a time, local folders off."""
    saved = {k: os.environ.get(k) for k in ("GIDM_CONCURRENCY", "GIDM_ALLOW_LOCAL_MODELS", "HF_HUB_OFFLINE")}
    os.environ.update(GIDM_CONCURRENCY="1", HF_HUB_OFFLINE="1")
    os.environ.pop("GIDM_ALLOW_LOCAL_MODELS", None)
    url, demo = serve_app()
    yield url, demo
    demo.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def client(served) -> Client:
    return Client(served[0], verbose=False)


def _args(**overrides) -> dict:
    return {**TINY, "gallery": [gallery_items()[0].name], **overrides}


def _refusal(client: Client, **overrides) -> str:
    """The status line of a run refused before any work."""
    started = time.perf_counter()
    status = client.predict(api_name="/run", **_args(**overrides))[STATUS]
    assert time.perf_counter() - started < 5, "refused before any work"
    assert status.startswith("**Refused**"), status
    return status


@pytest.mark.parametrize("kind, overrides, control", CASES, ids=[c[0] for c in CASES])
def test_each_bad_input_is_refused_at_its_control(kind, overrides, control, client):
    tab, label = CONTROLS[control]
    message = _refusal(client, **overrides)
    assert message.startswith(f"**Refused** ({tab} tab, {label}): "), message


def test_there_are_at_least_forty_kinds_across_cli_and_app():
    from tests.test_limits import CASES as CLI_CASES

    assert len(CASES) >= 20 and len(CASES) + len(CLI_CASES) >= 40


def test_a_path_probe_learns_nothing(client, tmp_path):
    """A folder that exists, one that does not, and a real model folder get the same answer: the file system is
    never consulted while local folders are off."""
    real_model = str(ROOT / "assets" / "models" / "faces32" / "final")
    answers = {spec: _refusal(client, model=spec).replace(spec, "<spec>")
               for spec in ("/etc", "/no/such/folder", real_model, str(tmp_path))}
    assert len(set(answers.values())) == 1, answers
    assert "GIDM_ALLOW_LOCAL_MODELS" in next(iter(answers.values()))


def test_a_server_file_cannot_be_passed_as_an_upload(served):
    """Raw HTTP, as a hostile caller would send it (gradio_client would upload its own copy of the file): a path on
    the server in the upload field is refused, with the same answer whether or not the file exists."""
    import uuid

    import httpx

    url = served[0]
    run_id = next(d["id"] for d in httpx.get(f"{url}/config").json()["dependencies"] if d.get("api_name") == "run")
    defaults = {**Settings.from_preset().__dict__, **_args(source="Upload", gallery=[])}
    answers = []
    for path in ("/etc/passwd", "/etc/no-such-file", str(ROOT / "tests" / "data" / "lpips" / "ex_ref.png")):
        values = {**defaults, "uploads": [{"path": path, "meta": {"_type": "gradio.FileData"}}]}
        reply = httpx.post(f"{url}/gradio_api/queue/join", json={
            "data": [None] + [values[k] for k in SETTING_FIELDS], "fn_index": run_id,
            "session_hash": uuid.uuid4().hex, "event_data": None, "trigger_id": None})
        assert reply.status_code == 400, reply.text
        answers.append(reply.json()["detail"].replace(path, "<path>"))
    assert len(set(answers)) == 1 and "root:" not in answers[0], answers


def test_a_size_bomb_is_refused_at_once_and_allocates_nothing(client):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    message = _refusal(client, model="random:attn-100000")
    assert "image size 100000 is out of bounds: 1 to 128 px" in message
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: no 100k-px tensors


def test_the_batch_bound_is_16_at_32_px(client):
    """The refusals above stop at 17 images at 32 px and 9 above it; 16 at 32 px runs."""
    final = client.predict(api_name="/run", **_args(batch_size=16, resolution="32", method="dlg",
                                                      pixel_iterations=2, latent_iterations=0))
    assert final[STATUS].startswith("**Finished**"), final[STATUS]


def test_a_bad_value_past_the_controls_ends_the_run_with_a_message(client):
    final = client.predict(api_name="/run", **_args(client_t=1000))  # the model's T is known once it loads
    assert "Cannot start" in final[STATUS] and "client t must be below 1000" in final[STATUS], final[STATUS]


def test_stop_while_queued_cancels_the_run(served):
    """With one attack slot busy, a second session's run waits in the queue; Stop there must cancel it (it used to
    run all its iterations once the slot freed)."""
    busy, waiting = Client(served[0], verbose=False), Client(served[0], verbose=False)
    long_run = busy.submit(api_name="/run", **_args(pixel_iterations=5000, latent_iterations=0))
    deadline = time.time() + 60
    while not any("Iteration" in o[STATUS] for o in long_run.outputs()) and time.time() < deadline:
        time.sleep(0.2)
    queued = waiting.submit(api_name="/run", **_args(pixel_iterations=5000, latent_iterations=0))
    time.sleep(1.0)
    assert not queued.outputs(), "the second run should still be waiting for the slot"
    assert "queued run will not start" in waiting.predict(api_name="/stop")
    busy.predict(api_name="/stop")
    assert long_run.result(timeout=60) and long_run.outputs()[-1][STATUS].startswith("**Stopped**")
    started = time.time()
    final = queued.result(timeout=60) and queued.outputs()[-1]
    assert final[STATUS].startswith("**Stopped** before it started"), final[STATUS]
    assert time.time() - started < 10
    # A Stop pressed with nothing queued must not cancel the next run.
    assert list(waiting.submit(api_name="/run", **_args(pixel_iterations=4)))[-1][STATUS].startswith("**Finished**")


def test_the_app_keeps_serving_after_the_battery(client):
    outputs = list(client.submit(api_name="/run", **_args(pixel_iterations=6)))
    assert outputs[-1][STATUS].startswith("**Finished**"), outputs[-1][STATUS]


def test_a_sessions_folder_is_deleted_when_it_ends(served, tmp_path):
    import gradio as gr

    states = [b for b in served[1].blocks.values() if isinstance(b, gr.State)]
    assert any(s.delete_callback == Session.close for s in states), "gr.State must clean up its session"
    session = Session()
    session.workdir = tmp_path / "gidm-session-x"
    session.workdir.mkdir()
    (session.workdir / "run-1.zip").write_bytes(b"zip")
    folder = session.workdir
    session.close()
    assert not folder.exists()


def test_the_server_caps_mallocs_arenas_before_torch_loads(monkeypatch):
    """app.py's entry point calls mallopt(M_ARENA_MAX) first: glibc accepts it (returns 1) on this machine."""
    import importlib.util

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    spec = importlib.util.spec_from_file_location("app_entry", ROOT / "app.py")
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    assert entry.limit_malloc_arenas() is True
    source = (ROOT / "app.py").read_text()
    assert source.index("limit_malloc_arenas()\n    import torch") > 0, "the cap must come before torch's import"
