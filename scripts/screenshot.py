"""Regenerate docs/screenshot.png: serve the app, press Run on the default preset in headless Chromium, let the face
emerge (the run ends, or --seconds pass), and save a full-page screenshot. --phone also saves a 390x844 view.
--batch N attacks N gallery images at once; --live takes the pictures while the run still goes (then stops it).

    .venv/bin/python scripts/screenshot.py                      # docs/screenshot.png
    .venv/bin/python scripts/screenshot.py --out /tmp/desktop.png --phone /tmp/phone.png --seconds 40
    .venv/bin/python scripts/screenshot.py --batch 16 --live --seconds 90 --size 1280x900 \
        --out docs/batch_view.png --phone docs/batch_view-phone.png   # the batch view, part way through
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def serve() -> tuple[object, str]:
    """The app on a free local port, with the threads `app.py` would give it."""
    import torch

    from app import create_app, launch_kwargs
    from app.session import torch_threads

    torch.set_num_threads(torch_threads())

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    demo = create_app()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    return demo, f"http://127.0.0.1:{port}"


@contextmanager
def app_page(url: str, size: tuple[int, int] = (1400, 1000)) -> Iterator:
    """A Playwright page of the app at `url` in headless Chromium (desktop size), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=FLAGS,
                                                        viewport={"width": size[0], "height": size[1]})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            yield page
        finally:
            browser.close()


def shoot(url: str, out: Path, phone: Path | None, seconds: float, full_phone: bool = False, batch: int = 1,
          live: bool = False, size: tuple[int, int] = (1400, 1000)) -> str:
    with app_page(url, size) as page:
        if batch > 1:
            page.locator("#ctl-batch_size textarea, #ctl-batch_size input").first.fill(str(batch), timeout=60_000)
        page.locator("#run-btn").click(timeout=60_000)
        status = page.locator("#status")
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            if status.inner_text().startswith(("Finished", "Stopped", "Ended", "Cannot", "Refused")):
                break
            page.wait_for_timeout(500)
        else:
            if live:
                text = _pictures(page, out, phone, full_phone)
            page.locator("#stop-btn").click()
            page.wait_for_function("() => document.querySelector('#status').innerText.startsWith('Stopped')",
                                   timeout=60_000)
            if live:
                return text
        page.wait_for_timeout(2000)  # the final plots and filmstrip
        return _pictures(page, out, phone, full_phone)


def _pictures(page, out: Path, phone: Path | None, full_phone: bool) -> str:
    """The full page at its size, then (if asked) the first screen of a phone; returns the status line."""
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    text = page.locator("#status").inner_text()
    if phone is not None:
        width, height = page.viewport_size["width"], page.viewport_size["height"]
        page.set_viewport_size({"width": 390, "height": 844})
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(1500)
        if page.locator("#batch-pairs .pair").count():  # a batch: the status line and the pairs below it
            page.evaluate("document.querySelector('#status').scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)
        page.screenshot(path=str(phone), full_page=full_phone)
        page.set_viewport_size({"width": width, "height": height})
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--phone", type=Path, default=None, help="also save a 390x844 phone view here")
    parser.add_argument("--full-phone", action="store_true", help="the whole phone page, not the first screen")
    parser.add_argument("--seconds", type=float, default=60.0, help="press Stop after this long")
    parser.add_argument("--batch", type=int, default=1, help="the batch size typed in before Run")
    parser.add_argument("--live", action="store_true", help="take the pictures at --seconds, before pressing Stop")
    parser.add_argument("--size", default="1400x1000", help="the desktop window, WIDTHxHEIGHT")
    args = parser.parse_args()
    demo, url = serve()
    try:
        print(shoot(url, args.out, args.phone, args.seconds, args.full_phone, args.batch, args.live,
                    tuple(int(v) for v in args.size.split("x"))))
    finally:
        demo.close()


if __name__ == "__main__":
    main()
