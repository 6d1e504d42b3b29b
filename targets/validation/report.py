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


def table_rows(report: DriftReport) -> list[list[str]]:
    rows = []
    for index, row in enumerate(report.to_dict()["rows"]):
        cells = _cells(row)
        if index == 0:  # the reference compares with itself
            cells.update(mask_iou_mean="reference")
        rows.append([_format(key, cells.get(key)) for _, key in COLUMNS])
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


def svg_plot(report: DriftReport, width: int = 640, height: int = 360) -> str:
    """Mean mask IoU vs fp32 (y) against encoder p50 latency (x, log scale), one dot per runner."""
    points = [(r.summary()["encoder_p50_s"], r.summary()["mask_iou_mean"], r.info["label"]) for r in report.runners]
    return latency_scatter(points, report.reference.summary()["encoder_p50_s"], width=width, height=height)


def latency_scatter(
    points: list[tuple[float | None, float | None, str]],
    reference_s: float | None,
    reference_label: str = "fp32 PyTorch",
    y_label: str = "mask IoU vs fp32 (mean)",
    y_range: tuple[float, float] | None = None,
    width: int = 640,
    height: int = 360,
) -> str:
    """(encoder seconds, y, label) dots, x on a log scale, the reference's latency as a dashed
    line. ``y_range`` defaults to [min(0.9, lowest - 0.01), 1], the range of a mask IoU."""
    points = [p for p in points if p[0] and p[1] is not None]
    if not points:
        return ""
    reference = reference_s
    xs = [p[0] for p in points] + ([reference] if reference else [])
    lo, hi = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y_lo, y_hi = y_range or (min(0.9, min(p[1] for p in points) - 0.01), 1.0)
    left, right, top, bottom = 60, 20, 20, 40

    def px(x: float) -> float:
        return left + (math.log10(x) - lo) / (hi - lo) * (width - left - right)

    def py(y: float) -> float:
        return top + (y_hi - y) / (y_hi - y_lo) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" font-family="sans-serif">',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" fill="none" stroke="#999"/>']
    for tick in (y_lo, (y_hi + y_lo) / 2, y_hi):
        parts.append(f'<text x="{left - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{tick:.3f}</text>')
    for tick in sorted(set(xs)):
        parts.append(f'<text x="{px(tick):.1f}" y="{height - bottom + 14}" text-anchor="middle">{tick:.3g}</text>')
    if reference:
        parts.append(f'<line x1="{px(reference):.1f}" y1="{top}" x2="{px(reference):.1f}" y2="{height - bottom}" stroke="#c33" stroke-dasharray="4"/>')
        parts.append(f'<text x="{px(reference) + 4:.1f}" y="{top + 12}" fill="#c33">{html.escape(reference_label)}</text>')
    for x, y, label in points:
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="5" fill="#1f77b4"/>')
        parts.append(f'<text x="{px(x) + 7:.1f}" y="{py(y) - 7:.1f}">{html.escape(label)}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 6}" text-anchor="middle">encoder latency p50 (s, log scale)</text>')
    parts.append(f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">{html.escape(y_label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(report: DriftReport, overlay_files: dict[str, list[str]]) -> str:
    data = report.to_dict()
    sections = [
        "<h1>Drift report</h1>",
        f"<p>{report.n_images} images from <code>{html.escape(data['source']['path'])}</code>, {report.n_prompts} "
        f"prompts per runner. Machine: {html.escape(str(data['machine']['processor']))}, {data['machine']['cpu_count']} CPUs.</p>",
        _html_table([t for t, _ in COLUMNS], table_rows(report)),
        "<h2>Drift vs latency</h2>",
        svg_plot(report),
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


def write_report(report: DriftReport, out_dir: str | os.PathLike) -> Path:
    """Write the report folder (replacing an earlier report there, never other files)."""
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
        (tmp / "report.html").write_text(html_report(report, overlay_files))
    return out_dir
