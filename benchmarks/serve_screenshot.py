"""Screenshot of the san-serve page (docs/serve.png) with one image upscaled and the slider at 50 %.

Starts ``python -m serve_app --port 0`` (the default model from weights/, unless ``--weights``), opens its
page in headless Chromium through Playwright (Debian's ``chromium``, or ``$SAN_CHROMIUM``; as
tests/serve_app/test_browser.py does), uploads IMAGE, waits for the result, sets the before/after slider
to 50 % and saves a PNG of the whole page, re-saved losslessly by Pillow with ``optimize`` (``--quantize``:
256 colours, smaller but no longer exact).
Needs the ``serve`` extra, ``playwright`` and Chromium (``apt-get install chromium``). The server is
stopped at the end.

    python benchmarks/serve_screenshot.py astronaut_lr.png                 # -> docs/serve.png
    python benchmarks/serve_screenshot.py photo.png -o shot.png --width 1100 --height 900 -- --device cpu

docs/serve.png shows the public-domain NASA astronaut photo (scikit-image's ``astronaut.png``, the 384x384 crop
of sr_app/demo_images/ and its README) reduced x4 to 96x96 (MATLAB-style bicubic,
``sr_app.data.bicubic_downscale``) into a temporary file, on the 2-core CPU. No benchmark image goes into
the repository, not even as a screenshot.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


def chromium_path() -> str | None:
    for name in (os.environ.get("SAN_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and (found := shutil.which(name)):
            return found
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", type=Path, help="the image to upload")
    ap.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "serve.png")
    ap.add_argument("--width", type=int, default=1280, help="viewport width (default 1280)")
    ap.add_argument("--height", type=int, default=800, help="viewport height (default 800)")
    ap.add_argument("--viewport-only", action="store_true", help="the viewport only, not the whole page")
    ap.add_argument("--quantize", action="store_true", help="256 colours (smaller; the pixels are no longer exact)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds to wait for the result (default 600)")
    ap.epilog = "Anything after -- goes to san-serve (e.g. -- --weights my.safetensors --device cpu)."
    argv = sys.argv[1:] if argv is None else list(argv)
    serve_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = ap.parse_args(argv[: len(argv) - len(serve_args) - (1 if "--" in argv else 0)])
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        ap.error("no Chromium found (apt-get install chromium, or set $SAN_CHROMIUM)")
    if not args.image.is_file():
        ap.error(f"no such image: {args.image}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "serve_app", "--port", "0", "--log-level", "warning", *serve_args]
    with tempfile.TemporaryDirectory(prefix="san_shot_") as tmp:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp)
        try:
            line = proc.stdout.readline()
            if "http://" not in line:
                raise SystemExit(f"san-serve did not start: {line}")
            url = line.split()[1].rstrip("/")
            with sync_playwright() as p:
                viewport = {"width": args.width, "height": args.height}
                profile = str(Path(tmp) / "profile")
                # bypass_csp: the page's CSP (script-src 'self') blocks the eval that wait_for_function polls with
                ctx = p.chromium.launch_persistent_context(profile, executable_path=exe, headless=True,
                                                           args=CHROMIUM_ARGS, viewport=viewport,
                                                           bypass_csp=True)  # fmt: skip
                try:
                    page = ctx.new_page()
                    page.goto(url + "/")
                    page.wait_for_function("!document.getElementById('model-info').textContent.startsWith('Loading')")
                    page.set_input_files("#files", str(args.image))
                    page.locator("a.download").wait_for(timeout=args.timeout * 1000)
                    page.wait_for_function("document.getElementById('before').complete"
                                           " && document.getElementById('after').complete"
                                           " && document.getElementById('before').naturalWidth > 0")  # fmt: skip
                    page.wait_for_selector("#metrics tbody tr")
                    page.fill("#split", "50")
                    page.dispatch_event("#split", "input")
                    page.evaluate("document.activeElement && document.activeElement.blur()")
                    page.evaluate("window.scrollTo(0, 0)")
                    args.output.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(args.output), full_page=not args.viewport_only)
                finally:
                    ctx.close()
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    from PIL import Image

    with Image.open(args.output) as im:
        im = im.convert("RGB")
    if args.quantize:
        im = im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    im.save(args.output, optimize=True)
    print(f"{args.output}: {args.output.stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
