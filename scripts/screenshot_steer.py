"""Screenshots of steering and of "what the server sees": serve the app, press Run on the default preset in headless
Chromium, extend the pixel phase and pause mid-run, then save the live view (desktop and phone) and the server panel;
or (--lesson) click the lesson's four steps and save its panel.

    .venv/bin/python scripts/screenshot_steer.py --folder /tmp/steer-shots    # steer-desktop.png, ...
    .venv/bin/python scripts/screenshot_steer.py --folder /tmp/steer-shots --lesson
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from screenshot import app_page, serve  # noqa: E402


def steer(page, action: str, value: str = "") -> str:
    page.locator("#steer-action input").click()
    page.get_by_role("option", name=action, exact=True).click()
    page.locator("#steer-value input").fill(value)
    page.locator("#steer-btn").click()
    page.wait_for_timeout(800)
    return page.locator("#steer-status").inner_text()


def shoot(url: str, folder: Path, warmup_s: float) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    said = []
    with app_page(url) as page:
        page.locator("#run-btn").click(timeout=60_000)
        page.locator("#steer-box").get_by_text("Steer the running attack").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('phase pixel')",
                               timeout=120_000)
        page.wait_for_timeout(warmup_s * 1000)
        said.append(steer(page, "extend phase by", "200"))
        page.wait_for_timeout(3000)
        said.append(steer(page, "pause"))
        page.wait_for_function("() => document.querySelector('#status').innerText.includes('Paused')",
                               timeout=60_000)
        page.wait_for_timeout(1500)
        page.locator("#view-col").screenshot(path=str(folder / "steer-desktop.png"))
        page.locator("#server-box").scroll_into_view_if_needed()
        page.wait_for_timeout(1500)
        page.locator("#server-box").screenshot(path=str(folder / "server-desktop.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(2000)
        page.locator("#steer-box").scroll_into_view_if_needed()
        page.screenshot(path=str(folder / "steer-phone.png"))
        page.locator("#server-box").screenshot(path=str(folder / "server-phone.png"))
        page.set_viewport_size({"width": 1400, "height": 1000})
        said.append(steer(page, "resume"))
        page.locator("#stop-btn").click()
        page.wait_for_function("() => document.querySelector('#status').innerText.startsWith('Stopped')",
                               timeout=60_000)
        page.wait_for_timeout(2000)
        page.locator("#loss-plot").screenshot(path=str(folder / "steer-final-loss.png"))
        said.append(page.locator("#status").inner_text())
    return said


def lesson_shots(url: str, folder: Path) -> list[str]:
    """Click the lesson's four steps in turn, then save the lesson panel at desktop and phone sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    said = []
    with app_page(url) as page:
        page.locator("#lesson-box").get_by_text("Lesson: the story in four steps").click()
        for step in range(1, 5):
            page.locator(f"#lesson-{step}").click()
            page.wait_for_function(f"() => document.querySelector('#lesson-status').innerText.startsWith('{step}.')",
                                   timeout=180_000)
            said.append(page.locator("#lesson-status").inner_text())
        page.wait_for_timeout(1500)
        page.locator("#lesson-box").screenshot(path=str(folder / "lesson-desktop.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(1500)
        page.locator("#lesson-box").screenshot(path=str(folder / "lesson-phone.png"))
    return said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=Path("steer-shots"))
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds of the pixel phase before steering")
    parser.add_argument("--lesson", action="store_true", help="the lesson's four steps instead (~3 minutes)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    demo, url = serve()
    try:
        for line in (lesson_shots(url, args.folder) if args.lesson else shoot(url, args.folder, args.warmup)):
            print(line)
    finally:
        demo.close()


if __name__ == "__main__":
    main()
