"""A real browser (Debian's headless Chromium, driven by Playwright) uses the app as a person would:

- the default preset, untouched, reconstructs the held-out face past 30 dB within its run, and Stop ends it;
- a bad value on a hidden tab refuses the next Run with the tab and control named in the status line, switches to
  that tab, and clears the previous run's images;
- controls that do not apply (defence strengths without a defence, learning rates under L-BFGS, the picked gallery
  images when the source is Upload) are hidden, a fragile combination gets a visible hint, and an upload shows a
  preview;
- a gallery click (batch size 1) replaces the picked image, and the next run attacks that image;
- on a 390x844 phone the status line and images come before the settings, all four tabs show, and a
  refused Run scrolls to the settings.

The test writes no tracked file (scripts/screenshot.py regenerates docs/screenshot.png). Skipped, with the reason,
only when /usr/bin/chromium is absent (scripts/test.sh installs it where it can).
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
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TARGET_PSNR = 30.0
PATIENCE_S = float(os.environ.get("GIDM_BROWSER_PATIENCE", "90"))  # the default run's length on a busy 2-core CPU
ENDED = ("Finished", "Stopped", "Refused", "Cannot", "Ended")

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent: apt-get install -y "
                                 "chromium (scripts/test.sh does it when run as root)")]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        context = pw.chromium.launch_persistent_context(profile, executable_path=str(CHROMIUM), headless=True,
                                                        args=FLAGS, viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


def _open(browser, url: str, width: int = 1400, height: int = 1000):
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": height})
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    page.locator("#run-btn").wait_for(state="visible", timeout=60_000)
    return page


def _psnr(status: str) -> float | None:
    match = re.search(r"PSNR ([0-9.]+) dB", status)
    return float(match.group(1)) if match else None


def _type(page, name: str, text: str) -> None:
    page.locator(f"#ctl-{name} input, #ctl-{name} textarea").first.fill(text)


def _wait_for_end(page, timeout_ms: int = 120_000) -> str:
    page.wait_for_function("(ends) => ends.some(e => document.querySelector('#status').innerText.startsWith(e))",
                           arg=list(ENDED), timeout=timeout_ms)
    return page.locator("#status").inner_text()


def test_default_preset_shows_the_face_then_a_refused_run_says_where(browser, app_url, capsys):
    page = _open(browser, app_url)
    seen: list[str] = []
    status = page.locator("#status")
    clicked = time.perf_counter()
    page.locator("#run-btn").click()
    page.locator("#reconstruction img[src]").first.wait_for(state="visible", timeout=90_000)
    seen.append(f"first reconstruction after {time.perf_counter() - clicked:.1f} s")
    psnr, reached = None, None
    while time.perf_counter() - clicked < PATIENCE_S:
        text = status.inner_text()
        psnr = _psnr(text) or psnr
        if psnr is not None and psnr >= TARGET_PSNR:
            reached = time.perf_counter() - clicked
            break
        if text.startswith(ENDED):
            break
        page.wait_for_timeout(250)
    seen.append(f"status then: {status.inner_text()!r}")
    assert reached is not None, f"the default preset did not pass {TARGET_PSNR} dB: {seen}"
    seen.append(f"PSNR {psnr:.1f} dB >= {TARGET_PSNR} after {reached:.1f} s in the browser")
    assert re.search(r"recognisable|close copy|near-exact", status.inner_text()), status.inner_text()
    page.locator("#stop-btn").click()
    final = _wait_for_end(page)
    seen.append(f"after Stop: {final!r}")
    assert final.startswith(("Stopped", "Finished")), final
    assert page.locator("#reconstruction img[src]").count() == 1

    # A bad value on a tab that is not showing: the Run is refused, and says so where the user looks.
    page.get_by_role("tab", name="Threat").click()
    _type(page, "client_seed", "2,5")
    page.get_by_role("tab", name="Victim").click()
    page.locator("#run-btn").click()
    refused = _wait_for_end(page, 30_000)
    seen.append(f"refused: {refused!r}")
    assert refused.startswith("Refused"), refused
    assert "Threat tab" in refused and "Client's secret seed" in refused and "comma" in refused, refused
    assert page.get_by_role("tab", name="Threat").get_attribute("aria-selected") == "true", \
        "the refusal did not switch to the tab that holds the bad value"
    page.wait_for_timeout(500)
    assert page.locator("#reconstruction img[src]").count() == 0, "the last run's image is still shown"
    with capsys.disabled():
        print("\nbrowser test saw:\n  " + "\n  ".join(seen))


def test_settings_that_do_not_apply_are_hidden(browser, app_url):
    page = _open(browser, app_url)
    page.get_by_role("tab", name="Threat").click()
    assert not page.locator("#ctl-clip").is_visible(), "no defence: its strengths should be hidden"
    page.get_by_label("clip + Gaussian noise").check()
    page.locator("#ctl-clip").wait_for(state="visible", timeout=10_000)
    page.get_by_role("tab", name="Attack").click()
    assert not page.locator("#ctl-lr").is_visible(), "L-BFGS takes no learning rate: it should be hidden"
    page.get_by_label("adam").check()
    page.locator("#ctl-lr").wait_for(state="visible", timeout=10_000)
    page.locator("#hints").get_by_text("Clipped update").wait_for(state="visible", timeout=10_000)
    page.get_by_role("tab", name="Victim").click()
    page.get_by_label("Upload", exact=True).check()
    page.locator("#ctl-gallery").wait_for(state="hidden", timeout=10_000)
    photo = next(Path(__file__).resolve().parent.parent.joinpath("assets", "images").glob("*.png"))
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.locator("#upload-preview img").first.wait_for(state="visible", timeout=20_000)


def _settled_text(page, selector: str, quiet: float = 3.0, timeout: float = 45.0) -> str:
    """The element's text once it has not changed for `quiet` seconds (or at `timeout`)."""
    text, since, start = page.locator(selector).inner_text(), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() - start < timeout:
        page.wait_for_timeout(250)
        now = page.locator(selector).inner_text()
        if now != text:
            text, since = now, time.monotonic()
    return text


def test_a_preset_leaves_the_hints_of_its_own_settings(browser, app_url):
    """A preset changes several controls at once, each firing a refresh of the hints; one refresh that saw the
    GIDM+ preset's private secrets with the old method used to end last and say GIDM was not designed for them."""
    page = _open(browser, app_url)
    for _ in range(3):
        for preset in ("Private eps and t (GIDM+)", "Fast CPU demo"):
            page.locator("#preset input").click(timeout=60_000)
            page.get_by_role("option", name=preset, exact=True).click()
            # The preset's refreshes queue one after another (one FIFO slot): on a busy machine they take a few
            # seconds, during which a half-applied hint may show; the bug was that one of them ended last.
            hints = _settled_text(page, "#hints")
            assert "not designed for" not in hints, f"{preset}: a stale hint: {hints}"


def test_a_gallery_click_picks_the_image_the_next_run_attacks(browser, app_url):
    page = _open(browser, app_url)
    page.get_by_role("tab", name="Attack").click()
    _type(page, "latent_iterations", "1")
    _type(page, "pixel_iterations", "2")
    page.locator("#run-btn").click()
    assert _wait_for_end(page).startswith("Finished")
    first = page.locator("#original img").first.get_attribute("src")
    page.get_by_role("tab", name="Victim").click()
    page.locator("#gallery-view .gallery-item").nth(1).click()
    picked = page.locator("#ctl-gallery")
    page.wait_for_function("() => document.querySelector('#ctl-gallery').innerText.includes('face-17')",
                           timeout=10_000)
    assert "face-05" not in picked.inner_text(), "with batch size 1 a click must replace the pick, not add to it"
    page.locator("#run-btn").click()
    page.wait_for_function("(old) => { const img = document.querySelector('#original img');"
                           " return img && img.src !== old && document.querySelector('#status').innerText"
                           ".startsWith('Finished'); }", arg=first, timeout=120_000)
    assert page.locator("#original img").first.get_attribute("src") != first, "the run attacked the old image"


def test_phone_layout_puts_the_view_first_and_shows_every_tab(browser, app_url):
    page = _open(browser, app_url, 390, 844)
    status = page.locator("#status").bounding_box()
    images = page.locator("#reconstruction").bounding_box()
    tabs = page.locator("#settings-tabs").bounding_box()
    assert status["y"] < tabs["y"] and images["y"] < tabs["y"], (status, images, tabs)
    assert status["y"] < 844, "the status line should be on the first screen"
    for name in ("Victim", "Model", "Threat", "Attack"):
        tab = page.get_by_role("tab", name=name)
        assert tab.is_visible(), f"tab {name} is hidden (in an overflow menu?)"
        box = tab.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (name, box)
    # A refused Run on the phone brings the settings (far below the images) into view.
    page.get_by_role("tab", name="Attack").click()
    _type(page, "pixel_iterations", "-5")
    page.evaluate("window.scrollTo(0, 0)")
    page.locator("#run-btn").click()
    assert _wait_for_end(page, 30_000).startswith("Refused")
    page.wait_for_function("() => { const r = document.querySelector('#settings-tabs').getBoundingClientRect();"
                           " return r.top >= -1 && r.top < window.innerHeight; }", timeout=10_000)
