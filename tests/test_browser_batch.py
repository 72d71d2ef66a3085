"""The batch view in a real browser on a 390x844 phone: a batch's private images sit beside their reconstructions two
pairs a row, each picture large enough to read a 32 px face, the status line carries the separation, and the next
single-image run brings the three pictures back (headless Chromium, as tests/test_browser.py)."""

from __future__ import annotations

from tests.test_browser import _open, _type, _wait_for_end, browser, pytestmark  # noqa: F401  (fixture, marks)

MIN_SHOWN_PX = 60  # a 32 px face drawn at least ~2x


def test_a_batch_pairs_each_image_with_its_reconstruction_on_a_phone(browser, app_url):  # noqa: F811
    page = _open(browser, app_url, 390, 844)
    _type(page, "batch_size", "4")
    page.locator("#run-btn").click()
    page.locator("#batch-pairs figure.pair").nth(3).wait_for(state="visible", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#status').innerText.includes('Batch: separated 4')",
                           timeout=60_000)
    page.locator("#stop-btn").click()
    status = _wait_for_end(page)
    assert status.startswith("Stopped") and "residual" in status, status
    pairs = page.locator("#batch-pairs figure.pair")
    assert pairs.count() == 4
    boxes = [pairs.nth(i).bounding_box() for i in range(4)]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 2 and boxes[2]["y"] > boxes[0]["y"] + boxes[0]["height"] - 2, boxes
    assert all(box["x"] >= 0 and box["x"] + box["width"] <= 390 for box in boxes), boxes
    widths = [page.locator("#batch-pairs img").nth(i).bounding_box()["width"] for i in range(8)]
    assert min(widths) >= MIN_SHOWN_PX, widths
    assert not page.locator("#images-row").is_visible(), "the grids of the batch are hidden behind the pairs"
    _type(page, "batch_size", "1")
    page.locator("#run-btn").click()
    page.locator("#images-row").wait_for(state="visible", timeout=60_000)
    assert page.locator("#batch-pairs figure.pair").count() == 0
    page.locator("#reconstruction img[src]").first.wait_for(state="visible", timeout=120_000)
    page.locator("#stop-btn").click()
    assert _wait_for_end(page).startswith("Stopped")
