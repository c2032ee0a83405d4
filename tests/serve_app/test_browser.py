"""End to end: ``san-serve`` (``python -m serve_app``) on a free loopback port, its page driven in a real headless
Chromium (Playwright with Debian's ``chromium``): upload an image, wait for the result, download it, check
its size and that the metrics appear. Skips with the reason where Playwright or Chromium is missing (fails
instead where ``$SAN_REQUIRE_BROWSER`` is set, as ``.ci/run`` does after installing Chromium). The image
and the tiny model are made by the tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from .conftest import png_bytes, smooth_image

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


def chromium_path() -> str | None:
    for name in (os.environ.get("SAN_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


def missing(reason: str) -> None:
    """Skip, or fail where ``$SAN_REQUIRE_BROWSER`` is set (CI sets it, so the test cannot silently not run)."""
    if os.environ.get("SAN_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, and $SAN_REQUIRE_BROWSER is set")
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path):
    try:
        from playwright import sync_api
    except ImportError:
        missing("Playwright not installed (pip install -e '.[test]' or pip install playwright)")
    exe = chromium_path()
    if exe is None:
        missing("no Chromium installed (apt-get install chromium, or set $SAN_CHROMIUM; CI does this in .ci/run)")
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=exe, headless=True,
                                                   args=CHROMIUM_ARGS, accept_downloads=True,
                                                   viewport={"width": 1100, "height": 900})  # fmt: skip
        try:
            yield ctx
        finally:
            ctx.close()


@pytest.fixture
def server(tiny_model, tmp_path):
    """``python -m serve_app --port 0`` with the tiny model; yields its URL (from the line it prints)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "serve_app", "--port", "0", "--weights", str(tiny_model), "--device", "cpu",
           "--precision", "fp32", "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        if "http://" not in line:
            proc.kill()
            raise AssertionError(f"san-serve did not start: {line}{proc.stderr.read()}")
        yield line.split()[1].rstrip("/")
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow
def test_page_upscales_an_image_in_chromium(browser, server, tmp_path):
    src = tmp_path / "sample.png"
    src.write_bytes(png_bytes(smooth_image(72, 96, 4)))
    page = browser.new_page()
    page.goto(server + "/")
    page.wait_for_selector("#model-info:has-text('tiny-test')")
    page.set_input_files("#files", str(src))
    link = page.locator("a.download")
    link.wait_for(timeout=120_000)
    with page.expect_download() as info:
        link.click()
    saved = tmp_path / "downloaded.png"
    info.value.save_as(saved)
    assert info.value.suggested_filename == "sample_x4.png"
    assert Image.open(saved).size == (384, 288)  # 4x the 96x72 input
    row = page.locator("#metrics tbody tr").first
    cells = row.locator("td").all_inner_texts()
    assert cells[:2] == ["96x72", "384x288"]
    assert float(cells[4]) > 0  # NIQE shown
    assert page.locator("#viewer").is_visible()
    page.wait_for_function("document.getElementById('before').naturalWidth === 384")  # the bicubic side
    page.fill("#split", "20")
    page.dispatch_event("#split", "input")
    assert "inset(0px 0px 0px 20%)" in page.eval_on_selector("#after", "e => getComputedStyle(e).clipPath")
    # keyboard: the tabs move with the arrow keys, and the synthesis tab says how to turn it on
    page.focus("#tab-upscale")
    page.keyboard.press("ArrowRight")
    assert page.locator("#panel-synth").is_visible()
    assert "--translate-weights" in page.locator("#synth-off").inner_text()
    if os.environ.get("SAN_SERVE_SCREENSHOT"):
        page.keyboard.press("ArrowLeft")
        page.screenshot(path=os.environ["SAN_SERVE_SCREENSHOT"], full_page=True)
