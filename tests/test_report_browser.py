"""The drift report's drift-vs-latency plot, read in a real browser (Debian's headless Chromium via
Playwright, like tests/test_app_browser.py): twelve artifacts with close latencies, the case whose
labels used to pile up, must give non-overlapping point numbers and tick labels, a gate line and a
ring on each shipped artifact. The report is built from made-up measurements, so no model runs.

Run as a script it writes the report and a screenshot of the plot for a look:
``python tests/test_report_browser.py --out /tmp/report_plot``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_sam.targets.validation.drift import DriftReport, RunnerDrift
from edge_sam.targets.validation.report import latency_scatter, write_report

TARGETS = (("onnx", "static-", 0.412), ("tflite", "", 0.418), ("executorch", "xnnpack-", 0.409), ("coreml", "", 0.421))
SHIPPED = ("onnx-int8", "tflite-fp16", "executorch-fp16", "coreml-fp16")
GATE = 0.97


def _runner(label: str, folder: str, encoder_s: float, mask_iou: float) -> RunnerDrift:
    return RunnerDrift({"label": f"{label} ({folder})", "target": label.split("-")[0]}, f"/out/{folder}",
                       encoder_s=[encoder_s] * 3, mask_iou=[mask_iou] * 3)


def crowded_report() -> DriftReport:
    """4 targets x fp32/fp16/int8 within a few ms of each other (artifact labels as validate writes
    them); only onnx's int8 passes the gate, so it ships, and the others ship fp16."""
    runners = []
    for index, (target, variant, encoder_s) in enumerate(TARGETS):
        runners += [_runner(f"{target}-{variant}fp32", f"{target}-fp32", encoder_s, 1.0),
                    _runner(f"{target}-{variant}fp16", f"{target}-fp16", encoder_s - 0.004, 0.9993),
                    _runner(f"{target}-{variant}int8-dynamic-linear", f"{target}-int8", encoder_s - 0.07, 0.975 - 0.006 * index)]
    reference = RunnerDrift({"label": "pytorch-fp32"}, None, encoder_s=[0.45] * 3, mask_iou=[1.0] * 3)
    return DriftReport({"path": "synthetic", "kind": "folder"}, 1, 3, reference, runners,
                       {"processor": "x86_64", "cpu_count": 2, "platform": "linux"}, {})


def read_plot(report_html: Path, screenshot: Path, chromium: str) -> dict:
    """Open report.html, screenshot the plot, and return the boxes of its numbers and ticks and
    the counts of its gate lines and shipped rings."""
    from playwright.sync_api import sync_playwright

    from test_app_browser import CHROMIUM_ARGS

    boxes = """els => els.map(e => { const r = e.getBoundingClientRect();
                                   return {text: e.textContent, x0: r.left, y0: r.top, x1: r.right, y1: r.bottom}; })"""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(report_html.resolve().as_uri())
            plot = page.locator("svg.latency-scatter")
            plot.screenshot(path=str(screenshot))
            return {
                "size": plot.bounding_box(),
                "numbers": page.eval_on_selector_all("svg.latency-scatter .point-number", boxes),
                "x_ticks": page.eval_on_selector_all("svg.latency-scatter .x-tick", boxes),
                "gates": page.locator("svg.latency-scatter line.gate").count(),
                "rings": page.locator("svg.latency-scatter circle.shipped").count(),
                "legend": page.eval_on_selector_all("svg.latency-scatter .legend-row", "els => els.map(e => e.textContent)"),
            }
        finally:
            browser.close()


def _overlapping(boxes: list[dict]) -> list[tuple[str, str]]:
    return [(a["text"], b["text"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]]


def test_crowded_plot_reads_at_a_glance(tmp_path):
    from conftest import require_programs, require_toolchain

    require_toolchain("playwright.sync_api")
    (chromium,) = require_programs(("chromium",))
    out = write_report(crowded_report(), tmp_path / "report", gate=GATE, shipped=SHIPPED)
    seen = read_plot(out / "report.html", tmp_path / "plot.png", chromium)

    assert seen["size"]["width"] > 600 and seen["size"]["height"] > 300
    assert sorted(int(n["text"]) for n in seen["numbers"]) == list(range(1, 13))
    assert _overlapping(seen["numbers"]) == []
    assert 3 <= len(seen["x_ticks"]) <= 10 and _overlapping(seen["x_ticks"]) == []
    assert seen["gates"] == 1 and seen["rings"] == len(SHIPPED)
    assert len(seen["legend"]) == 12 and "onnx-static-int8-dynamic-linear (onnx-int8)" in seen["legend"][2]
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_plot_without_gate_or_shipped_and_on_a_log_axis():
    """Existing callers pass neither: no gate line, no ring. A 50x latency range gets a log axis
    with round ticks."""
    points = [(0.41, 1.0, "onnx-fp32 (onnx-fp32)"), (0.012, 0.9991, "tensorrt-fp16 (tensorrt-fp16)"),
              (0.008, 0.951, "tensorrt-int8 (tensorrt-int8)")]
    svg = latency_scatter(points, 1.3)
    assert 'class="gate"' not in svg and 'class="shipped"' not in svg and "log scale" in svg
    ticks = [line.split(">")[1].split("<")[0] for line in svg.splitlines() if 'class="x-tick"' in line]
    assert ticks == ["10", "20", "50", "100", "200", "500", "1000"]
    close = latency_scatter([(0.41, 1.0, "a"), (0.43, 0.99, "b")], 0.45, gate=0.95, shipped={"b"})
    assert "log scale" not in close and close.count('class="gate"') == 1 and close.count('class="shipped"') == 1


def main() -> None:
    parser = argparse.ArgumentParser(description="the crowded drift report and a screenshot of its plot")
    parser.add_argument("--out", required=True)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out = write_report(crowded_report(), Path(args.out) / "report", gate=GATE, shipped=SHIPPED)
    seen = read_plot(out / "report.html", Path(args.out) / "plot.png", args.chromium)
    print(f"{Path(args.out) / 'plot.png'}: overlapping numbers {_overlapping(seen['numbers'])}, "
          f"x ticks {[t['text'] for t in seen['x_ticks']]}")


if __name__ == "__main__":
    main()
