"""``edge-sam app`` in a real browser: Debian's headless Chromium, driven by Playwright.

The app runs as its own process (the real command, on a free port); the browser uploads an
image, clicks a point, and the test reads back what the page shows: one panel per engine, the
masks (PNG data URLs) and the mask IoU vs fp32, which must be the IoU of those two masks.

Run as a script it makes the screenshot in docs/ (see docs/app.md):
``python tests/test_app_browser.py --artifact deploy_out/tflite-int8 --out docs/app_screenshot.png``
"""

from __future__ import annotations

import argparse
import base64
import re
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

CHROMIUM = "/usr/bin/chromium"  # Debian's package (apt-get install chromium); Playwright's download is not used
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
STARTUP_S = 180


def start_app(artifacts: list[str], checkpoint: str = "reference") -> tuple[subprocess.Popen, str]:
    """``edge-sam app`` on a free port; returns the process and the URL it printed."""
    command = [sys.executable, "-m", "edge_sam.apps.cli", "app", "--port", "0", "--checkpoint", checkpoint]
    for artifact in artifacts:
        command += ["--artifact", artifact]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + STARTUP_S
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        match = re.search(r"http://[\d.]+:\d+/", line)
        if match:
            return process, match.group(0)
    process.kill()
    raise RuntimeError("edge-sam app did not start:\n" + "".join(lines[-20:]))


def decode_mask(data_url: str) -> np.ndarray:
    png = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE) > 127


def drive(url: str, image: Path, click: tuple[float, float], screenshot: Path, bad_file: Path | None = None,
          chromium: str = CHROMIUM) -> dict:
    """Upload ``image``, click at ``click`` (fractions of the shown image), read the result panels,
    save a screenshot. With ``bad_file``, first upload it and return the error the page shows."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1320, "height": 640})
            requests = []
            page.on("request", lambda request: requests.append(request.url))
            page.goto(url)
            page.wait_for_function("document.getElementById('status').textContent.startsWith('Engines')", timeout=60_000)
            upload_error = None
            if bad_file is not None:
                page.set_input_files("#upload", str(bad_file))
                page.wait_for_selector("#status.error", timeout=30_000)
                upload_error = page.text_content("#status")
            page.set_input_files("#upload", str(image))
            page.wait_for_function(f"document.getElementById('status').textContent.startsWith({image.name!r})",
                                   timeout=30_000)
            box = page.locator("#input-canvas").bounding_box()
            page.click("#input-canvas", position={"x": click[0] * box["width"], "y": click[1] * box["height"]})
            page.wait_for_function("document.getElementById('status').textContent.includes('engines')", timeout=120_000)
            panels = page.eval_on_selector_all(".panel.result", """els => els.map(e => ({
                label: e.dataset.label, mask: e.dataset.mask,
                mask_iou: e.querySelector('.mask-iou').textContent,
                predicted_iou: e.querySelector('.predicted-iou').textContent,
                encoder: e.querySelector('.encoder-time').textContent,
                decoder: e.querySelector('.decoder-time').textContent}))""")
            page.screenshot(path=str(screenshot), full_page=True)
            return {"panels": panels, "upload_error": upload_error, "requests": requests}
        finally:
            browser.close()


def test_app_in_a_browser(tmp_path, sample_image_path):
    from conftest import require_programs, require_toolchain

    import edge_sam
    from edge_sam.eval.metrics import mask_iou
    from edge_sam.targets import get_target

    require_toolchain("playwright.sync_api")
    require_toolchain("onnxruntime")
    (chromium,) = require_programs(("chromium",))

    artifact = tmp_path / "onnx-int8"
    get_target("onnx").export(edge_sam.load_model("reference"), "int8", "dynamic-linear", artifact, checkpoint="reference")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    process, url = start_app([str(artifact)])
    try:
        seen = drive(url, sample_image_path, (0.6, 0.6), tmp_path / "app.png", bad_file=bad, chromium=chromium)
    finally:
        process.terminate()
        process.wait(timeout=30)

    assert "cannot decode the uploaded file" in seen["upload_error"]
    assert all(request.startswith(url) or request.startswith("data:") for request in seen["requests"]), seen["requests"]
    reference, exported = seen["panels"]
    assert reference["label"] == "pytorch-fp32" and reference["mask_iou"] == "reference"
    assert "onnx-int8" in exported["label"]
    fp32_mask, int8_mask = decode_mask(reference["mask"]), decode_mask(exported["mask"])
    assert fp32_mask.shape == int8_mask.shape == (603, 1072)
    assert fp32_mask.any() and int8_mask.any()
    assert float(exported["mask_iou"]) == round(mask_iou(int8_mask, fp32_mask), 4)
    for panel in (reference, exported):
        assert 0.0 <= float(panel["predicted_iou"].split()[0]) <= 1.5
        assert re.match(r"[\d.]+ m?s", panel["encoder"]) and re.match(r"[\d.]+ m?s", panel["decoder"])
    assert (tmp_path / "app.png").stat().st_size > 10_000


def main() -> None:
    parser = argparse.ArgumentParser(description="screenshot of edge-sam app after one click")
    parser.add_argument("--artifact", action="append", required=True)
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--image", default=str(Path(__file__).parents[1] / "edge_sam" / "assets" / "dogs.jpg"))
    parser.add_argument("--click", default="0.6,0.6", help="x,y as fractions of the image")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    process, url = start_app(args.artifact, args.checkpoint)
    try:
        seen = drive(url, Path(args.image), tuple(float(v) for v in args.click.split(",")), Path(args.out))
    finally:
        process.terminate()
    for panel in seen["panels"]:
        print(panel["label"], panel["mask_iou"], panel["predicted_iou"], panel["encoder"], panel["decoder"])


if __name__ == "__main__":
    main()


class ApiClient:
    """``edge-sam app``'s server in a thread of this process, on a free port; ``post`` returns
    (status, JSON body) for errors as well."""

    def __init__(self, session) -> None:
        import threading

        from edge_sam.apps.web.server import make_server

        self.server = make_server(session)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def get(self, path: str) -> dict:
        import json
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        import json
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url + path, data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_app_api_everything_and_errors(tmp_path, make_tiny_model):
    """The JSON API without a browser, on a tiny model: segment-everything through every engine,
    and a bad prompt or request as one line with status 400."""
    import json

    from conftest import require_toolchain

    from edge_sam import save_model
    from edge_sam.apps.web.session import AppSession
    from edge_sam.targets import get_target

    require_toolchain("onnxruntime")
    model = make_tiny_model()
    checkpoint = save_model(model, tmp_path / "tiny.safetensors")
    get_target("onnx").export(model, "fp32", None, tmp_path / "onnx-fp32", checkpoint=checkpoint)
    with ApiClient(AppSession(checkpoint, [str(tmp_path / "onnx-fp32")])) as api:
        info = api.get("/api/info")
        assert [e["kind"] for e in info["engines"]] == ["fp32 PyTorch (reference)", "onnx fp32"]
        image = info["images"][1]
        status, everything = api.post("/api/everything", json.dumps({"image": image["id"]}).encode())
        assert status == 200 and [r["label"] for r in everything["results"]][0] == "pytorch-fp32"
        assert all(r["overlay_png"].startswith("data:image/png;base64,") for r in everything["results"])
        status, error = api.post("/api/segment", json.dumps({"image": image["id"], "points": [[9999, 5, 1]]}).encode())
        assert status == 400 and "outside the 256x256 image" in error["error"]
        status, error = api.post("/api/segment", b"{not json")
        assert status == 400 and error["error"].startswith("request body is not JSON")


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of ``width`` x ``height``, all black: about 12 kB per 100 megapixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_upload_size_read_from_the_header():
    """Every format the app takes gives its width and height before it is decoded."""
    from edge_sam.apps.web.session import image_header_size

    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    for ext, params in [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".bmp", []),
                        (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tiff", [])]:
        ok, encoded = cv2.imencode(ext, image, params)
        assert ok and image_header_size(encoded.tobytes()) == (53, 37), (ext, params)
    assert image_header_size(huge_png(12000, 9000)) == (12000, 9000)
    assert image_header_size(b"not an image") is None
    assert image_header_size(b"\x89PNG\r\n\x1a\n\x00\x00") is None


def test_app_refuses_an_upload_over_the_pixel_limit(tmp_path, make_tiny_model):
    """A small file of many pixels (12000x12000 in 18 kB) is refused from its header with one line,
    and the server goes on answering: a normal upload and a click after it work."""
    import json

    from edge_sam import save_model
    from edge_sam.apps.web.session import MAX_UPLOAD_PIXELS, AppSession

    checkpoint = save_model(make_tiny_model(), tmp_path / "tiny.safetensors")
    with ApiClient(AppSession(checkpoint, [])) as api:
        huge = huge_png(12000, 12000)
        assert len(huge) < 1_000_000 and 12000 * 12000 > MAX_UPLOAD_PIXELS
        status, error = api.post("/api/upload?name=huge.png", huge)
        assert status == 400, error
        assert error["error"] == ("image of 12000x12000 (144 megapixels) is over the 50 megapixel limit "
                                  "for uploads: scale it down")
        ok, small = cv2.imencode(".png", np.full((40, 60, 3), 200, np.uint8))
        status, uploaded = api.post("/api/upload?name=small.png", small.tobytes())
        assert status == 200 and (uploaded["width"], uploaded["height"]) == (60, 40)
        status, result = api.post("/api/segment", json.dumps({"image": uploaded["id"], "points": [[30, 20, 1]]}).encode())
        assert status == 200 and len(result["results"]) == 1
