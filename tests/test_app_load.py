"""The app under load and hostile sweeps, through its API: a sweep's typed values obey the main view's rules, Stop
ends a sweep's running cell at once, Stop works with the queue full, and the queue holds what GIDM_QUEUE_SIZE says.

The app here runs one attack at a time (GIDM_CONCURRENCY=1) with room for two waiting runs (GIDM_QUEUE_SIZE=2).
"""

from __future__ import annotations

import os
import threading
import time

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client  # noqa: E402

from app.settings import SETTING_FIELDS, Settings, as_typed  # noqa: E402
from app.victims import gallery_items  # noqa: E402
from tests.conftest import serve_app  # noqa: E402

TINY = dict(model="random:tiny-32", uploads=None, webcam=None, pixel_iterations=20, latent_iterations=2, ddim_steps=1,
            report_every=3, batch_size=1, source="Gallery", method="dlg", plateau=0)
LONG = dict(pixel_iterations=20000, latent_iterations=0)  # minutes on this CPU: it ends only when stopped
STATUS = 0
SWEEP_STATUS = 2


@pytest.fixture(scope="module")
def served():
    saved = {k: os.environ.get(k) for k in ("GIDM_CONCURRENCY", "GIDM_QUEUE_SIZE")}
    os.environ.update(GIDM_CONCURRENCY="1", GIDM_QUEUE_SIZE="2")
    url, demo = serve_app()
    yield url
    demo.close()
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _client(url: str) -> Client:
    return Client(url, verbose=False)


def _args(**overrides) -> dict:
    return {**TINY, "gallery": [gallery_items()[0].name], **overrides}


def _settings(**overrides) -> list:
    values = {**Settings.from_preset().__dict__, **_args(**overrides)}
    return [as_typed(values[name]) for name in SETTING_FIELDS]


def _reply(error: BaseException | None) -> str:
    """What the server answered a refused submission (the client raises on the HTTP status; the body says why)."""
    response = getattr(error, "response", None)
    return response.text if response is not None else str(error)


def _sweep(client: Client, x_axis: str, x_text: str, cell_iterations: str = "4", **overrides):
    return client.submit(x_axis, x_text, "(none)", "", cell_iterations, *_settings(**overrides), api_name="/sweep")


# (axis, typed values, what the refusal says after "Sweep refused: <axis>")
REFUSED = [
    ("iterations (total)", "-5", "must be between 1 and 5000"),
    ("iterations (total)", "50 2.5", "must be a whole number, got 2.5"),
    ("iterations (total)", "100000000", "must be between 1 and 5000"),
    ("DDIM steps K", "100000", "must be between 1 and 100"),
    ("DDIM steps K", "0", "must be between 1 and 100"),
    ("client t", "5000", "client t must be below 1000"),
    ("client seed", "-1", "must be between 0 and"),
    ("top-k fraction kept", "2", "must be between"),
    ("GIDM latent share", "1.5", "must be between 0 and 0.99"),
    ("noise sigma (clip 1)", "nan", "must be a finite number"),
    ("method", "magic", "is not one of"),
]


def test_each_bad_sweep_value_is_refused_before_anything_runs(served):
    client = _client(served)
    for axis, text, reason in REFUSED:
        started = time.perf_counter()
        status = _sweep(client, axis, text).result(timeout=60)[SWEEP_STATUS]
        plain = status.replace("**", "")
        assert plain.startswith(f"Sweep refused: {axis}") and reason in plain, (axis, text, status)
        assert time.perf_counter() - started < 10, "refused before any cell ran"


def test_stop_ends_a_sweeps_running_cell_within_an_evaluation(served):
    client = _client(served)
    job = _sweep(client, "iterations (total)", "5000 5000", cell_iterations="5000")
    time.sleep(6)  # the first cell loads its model and is attacking by now (a 5000-evaluation cell takes minutes)
    assert not job.done(), "the cell should still be running"
    pressed = time.perf_counter()
    client.predict(api_name="/stop")
    status = job.result(timeout=60)[SWEEP_STATUS]
    assert time.perf_counter() - pressed < 5, "Stop must end the running cell, not wait for it"
    assert status.startswith("**Sweep stopped** after 0 of 2 cells"), status
    # The session's slot is free again: a new run starts and finishes.
    final = list(client.submit(api_name="/run", **_args(pixel_iterations=4)))[-1]
    assert final[STATUS].startswith("**Finished**"), final[STATUS]


def test_stop_works_with_a_full_queue_and_the_queue_holds_what_it_says(served):
    busy = _client(served)
    running = busy.submit(api_name="/run", **_args(**LONG))
    deadline = time.time() + 60
    while not any("Iteration" in o[STATUS] for o in running.outputs()) and time.time() < deadline:
        time.sleep(0.2)
    # Six visitors press Run at once: two places wait, the other four are told the queue is full.
    visitors = [_client(served) for _ in range(6)]
    outcomes: list[object] = [None] * len(visitors)

    def press(i: int) -> None:
        try:
            outcomes[i] = visitors[i].submit(api_name="/run", **_args(**LONG))
            outcomes[i].status()  # raises here when the submission was refused
        except Exception as err:  # noqa: BLE001  (the refusal arrives as the client's exception)
            outcomes[i] = err

    threads = [threading.Thread(target=press, args=(i,)) for i in range(len(visitors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    time.sleep(2)
    refused = [o for o in outcomes if isinstance(o, Exception) or o.done()]
    waiting = [(v, o) for v, o in zip(visitors, outcomes) if o not in refused]
    assert len(waiting) == 2, f"{len(waiting)} runs wait with room for 2"
    replies = [_reply(o if isinstance(o, Exception) else o.exception()) for o in refused]
    assert all("the queue is full: 2 runs are waiting" in r.lower() for r in replies), replies
    ranks = sorted(o.status().rank for _, o in waiting)
    assert ranks == [0, 1], f"a waiting run knows its place in the queue: {ranks}"
    # With the queue full, Stop still answers at once: a fresh page's, the waiting visitors', the running one's.
    for client in (_client(served), waiting[0][0], waiting[1][0], busy):
        started = time.perf_counter()
        client.predict(api_name="/stop")
        assert time.perf_counter() - started < 5
    assert running.result(timeout=60) and running.outputs()[-1][STATUS].startswith("**Stopped**")
    for _, job in waiting:
        assert job.result(timeout=60) and job.outputs()[-1][STATUS].startswith("**Stopped** before it started")
