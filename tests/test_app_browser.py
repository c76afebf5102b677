"""The web app in a real headless browser (Debian ``chromium`` driven by Playwright): type a prompt, run a short
generation on the embedded prior, watch the progress line, see the 3D viewer load the GLB, download it through
the page, and save a screenshot.

Playwright launches the system chromium (``executable_path``), never a browser build of its own; ``make install``
installs the Debian package, so on CI this test never skips.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"),
]
TINY = {"steps": 4, "preview_every": 2, "mc_resolution": 32, "texture_size": 64, "turntable_frames": 4}
"""Slider values for a short run (the export on the embedded prior then takes seconds, not minutes)."""


def _set_number(page, name: str, value: int) -> None:
    """Type ``value`` into a number box and wait until the page holds it."""
    from playwright.sync_api import expect

    box = page.locator(f"#uni3d-{name} input[type=number]")
    box.fill(str(value))
    box.press("Tab")
    expect(box).to_have_value(str(value))


def _launch(pw):
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
    )


def _open_advanced(page) -> None:
    from playwright.sync_api import expect

    page.get_by_text("Advanced settings").click()
    expect(page.locator("#uni3d-mc_resolution input[type=number]")).to_be_visible()
    page.wait_for_timeout(1000)  # the accordion mounts its inputs once more while it opens


def _viewer_shows_a_model(page, path: Path, timeout: float = 60) -> bool:
    """Whether the 3D viewer's canvas draws something other than its plain background within ``timeout`` s."""
    canvas = page.locator("#uni3d-model canvas")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        canvas.screenshot(path=str(path))
        pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        if (np.abs(pixels - pixels[0, 0]).max(axis=-1) > 24).mean() > 0.01:
            return True
        time.sleep(1)
    return False


def test_browser_runs_a_prompt_and_downloads_the_glb(app_server: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, out = app_server
    with sync_playwright() as pw:
        browser = _launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            page.goto(url)
            status = page.locator("#uni3d-status .uni3d-status")
            page.locator("#uni3d-generate").click()  # no prompt yet: a message in the page, no run
            expect(status).to_have_attribute("data-phase", "error")
            expect(status).to_contain_text("the prompt is empty")
            page.locator("#uni3d-prompt textarea").fill("a red cube")
            _open_advanced(page)
            for name, value in TINY.items():
                _set_number(page, name, value)
            page.wait_for_timeout(500)
            for name, value in TINY.items():  # still set (the run would be slow with the default export)
                expect(page.locator(f"#uni3d-{name} input[type=number]")).to_have_value(str(value))
            page.locator("#uni3d-generate").click()
            expect(status).not_to_have_attribute("data-phase", "error")  # the message of the empty prompt is gone

            seen: list[str] = []
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline:
                text = status.inner_text(timeout=5000)
                if not seen or seen[-1] != text:
                    seen.append(text)
                if status.get_attribute("data-phase") in ("done", "failed", "error", "cancelled"):
                    break
                time.sleep(0.2)
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            assert status.get_attribute("data-phase") == "done", seen
            assert any(re.search(r"step [1-4] / 4", t) for t in seen), seen  # the live progress line
            assert "4 steps" in status.inner_text(), status.inner_text()

            expect(page.locator("#uni3d-model canvas")).to_be_visible(timeout=30000)
            assert _viewer_shows_a_model(page, tmp_path / "viewer.png")  # the viewer loaded and drew the GLB
            link = page.locator('#uni3d-files a[href$="/model.glb"]').first
            expect(link).to_be_visible(timeout=30000)
            with page.expect_download(timeout=30000) as info:
                link.click()
            saved = tmp_path / "downloaded.glb"
            info.value.save_as(saved)
            assert len(trimesh.load(saved, force="mesh").faces) > 0
            expect(page.locator("#uni3d-gallery img").first).to_be_visible(timeout=30000)  # the run in the gallery
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            assert (tmp_path / "app.png").stat().st_size > 10_000
        finally:
            browser.close()
    (run,) = [p for p in out.iterdir() if (p / "metrics.json").is_file()]
    config = json.loads((run / "config.json").read_text())
    assert config["steps"] == 4 and config["export"]["mc_resolution"] == 32 and config["preview_every"] == 2


def test_a_run_outlives_its_page_and_a_reload_follows_it_again(app_server: tuple[str, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, out = app_server
    with sync_playwright() as pw:
        browser = _launch(pw)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            status = page.locator("#uni3d-status .uni3d-status")
            page.locator("#uni3d-prompt textarea").fill("a blue sphere")
            _open_advanced(page)
            for name, value in {**TINY, "steps": 999999}.items():
                _set_number(page, name, value)
            page.locator("#uni3d-generate").click()  # out of range: said, not clamped
            expect(status).to_have_attribute("data-phase", "error")
            expect(status).to_contain_text("steps must be from 1 to 5000, got 999999")
            _set_number(page, "steps", 3000)
            page.locator("#uni3d-generate").click()
            expect(status).to_have_attribute("data-phase", "training", timeout=60000)
            expect(status).to_contain_text(re.compile(r"step [1-9]\d* / 3000"), timeout=60000)
            link = page.locator("#uni3d-status a.uni3d-run-link")
            run_id = link.get_attribute("href").removeprefix("?run=")

            page.reload()  # the page goes away; the run does not
            expect(page.locator("#uni3d-jobs")).to_contain_text(run_id, timeout=30000)
            page.locator(f'#uni3d-jobs a[href="?run={run_id}"]').click()
            status = page.locator("#uni3d-status .uni3d-status")
            expect(status).to_have_attribute("data-phase", "training", timeout=30000)
            first = int(re.search(r"step (\d+) / 3000", status.inner_text()).group(1))
            expect(status).not_to_contain_text(f"step {first} / 3000", timeout=30000)  # live progress again
            page.locator("#uni3d-cancel").click()  # the reattached page cancels the run it follows
            expect(status).to_have_attribute("data-phase", "cancelled", timeout=120000)
            page.screenshot(path=str(tmp_path / "reattached.png"), full_page=True)
        finally:
            browser.close()
    metrics = json.loads((out / run_id / "metrics.json").read_text())
    assert metrics["status"] == "cancelled" and metrics["cancelled_at_step"] > first
