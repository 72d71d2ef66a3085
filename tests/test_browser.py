"""A real browser (Debian's headless Chromium, driven by Playwright) clicks Run on the default settings (with more
pixel iterations, so that the run is still going), waits for the reconstruction and the loss plot, waits for the
image to emerge (PSNR 30 dB or 60 s), clicks Stop, checks the run stopped, and saves docs/screenshot.png.

Skipped, with the reason, only when /usr/bin/chromium is absent (scripts/test.sh installs it where it can).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshot.png"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGET_PSNR = float(os.environ.get("GIDM_BROWSER_PSNR", "30"))  # let the image emerge before pressing Stop
PATIENCE_S = float(os.environ.get("GIDM_BROWSER_PATIENCE", "60"))
LONG_RUN = "3000"  # pixel iterations: the default preset, made long enough that Stop lands mid-run

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: "
                                "apt-get install -y chromium (scripts/test.sh does it when run as root)")





def _psnr(status: str) -> float | None:
    match = re.search(r"PSNR ([0-9.]+) dB", status)
    return float(match.group(1)) if match else None


def test_run_watch_stop_screenshot(app_url, capsys):
    sync_api = pytest.importorskip("playwright.sync_api")
    seen: list[str] = []
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1500, "height": 1000}, device_scale_factor=1)
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.goto(app_url, wait_until="domcontentloaded", timeout=60_000)
            run = page.locator("#run-btn")
            run.wait_for(state="visible", timeout=60_000)
            status = page.locator("#status")
            page.get_by_role("tab", name="Attack").click()
            page.get_by_label("Pixel iterations (GIDM+: all of its)").fill(LONG_RUN)
            page.get_by_role("tab", name="Victim").click()
            clicked = time.perf_counter()
            run.click()
            page.locator("#reconstruction img[src]").first.wait_for(state="visible", timeout=90_000)
            first_image_s = time.perf_counter() - clicked
            seen.append(f"reconstruction visible after {first_image_s:.1f} s: {status.inner_text()!r}")
            page.locator("#loss-plot .js-plotly-plot, #loss-plot svg.main-svg").first.wait_for(
                state="visible", timeout=60_000)
            seen.append(f"loss plot visible after {time.perf_counter() - clicked:.1f} s")
            first_src = page.locator("#reconstruction img").first.get_attribute("src")
            psnr, reached = None, None
            while time.perf_counter() - clicked < PATIENCE_S:
                text = status.inner_text()
                psnr = _psnr(text) or psnr
                if text.startswith(("Finished", "Stopped")):
                    break
                if psnr is not None and psnr >= TARGET_PSNR:
                    reached = time.perf_counter() - clicked
                    break
                page.wait_for_timeout(500)
            later_src = page.locator("#reconstruction img").first.get_attribute("src")
            assert later_src != first_src, "the reconstruction never changed in the browser"
            seen.append(f"before Stop ({time.perf_counter() - clicked:.1f} s): {status.inner_text()!r}"
                        + (f"; PSNR >= {TARGET_PSNR} after {reached:.1f} s" if reached else ""))
            pressed = time.perf_counter()
            page.locator("#stop-btn").click()
            page.wait_for_function(
                "() => { const t = document.querySelector('#status').innerText;"
                " return t.startsWith('Stopped') || t.startsWith('Finished'); }", timeout=30_000)
            final = status.inner_text()
            seen.append(f"after Stop ({time.perf_counter() - pressed:.1f} s later): {final!r}")
            assert final.startswith("Stopped"), final
            assert _psnr(final) is not None
            page.locator("#reconstruction img[src]").first.wait_for(state="visible")
            page.wait_for_timeout(1500)  # let the final plots and filmstrip render
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            assert SCREENSHOT.stat().st_size > 20_000
        finally:
            browser.close()
    with capsys.disabled():
        print("\nbrowser test saw:\n  " + "\n  ".join(seen))
