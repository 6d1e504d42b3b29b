"""The drift report as files: report.json (everything), report.md (the table), report.html
(the table, a drift-vs-latency plot, per-layer tables and the worst prompts next to fp32).

The plot is an SVG written here rather than with matplotlib, so a report needs no plotting
package on the device that validates.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.staging import staged_dir

from edge_sam.targets.validation.drift import DriftReport

LAYER_ROWS = 12
COLUMNS = (
    ("artifact", "label"),
    ("precision", "precision"),
    ("recipe", "recipe"),
    ("device", "device"),
    ("size MB", "size_mb"),
    ("emb cos", "embedding_cosine_mean"),
    ("emb SQNR dB", "embedding_sqnr_db_mean"),
    ("mask IoU mean", "mask_iou_mean"),
    ("mask IoU p5", "mask_iou_p5"),
    ("mask IoU worst", "mask_iou_worst"),
    ("same top mask", "top_choice_agreement"),
    ("|dIoU pred| mean", "iou_prediction_delta_mean"),
    ("GT mIoU box", "gt_box"),
    ("GT mIoU 1-click", "gt_click"),
    ("enc p50 s", "encoder_p50_s"),
    ("enc p90 s", "encoder_p90_s"),
    ("dec p50 ms", "decoder_p50_ms"),
    ("dec p90 ms", "decoder_p90_ms"),
    ("peak RSS MB", "peak_mb"),
    ("runner RSS MB", "runner_mb"),
    ("GPU peak MB", "gpu_peak_mb"),
)
_TEXT_COLUMNS = 4  # the leading columns that hold text (left-aligned in Markdown)
_DIGITS = {"embedding_cosine_mean": 6, "mask_iou_mean": 4, "mask_iou_p5": 4, "mask_iou_worst": 4,
           "top_choice_agreement": 3, "iou_prediction_delta_mean": 4, "gt_box": 4, "gt_click": 4,
           "encoder_p50_s": 3, "encoder_p90_s": 3}


def _cells(row: dict[str, Any]) -> dict[str, Any]:
    """A summary row flattened to the table's columns (ms, MB, GT modes)."""
    memory = row.get("memory") or {}
    gt = row.get("gt_miou") or {}
    return {
        **row,
        "size_mb": row["bytes"] / 1e6 if row.get("bytes") else None,
        "gt_box": gt.get("box"),
        "gt_click": gt.get("1-click"),
        "decoder_p50_ms": row["decoder_p50_s"] * 1e3 if row.get("decoder_p50_s") is not None else None,
        "decoder_p90_ms": row["decoder_p90_s"] * 1e3 if row.get("decoder_p90_s") is not None else None,
        "peak_mb": memory.get("peak_mb"),
        "runner_mb": memory.get("runner_mb"),
        "gpu_peak_mb": memory.get("gpu_peak_mb"),
    }


def _format(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "exact" if value > 0 else "-inf"
        return f"{value:.{_DIGITS.get(key, 1)}f}"
    return str(value)


_LATENCY_KEYS = {"encoder_p50_s", "encoder_p90_s", "decoder_p50_ms", "decoder_p90_ms"}


def table_rows(report: DriftReport) -> list[list[str]]:
    """The table's cells; an emulated device's latencies say so (an emulator's speed, not a device's)."""
    rows = []
    for index, row in enumerate(report.to_dict()["rows"]):
        cells = _cells(row)
        if index == 0:  # the reference compares with itself
            cells.update(mask_iou_mean="reference")
        marked = row.get("emulated")
        rows.append([_format(key, cells.get(key)) + (" (emulated)" if marked and key in _LATENCY_KEYS and cells.get(key) is not None else "")
                     for _, key in COLUMNS])
    return rows


def markdown_table(report: DriftReport) -> str:
    header = "| " + " | ".join(title for title, _ in COLUMNS) + " |"
    rule = "| " + " | ".join("---" if i < _TEXT_COLUMNS else "---:" for i in range(len(COLUMNS))) + " |"
    return "\n".join([header, rule, *("| " + " | ".join(r) + " |" for r in table_rows(report))])


def layer_table(rows: list[dict], limit: int = LAYER_ROWS) -> list[list[str]]:
    """The nodes that lose the most SQNR (largest drop first)."""
    ranked = sorted(rows, key=lambda r: -r["drop_db"] if math.isfinite(r["drop_db"]) else 0.0)[:limit]
    return [[r.get("module") or r["node"], r["op_type"], _format("", r["sqnr_db"]), _format("", r["input_sqnr_db"]),
             _format("", r["drop_db"])] for r in ranked]


LAYER_COLUMNS = ("layer", "op", "output SQNR dB", "input SQNR dB", "drop dB")


def markdown_report(report: DriftReport) -> str:
    data = report.to_dict()
    lines = [
        "# Drift report",
        "",
        f"{report.n_images} images from {data['source']['path']} ({data['source']['kind']}), "
        f"{report.n_prompts} prompts per runner; reference: {report.reference.info['label']}.",
        f"Machine: {data['machine']['processor']}, {data['machine']['cpu_count']} CPUs, {data['machine']['platform']}.",
        "",
        markdown_table(report),
        "",
        "Mask IoU compares each runner's mask with the fp32 mask for the output fp32 ranks first, at image size. "
        "Peak RSS is measured in a fresh subprocess that loads only that runner (runner RSS = peak minus the "
        "process's baseline after imports).",
    ]
    for label, rows in data["layers"].items():
        lines += ["", f"## Per-layer drift: {label}", "", "| " + " | ".join(LAYER_COLUMNS) + " |",
                  "| --- | --- | ---: | ---: | ---: |"]
        lines += ["| " + " | ".join(r) + " |" for r in layer_table(rows)]
    return "\n".join(lines) + "\n"


def svg_plot(report: DriftReport, width: int = 640, height: int = 360, *, gate: float | None = None,
             shipped: Collection[str] = ()) -> str:
    """Mean mask IoU vs fp32 (y) against encoder p50 latency (x), one numbered dot per runner.

    ``gate`` (a mean mask IoU) is drawn as a horizontal line; ``shipped`` names artifact folders
    (e.g. "onnx-int8") whose dots get a ring, so the chosen artifact of each target stands out."""
    points = [(r.summary()["encoder_p50_s"], r.summary()["mask_iou_mean"], r.info["label"]) for r in report.runners]
    shipped = set(shipped)
    ringed = {r.info["label"] for r in report.runners if r.artifact_dir and Path(r.artifact_dir).name in shipped}
    return latency_scatter(points, report.reference.summary()["encoder_p50_s"], width=width, height=height,
                           gate=gate, shipped=ringed)


_CHAR_PX = 6.8  # a generous width of one 12 px sans-serif character: layout boxes err on the roomy side
_LINE_PX = 16
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
_WIDE_RANGE = 4.0  # latencies spanning more than this factor get a log axis


@dataclass(frozen=True)
class _Box:
    """An axis-aligned box in SVG pixels, to keep labels off each other and off the dots."""

    x0: float
    y0: float
    x1: float
    y1: float

    def hits(self, other: _Box, gap: float = 2.0) -> bool:
        return not (self.x1 + gap <= other.x0 or other.x1 + gap <= self.x0 or
                    self.y1 + gap <= other.y0 or other.y1 + gap <= self.y0)


def _text_box(x: float, y: float, text: str, anchor: str = "start") -> _Box:
    """The box of 12 px text whose baseline starts (or ends, or centres) at (x, y)."""
    w = len(text) * _CHAR_PX
    x0 = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
    return _Box(x0, y - 11, x0 + w, y + 3)


def _nice_step(span: float, count: int) -> float:
    """The 1-2-2.5-5 x 10^k step that cuts ``span`` into about ``count`` parts."""
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)


def _linear_ticks(lo: float, hi: float, count: int = 5) -> tuple[list[float], int]:
    """Round ticks inside [lo, hi] and the decimals that print them all alike."""
    step = _nice_step(hi - lo, count)
    ticks = [round(k * step, 12) for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9) + (1 if round(step / 10 ** math.floor(math.log10(step)), 6) == 2.5 else 0))
    return ticks, decimals


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 style ticks inside [lo, hi]: the sparsest set that still gives four."""
    sets = ((1,), (1, 2, 5), (1, 2, 3, 5), (1, 1.5, 2, 3, 4, 5, 6, 8))
    found: list[float] = []
    for mantissas in sets:
        found = [round(m * 10.0 ** k, 12) for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in mantissas if lo <= m * 10.0 ** k <= hi]
        if len(found) >= 4:
            break
    return found


def _milliseconds(seconds: float) -> str:
    """Three significant figures or more, in ms: 412, 41.2, 4.12."""
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def _group(label: str) -> str:
    """The target a label starts with ("onnx-int8-... (onnx-int8)" -> "onnx"): one colour per target."""
    return label.split(" ")[0].split("-")[0]


def _place_number(x: float, y: float, text: str, taken: list[_Box], area: _Box) -> tuple[float, float, bool]:
    """Where a dot's number goes: the nearest spot around (x, y) that hits no dot or label and
    stays in the plot (falling back to the least crowded one); True when it needs a leader line."""
    best: tuple[int, float, float, float] | None = None
    for radius in (11, 17, 24, 32, 42, 54, 68, 84):
        for degrees in (-45, 0, -90, 45, -135, 180, 90, 135, -22, 22, -68, -112, 68, 112, -158, 158):
            cx = x + radius * math.cos(math.radians(degrees))
            cy = y + radius * math.sin(math.radians(degrees)) + 4  # baseline sits 4 px under the centre
            box = _text_box(cx, cy, text, "middle")
            if box.x0 < area.x0 or box.x1 > area.x1 or box.y0 < area.y0 or box.y1 > area.y1:
                continue
            crowd = sum(box.hits(other) for other in taken)
            if crowd == 0:
                return cx, cy, radius > 11
            if best is None or crowd < best[0]:
                best = (crowd, cx, cy, radius)
    if best is None:  # a plot too small for any spot: beside the dot
        return x + 11, y + 4, False
    return best[1], best[2], best[3] > 11


def latency_scatter(
    points: list[tuple[float | None, float | None, str]],
    reference_s: float | None,
    reference_label: str = "fp32 PyTorch",
    y_label: str = "mask IoU vs fp32 (mean)",
    y_range: tuple[float, float] | None = None,
    width: int = 640,
    height: int = 360,
    *,
    gate: float | None = None,
    shipped: Collection[str] = (),
) -> str:
    """(encoder seconds, y, label) as numbered dots keyed by a legend, so long, close labels never
    pile up; x is log-scaled only when latencies span more than a factor of 4 (else close
    latencies would bunch), the reference's latency is a dashed vertical line, ``gate`` a
    horizontal one, and dots whose label is in ``shipped`` get a ring. ``width`` x ``height`` is
    the plot; the legend is added on the right. ``y_range`` defaults to
    [min(0.9, lowest - 0.01, gate - 0.01), 1], the range of a mask IoU."""
    points = [p for p in points if p[0] and p[1] is not None]
    if not points:
        return ""
    reference = reference_s
    xs = [p[0] for p in points] + ([reference] if reference else [])
    x_min, x_max = min(xs), max(xs)
    log_x = x_max / x_min > _WIDE_RANGE
    if log_x:
        lo, hi = math.log10(x_min) - 0.1, math.log10(x_max) + 0.1
    else:
        pad = (x_max - x_min) * 0.08 or x_max * 0.1
        lo, hi = max(x_min - pad, 0.0), x_max + pad
    y_lo, y_hi = y_range or (min(0.9, min(p[1] for p in points) - 0.01, *([gate - 0.01] if gate is not None else [])), 1.0)
    scale, unit = (1.0, "s") if x_min >= 1 else (1e3, "ms")  # the axis's; the legend is always in ms
    left, right, top, bottom = 64, 16, 20, 44
    height = max(height, int(top + 12 + (len(points) + 3.5) * _LINE_PX + 8))  # the legend's rows and keys fit
    area = _Box(left, top, width - right, height - bottom)

    def px(x: float) -> float:
        return left + ((math.log10(x) if log_x else x) - lo) / (hi - lo) * (area.x1 - area.x0)

    y_pad = (y_hi - y_lo) * 0.05  # headroom, so dots at IoU 1 have room for their numbers

    def py(y: float) -> float:
        return top + (y_hi + y_pad - y) / (y_hi - y_lo + 2 * y_pad) * (area.y1 - area.y0)

    x_texts = [_milliseconds(x) for x, _, _ in points]
    y_texts = [f"{y:.4f}" if abs(y) < 10 else f"{y:.1f}" for _, y, _ in points]
    y_head = " ".join(y_label.split()[:2])  # "mask IoU", "encoder speed-up"
    legend_x = width + 12  # columns: dot, number, latency, y, then the label (its width matters only at the end)
    x_col = legend_x + 44 + max(len(t) for t in [*x_texts, "enc ms"]) * _CHAR_PX
    y_col = x_col + (max(len(t) for t in [*y_texts, y_head]) + 2) * _CHAR_PX
    label_x = y_col + 2 * _CHAR_PX
    total_width = int(label_x + max(len(t) for t in [*(p[2] for p in points), "gate: " + y_head + " >= 0.00"]) * _CHAR_PX)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="latency-scatter" width="{total_width}" height="{height}" '
             f'font-size="12" font-family="sans-serif">',
             f'<rect x="{left}" y="{top}" width="{area.x1 - area.x0}" height="{area.y1 - area.y0}" fill="none" stroke="#999"/>']
    y_ticks, y_decimals = _linear_ticks(y_lo, y_hi)
    for tick in y_ticks:
        parts.append(f'<line x1="{left}" y1="{py(tick):.1f}" x2="{area.x1}" y2="{py(tick):.1f}" stroke="#eee"/>')
        parts.append(f'<text class="y-tick" x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.{y_decimals}f}</text>')
    if log_x:
        x_ticks = [(t, f"{t * scale:g}") for t in _log_ticks(10 ** lo, 10 ** hi)]
    else:
        values, decimals = _linear_ticks(lo * scale, hi * scale, count=6)
        x_ticks = [(t / scale, f"{t:.{decimals}f}") for t in values]
    kept: list[_Box] = []
    for tick, text in x_ticks:  # a tick whose label would touch the previous one is dropped
        box = _text_box(px(tick), area.y1 + 16, text, "middle")
        if box.x0 < 0 or (kept and box.hits(kept[-1], gap=8)):
            continue
        kept.append(box)
        parts.append(f'<line x1="{px(tick):.1f}" y1="{top}" x2="{px(tick):.1f}" y2="{area.y1}" stroke="#eee"/>')
        parts.append(f'<text class="x-tick" x="{px(tick):.1f}" y="{area.y1 + 16}" text-anchor="middle">{text}</text>')
    taken: list[_Box] = [_Box(px(x) - 6, py(y) - 6, px(x) + 6, py(y) + 6) for x, y, _ in points]
    if reference:
        rx = px(reference)
        anchor = "start" if rx < (left + area.x1) / 2 else "end"
        tx = rx + 4 if anchor == "start" else rx - 4
        taken.append(_text_box(tx, top + 14, reference_label, anchor))
        parts.append(f'<line class="reference" x1="{rx:.1f}" y1="{top}" x2="{rx:.1f}" y2="{area.y1}" stroke="#c33" stroke-dasharray="4"/>')
        parts.append(f'<text x="{tx:.1f}" y="{top + 14}" fill="#c33" text-anchor="{anchor}">{html.escape(reference_label)}</text>')
    if gate is not None:
        gy, text = py(gate), f"gate {gate:g}"
        gate_box = _text_box(area.x1 - 4, gy - 4, text, "end")
        if any(gate_box.hits(other) for other in taken):  # under the line when a dot sits on its label
            gate_box = _text_box(area.x1 - 4, gy + 14, text, "end")
        taken.append(gate_box)
        parts.append(f'<line class="gate" x1="{left}" y1="{gy:.1f}" x2="{area.x1}" y2="{gy:.1f}" stroke="#333" stroke-dasharray="6 3"/>')
        parts.append(f'<text x="{gate_box.x1:.1f}" y="{gate_box.y1 - 3:.1f}" text-anchor="end" fill="#333">{text}</text>')
    groups = list(dict.fromkeys(_group(label) for _, _, label in points))
    colour = {g: _PALETTE[i % len(_PALETTE)] for i, g in enumerate(groups)}
    numbers = []
    for number, (x, y, label) in enumerate(points, 1):
        cx, cy = px(x), py(y)
        tip = html.escape(f"{number}. {label}: {x_texts[number - 1]} ms, {y_texts[number - 1]}")
        fill = colour[_group(label)]
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{fill}" fill-opacity="0.85"><title>{tip}</title></circle>')
        if label in shipped:
            parts.append(f'<circle class="shipped" cx="{cx:.1f}" cy="{cy:.1f}" r="9" fill="none" stroke="#000" stroke-width="2"/>')
        tx, ty, leader = _place_number(cx, cy, str(number), taken, area)
        taken.append(_text_box(tx, ty, str(number), "middle"))
        if leader:
            parts.append(f'<line x1="{cx:.1f}" y1="{cy:.1f}" x2="{tx:.1f}" y2="{ty - 4:.1f}" stroke="#aaa" stroke-width="0.8"/>')
        numbers.append(f'<text class="point-number" x="{tx:.1f}" y="{ty:.1f}" text-anchor="middle" font-weight="bold" '
                       f'fill="{fill}">{number}</text>')
    parts += numbers  # numbers over every dot and leader line
    x_title = f"encoder latency p50 ({unit}{', log scale' if log_x else ''})"
    parts.append(f'<text x="{(left + area.x1) / 2}" y="{height - 8}" text-anchor="middle">{x_title}</text>')
    parts.append(f'<text x="16" y="{(top + area.y1) / 2}" transform="rotate(-90 16 {(top + area.y1) / 2})" '
                 f'text-anchor="middle">{html.escape(y_label)}</text>')
    head = f'<text y="{top + 12}" font-weight="bold"'
    parts.append(f'{head} x="{label_x}">artifact</text>{head} x="{legend_x + 36}" text-anchor="end">#</text>'
                 f'{head} x="{x_col:.0f}" text-anchor="end">enc ms</text>'
                 f'{head} x="{y_col:.0f}" text-anchor="end">{html.escape(y_head)}</text>')
    for number, ((_, _, label), x_text, y_text) in enumerate(zip(points, x_texts, y_texts), 1):
        ly, fill, bold = top + 12 + number * _LINE_PX, colour[_group(label)], label in shipped
        ring = f'<circle cx="{legend_x + 6}" cy="{ly - 4}" r="8" fill="none" stroke="#000" stroke-width="2"/>' if bold else ""
        parts.append(f'<g class="legend-row"><circle cx="{legend_x + 6}" cy="{ly - 4}" r="5" fill="{fill}"/>{ring}'
                     f'<text x="{legend_x + 36}" y="{ly}" text-anchor="end" font-weight="bold" fill="{fill}">{number}</text>'
                     f'<text x="{label_x}" y="{ly}" font-weight="{"bold" if bold else "normal"}">{html.escape(label)}</text>'
                     f'<text x="{x_col:.0f}" y="{ly}" text-anchor="end">{x_text}</text>'
                     f'<text x="{y_col:.0f}" y="{ly}" text-anchor="end">{y_text}</text></g>')
    key_y = top + 12 + (len(points) + 1.5) * _LINE_PX
    if any(label in shipped for _, _, label in points):
        parts.append(f'<circle cx="{legend_x + 6}" cy="{key_y - 4}" r="8" fill="none" stroke="#000" stroke-width="2"/>'
                     f'<text x="{legend_x + 44}" y="{key_y}">shipped (ring)</text>')
        key_y += _LINE_PX
    if gate is not None:
        parts.append(f'<line x1="{legend_x - 4}" y1="{key_y - 4}" x2="{legend_x + 30}" y2="{key_y - 4}" stroke="#333" '
                     f'stroke-dasharray="6 3"/><text x="{legend_x + 44}" y="{key_y}">gate: {html.escape(y_head)} &#8805; {gate:g}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(report: DriftReport, overlay_files: dict[str, list[str]], *, gate: float | None = None,
                shipped: Collection[str] = ()) -> str:
    """report.html; ``gate`` and ``shipped`` mark the plot (see :func:`svg_plot`)."""
    data = report.to_dict()
    sections = [
        "<h1>Drift report</h1>",
        f"<p>{report.n_images} images from <code>{html.escape(data['source']['path'])}</code>, {report.n_prompts} "
        f"prompts per runner. Machine: {html.escape(str(data['machine']['processor']))}, {data['machine']['cpu_count']} CPUs.</p>",
        _html_table([t for t, _ in COLUMNS], table_rows(report)),
        "<h2>Drift vs latency</h2>",
        svg_plot(report, gate=gate, shipped=shipped),
    ]
    for label, rows in data["layers"].items():
        sections += [f"<h2>Per-layer drift: {html.escape(label)}</h2>", _html_table(LAYER_COLUMNS, layer_table(rows))]
    sections.append("<h2>Worst prompts (fp32 left, artifact right)</h2>")
    for runner in report.runners:
        label = runner.info["label"]
        sections.append(f"<h3>{html.escape(label)}</h3>")
        for worst, name in zip(runner.worst_prompts(), overlay_files.get(label, [])):
            encoded = base64.b64encode(worst.overlay_png).decode()
            sections.append(
                f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(name)}"/>'
                f"<figcaption>{html.escape(worst.image_id)}: {worst.prompt['kind']} {worst.prompt['points']}, "
                f"mask IoU {worst.mask_iou:.4f}</figcaption></figure>"
            )
    style = ("body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}figure{display:inline-block;margin:6px}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>edge_sam drift report</title><style>{style}</style></head><body>{''.join(sections)}</body></html>\n"


def _json_safe(value: Any) -> Any:
    """JSON has no infinity: an exact match (SQNR = inf) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(report: DriftReport, out_dir: str | os.PathLike, *, gate: float | None = None,
                 shipped: Collection[str] = ()) -> Path:
    """Write the report folder (replacing an earlier report there, never other files).

    ``gate`` (the mean mask IoU an artifact must reach) and ``shipped`` (artifact folder names,
    e.g. "onnx-int8") only mark the HTML plot: a horizontal gate line and a ring on what ships."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "report.json").is_file():
        raise EdgeSamError(f"{out_dir} exists and does not hold an earlier report; choose an empty or new folder")
    with staged_dir(out_dir, overwrite=True) as tmp:
        overlay_files: dict[str, list[str]] = {}
        for index, runner in enumerate(report.runners):
            names = []
            for rank, worst in enumerate(runner.worst_prompts()):
                name = f"worst_{index}_{rank}.png"
                (tmp / name).write_bytes(worst.overlay_png)
                names.append(name)
            overlay_files[runner.info["label"]] = names
        (tmp / "report.json").write_text(json.dumps(_json_safe(report.to_dict()), indent=2) + "\n")
        (tmp / "report.md").write_text(markdown_report(report))
        (tmp / "report.html").write_text(html_report(report, overlay_files, gate=gate, shipped=shipped))
    return out_dir
