"""A benchmark run as a table: the computed columns (ratios against the reference and the
target's own fp32 artifact, achieved GFLOP/s, the decoder's FLOP floor), the conditions of the run
above it, and the files ``edge-sam bench --table`` writes (bench.json, bench.md, bench.html)."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

from edge_sam.targets.benchmarking.roofline import RATE_KEYS, roofline_columns
from edge_sam.targets.benchmarking.run import BenchResult


COLUMNS = (
    ("path", "label"),
    ("target", "target"),
    ("precision", "precision"),
    ("recipe", "recipe"),
    ("px", "img_size"),
    ("size MB", "size_mb"),
    ("enc p50 ms", "encoder_p50_ms"),
    ("enc p90 ms", "encoder_p90_ms"),
    ("enc min ms", "encoder_min_ms"),
    ("x ref eager", "vs_reference"),
    ("x ref, CPU time", "cpu_vs_reference"),
    ("x own fp32", "vs_fp32"),
    ("enc GFLOP/s", "encoder_gflops"),
    ("computes in", "roofline_dtype"),
    ("roofline GFLOP/s", "roofline_gflops"),
    ("of roofline", "roofline_fraction"),
    ("dec p50 ms/prompt", "decoder_p50_ms"),
    ("dec GFLOP/prompt", "decoder_gflop"),
    ("dec / FLOP floor", "decoder_vs_floor"),
    ("batch ms/prompt", "batch_ms"),
    ("batch / single", "batch_vs_single"),
    ("mask IoU mean", "mask_iou_mean"),
    ("mask IoU p5", "mask_iou_p5"),
)
_TEXT_COLUMNS = 4
_DIGITS = {"encoder_p50_ms": 0, "encoder_p90_ms": 0, "encoder_min_ms": 0, "vs_reference": 2, "vs_fp32": 2,
           "cpu_vs_reference": 2,
           "encoder_gflops": 0, "roofline_gflops": 0, "roofline_fraction": 3, "decoder_p50_ms": 1, "decoder_gflop": 2, "decoder_vs_floor": 2, "batch_ms": 1,
           "batch_vs_single": 2, "mask_iou_mean": 4, "mask_iou_p5": 4, "size_mb": 1}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _fp32_twin(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The same target's fp32 row at the same size: the plain one (no export options, eager)
    when there is one, else the first fp32 row of that target."""
    if row["kind"] == "reference":
        return None
    candidates = [r for r in rows if r["kind"] != "reference" and r["target"] == row["target"]
                  and r["precision"] == "fp32" and r["img_size"] == row["img_size"]]
    plain = [r for r in candidates if not r["export_options"] and not r.get("compiled")]
    return (plain or candidates or [None])[0]


def table_rows(result: BenchResult | dict[str, Any]) -> list[dict[str, Any]]:
    """Each path's row of computed columns (seconds -> ms; ratios from the minimum over rounds)."""
    data = result.to_dict() if isinstance(result, BenchResult) else result
    rates = best_rates(data)
    fp32_rate = rates.get(RATE_KEYS["fp32"])
    rows = []
    for path, timing, drift in zip(data["paths"], data["timings"], data["drift"]):
        info = path["info"]
        encoder, decoder, batch = timing["encoder"], timing["decoder"], timing["batch"]
        compiled = bool(path.get("torch_options", {}).get("compile"))
        row = {
            "label": path["label"], "kind": path["kind"], "target": info.get("target", path["group"]),
            "precision": info.get("precision"), "recipe": info.get("recipe"), "scheme": info.get("scheme"),
            "img_size": path["img_size"],
            "export_options": path.get("export_options") or {}, "compiled": compiled,
            "size_mb": info["bytes"] / 1e6 if info.get("bytes") else None,
            "encoder_p50_ms": _ms(statistics.median(encoder)) if encoder else None,
            "encoder_p90_ms": _ms(_percentile(encoder, 90)),
            "encoder_min_ms": _ms(min(encoder, default=None)),
            "encoder_cpu_p50_s": statistics.median(timing["encoder_cpu"]) if timing["encoder_cpu"] else None,
            "encoder_cpu_min_s": min(timing["encoder_cpu"], default=None),
            "encoder_gflops": path["encoder_flops"] / min(encoder) / 1e9 if encoder else None,
            "decoder_p50_ms": _ms(statistics.median(decoder)) if decoder else None,
            "decoder_min_ms": _ms(min(decoder, default=None)),
            "decoder_gflop": path["decoder_flops"] / 1e9,
            "decoder_context_cached": path["decoder_context_cached"],
            "batch_ms": _ms(statistics.median(batch)) if batch else None,
            "batch_min_ms": _ms(min(batch, default=None)),
            "mask_iou_mean": drift.get("mask_iou_mean") if drift else None,
            "mask_iou_p5": drift.get("mask_iou_p5") if drift else None,
        }
        row.update(roofline_columns(row["encoder_gflops"], row["precision"], row["scheme"], rates))
        floor_ms = path["decoder_flops"] / (fp32_rate * 1e9) * 1e3 if fp32_rate else None
        row["decoder_floor_ms"] = floor_ms
        row["decoder_vs_floor"] = row["decoder_min_ms"] / floor_ms if floor_ms and row["decoder_min_ms"] else None
        row["batch_vs_single"] = (row["batch_min_ms"] / row["decoder_min_ms"]
                                  if row["batch_min_ms"] and row["decoder_min_ms"] else None)
        rows.append(row)
    reference = next((r for r in rows if r["kind"] == "reference"), None)
    for row in rows:
        row["vs_reference"] = (reference["encoder_min_ms"] / row["encoder_min_ms"]
                               if reference and row["encoder_min_ms"] else None)
        row["cpu_vs_reference"] = (reference["encoder_cpu_min_s"] / row["encoder_cpu_min_s"]
                                   if reference and row["encoder_cpu_min_s"] else None)
        twin = _fp32_twin(rows, row)
        row["vs_fp32"] = twin["encoder_min_ms"] / row["encoder_min_ms"] if twin and row["encoder_min_ms"] else None
    return rows


def best_rates(result: BenchResult | dict[str, Any]) -> dict[str, float]:
    """The machine's matrix rate per data type: the best round of the run (the least disturbed)."""
    data = result.to_dict() if isinstance(result, BenchResult) else result
    return {key: max(values) for key, values in data["matmul"].items() if values}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _format(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{_DIGITS.get(key, 3)}f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for title, _ in COLUMNS) + " |"
    rule = "| " + " | ".join("---" if i < _TEXT_COLUMNS else "---:" for i in range(len(COLUMNS))) + " |"
    body = ["| " + " | ".join(_format(key, row.get(key)) for _, key in COLUMNS) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def summary_lines(result: BenchResult | dict[str, Any]) -> list[str]:
    """The run's conditions, printed above the table: what a reader needs to trust the numbers."""
    data = result.to_dict() if isinstance(result, BenchResult) else result
    loads = [r["loadavg"][0] for r in data["rounds"]]
    machine, settings = data["machine"], data["settings"]
    rates = best_rates(data)
    measured = ", ".join(f"{dtype} {rates[key]:.0f} {'GOP/s' if dtype == 'int8' else 'GFLOP/s'}"
                         for dtype, key in RATE_KEYS.items() if key in rates)
    return [
        f"Machine: {machine.get('cpu_model') or machine.get('processor')}, {machine.get('cpu_count')} CPUs "
        f"(flags: {machine.get('cpu_flags') or 'none of the tracked SIMD features'}), "
        f"torch {machine.get('torch')}; {settings['threads']} threads per runtime, each runtime in its own process.",
        f"{settings['rounds']} interleaved rounds; ratios from the minimum over rounds; decoder: {settings['decoder_runs']} "
        f"single-prompt calls per round, batch of {settings['batch']} once per round. Checkpoint {settings['checkpoint']}.",
        f"Load average (1 min) during the rounds: {min(loads):.1f} to {max(loads):.1f}"
        + (" (the CPU was shared: absolute times are inflated, ratios less so)" if max(loads) > 1.5 * (machine.get('cpu_count') or 1) / 2 else "")
        + ".",
        f"Rooflines measured in the same run (best round; torch.mm, int8 torch._int_mm, 2048^3): {measured}.",
    ]


def markdown_report(result: BenchResult) -> str:
    rows = table_rows(result)
    notes = ("`x ref eager`: speed-up of the encoder over the reference eager PyTorch encoder (materialized attention); "
             "`x ref, CPU time`: the same from the processes' CPU time (all threads), steadier than wall time on a "
             "shared CPU but it also counts threads that spin while waiting; "
             "`x own fp32`: over the same target's fp32 artifact. `computes in`: the data type of the path's matrix "
             "products (static or dynamic INT8 rows are held to the int8 rate though their attention products stay "
             "float; weight-only INT8 computes in float); `of roofline`: enc GFLOP/s over that type's measured rate, "
             "so a row far below 1 is where the next speed is. `dec / FLOP floor`: decoder time per prompt over "
             "(its FLOPs / the fp32 matmul rate); PyTorch rows reuse the decoder's per-image context, so their FLOPs "
             "per prompt are lower. `batch / single`: per-prompt time in a batch over one prompt alone. Mask IoU is "
             "against the fp32 PyTorch model at the path's input size (the validate command's measure).")
    return "\n".join(["# Benchmark", "", *summary_lines(result), "", markdown_table(rows), "", notes]) + "\n"


def html_report(result: BenchResult) -> str:
    import html

    from edge_sam.targets.validation.report import latency_scatter

    rows = table_rows(result)
    reference = next((r for r in rows if r["kind"] == "reference"), None)
    ref_s = reference["encoder_p50_ms"] / 1e3 if reference and reference["encoder_p50_ms"] else None
    with_drift = any(r["mask_iou_mean"] is not None for r in rows)
    if with_drift:
        points = [(r["encoder_p50_ms"] / 1e3 if r["encoder_p50_ms"] else None, r["mask_iou_mean"], r["label"]) for r in rows
                  if r["kind"] != "reference"]
        plot = latency_scatter(points, ref_s, reference_label="reference eager")
    else:
        points = [(r["encoder_p50_ms"] / 1e3 if r["encoder_p50_ms"] else None, r["vs_reference"], r["label"]) for r in rows]
        top = max([p[1] for p in points if p[1]] or [1.0]) * 1.1
        plot = latency_scatter(points, ref_s, reference_label="reference eager", y_label="encoder speed-up vs reference",
                               y_range=(0.0, top))
    head = "".join(f"<th>{html.escape(t)}</th>" for t, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(k, r.get(k)))}</td>" for _, k in COLUMNS) + "</tr>"
                   for r in rows)
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(result))
    style = ("body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edge_sam benchmark</title><style>{style}</style>"
            f"</head><body><h1>Benchmark</h1>{lines}<table><tr>{head}</tr>{body}</table>"
            f"<h2>{'Drift' if with_drift else 'Speed-up'} vs latency</h2>{plot}</body></html>\n")


BENCH_FILES = ("bench.json", "bench.md", "bench.html")


def write_bench(result: BenchResult, out_dir: str | os.PathLike) -> list[Path]:
    """bench.json (raw timings and the computed rows), bench.md and bench.html in ``out_dir``;
    each file appears whole or not at all, and other files there (the exported artifacts, the
    workers' logs) are left alone."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**result.to_dict(), "rows": table_rows(result)}
    contents = (json.dumps(payload, indent=2, default=str) + "\n", markdown_report(result), html_report(result))
    written = []
    for name, text in zip(BENCH_FILES, contents):
        partial = out_dir / f".{name}.partial"
        partial.write_text(text)
        os.replace(partial, out_dir / name)
        written.append(out_dir / name)
    return written
