"""Time a preset in the browser: serve the app, pick the preset in headless Chromium, press Run, and report the wall
seconds from the click until the live status line first shows PSNR >= 30 dB (and until it first shows an
iteration: what the run's set-up costs), and the last status line that named the leading start (a preset with
several starts says which one leads).

    .venv/bin/python scripts/preset_time.py --preset "Private eps and t (GIDM+)" --shot /tmp/gidm-plus
"""

from __future__ import annotations

import argparse
import json
import re
import time

from screenshot import app_page, serve


def time_preset(url: str, preset: str, target: float, patience: float, shot: str | None = None) -> dict:
    """With `shot`, the page is saved as `shot`-desktop.png and `shot`-phone.png (390x844) when the target is met
    (or the run ends): what a user sees at that moment."""
    with app_page(url) as page:
        page.locator("#preset input").click(timeout=60_000)
        page.get_by_role("option", name=preset, exact=True).click()
        page.wait_for_timeout(1500)  # the preset's values fill the controls
        status = page.locator("#status")
        page.locator("#run-btn").click()
        clicked = time.perf_counter()
        record: dict = dict(preset=preset, target_db=target, reached_s=None, first_iteration_s=None, last_status="",
                            leader_line="")
        while time.perf_counter() - clicked < patience:
            text = status.inner_text()
            record["last_status"] = text
            if record["first_iteration_s"] is None and text.startswith("Iteration"):  # the attack's first event
                record["first_iteration_s"] = round(time.perf_counter() - clicked, 1)
            if "leads" in text:
                record["leader_line"] = text
            match = re.search(r"PSNR ([0-9.]+) dB", text)
            if match and float(match.group(1)) >= target:
                record["reached_s"] = round(time.perf_counter() - clicked, 1)
                break
            if text.startswith(("Finished", "Stopped", "Refused", "Cannot", "Ended")):
                break
            page.wait_for_timeout(250)
        if shot:
            page.screenshot(path=f"{shot}-desktop.png", full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.screenshot(path=f"{shot}-phone.png")
        page.locator("#stop-btn").click()
        return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="Private eps and t (GIDM+)")
    parser.add_argument("--target", type=float, default=30.0, help="PSNR dB")
    parser.add_argument("--patience", type=float, default=300.0, help="give up after this many wall seconds")
    parser.add_argument("--shot", default=None, help="save desktop and phone screenshots under this path prefix")
    args = parser.parse_args()
    demo, url = serve()
    try:
        print(json.dumps(time_preset(url, args.preset, args.target, args.patience, args.shot)), flush=True)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
