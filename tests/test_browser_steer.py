"""In headless Chromium: a steering action taken mid-run lands within one evaluation and shows on the loss plot.
Skipped when /usr/bin/chromium is absent."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent")]


def _total(status: str) -> int:
    return int(re.search(r"Iteration \d+/(\d+)", status).group(1))


def test_an_extension_lands_at_the_next_evaluation_and_shows_on_the_loss_plot(app_url):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                        args=FLAGS, viewport={"width": 1400, "height": 1000})
        try:
            page = browser.new_page()
            page.goto(app_url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("#run-btn").click(timeout=60_000)
            page.locator("#steer-box").get_by_text("Steer the running attack").click()
            page.wait_for_function("() => /Iteration \\d+\\//.test(document.querySelector('#status').innerText)",
                                   timeout=120_000)
            before = _total(page.locator("#status").inner_text())
            page.locator("#steer-action input").click()
            page.get_by_role("option", name="extend phase by", exact=True).click()
            page.locator("#steer-value input").fill("37")
            page.locator("#steer-btn").click()
            page.wait_for_function("() => document.querySelector('#steer-status').innerText.includes('Steering')",
                                   timeout=10_000)
            page.wait_for_function("() => document.querySelector('#loss-plot').textContent.includes('+37 evals')",
                                   timeout=60_000)
            page.wait_for_function(f"() => document.querySelector('#status').innerText.includes('/{before + 37} ')",
                                   timeout=30_000)  # the status line's plan grows by the same 37
            page.locator("#stop-btn").click()
            page.wait_for_function("() => /^(Stopped|Finished)/.test(document.querySelector('#status').innerText)",
                                   timeout=60_000)
        finally:
            browser.close()
