"""Views: how a record in docs/results/ reads in the docs (benchmarks/docs_tables.py puts them there).

A view is a function from a record (the JSON as loaded) to Markdown: table rows or a phrase.
The docs name a view by its function's name with dashes (``deploy_ship_table`` ->
``deploy-ship-table``). Formats live here, once, so a number reads the same wherever it is quoted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

Record = dict[str, Any]
VIEWS: dict[str, Callable[[Record], str]] = {}

TARGET_NAMES = {"coreml": "Core ML", "executorch": "ExecuTorch", "onnx": "ONNX", "tflite": "LiteRT"}


def view(function: Callable[[Record], str]) -> Callable[[Record], str]:
    VIEWS[function.__name__.replace("_", "-")] = function
    return function


def table(header: Iterable[str], align: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """A Markdown table; ``align`` is ``l`` or ``r`` per column."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def sci(value: float) -> str:
    """``3.2e-6``: two significant digits, the exponent without padding."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def span(values: Iterable[float], digits: int = 3) -> str:
    """``low-high`` of the values, as the docs quote a range."""
    values = sorted(values)
    return f"{values[0]:.{digits}f}-{values[-1]:.{digits}f}"


# -- edge-sam deploy (docs/results/deploy_*.json) ---------------------------------------------------
def _held_out(record: Record, artifact: str) -> Record:
    return next(row for row in record["held_out_rows"] if row["artifact"] == artifact)


@view
def deploy_ship_table(record: Record) -> str:
    """What deploy shipped per target, with its held-out numbers (the summary.md table)."""
    rows = []
    for target, ship in record["deploy"]["ship"].items():  # in the order deploy wrote them
        row = _held_out(record, ship["artifact"])
        rows.append([target, ship["artifact"], f"{row['mask_iou_mean']:.4f}", f"{row['mask_iou_p5']:.4f}",
                     f"{row['encoder_p50_s']:.3f}", f"{row['decoder_p50_s'] * 1e3:.1f}", f"{row['bytes'] / 1e6:.1f}",
                     ship["why"]])
    return table(["target", "ship", "mask IoU mean", "p5", "encoder p50 s", "decoder p50 ms", "size MB", "why"],
                 "llrrrrrl", rows)


@view
def deploy_static_int8(record: Record) -> str:
    """The full static INT8 rung on every target, over the search images."""
    static = [rung for ladder in record["deploy"]["ladders"].values() for rung in ladder if rung["rung"] == "static"]
    return (f"{span(r['search_mask_iou_mean'] for r in static)} mean, "
            f"{span(r['search_mask_iou_p5'] for r in static)} p5")


@view
def unseen_photos(record: Record) -> str:
    """Each shipped INT8 artifact on photos nothing chose it on (benchmarks/unseen_photos.py)."""
    return ", ".join(f"{TARGET_NAMES[row['artifact'].split('-')[0]]} {row['mask_iou_mean']:.3f} / {row['mask_iou_p5']:.3f}"
                     for row in record["rows"])


def _run_cost(record: Record) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS GB) of a deploy run: ``measured`` by benchmarks/deploy_run.py, or
    ``time_v`` in the records taken with ``/usr/bin/time -v`` before that script existed."""
    if "measured" in record:
        cost = record["measured"]
        return cost["wall_s"], cost["cpu_s"], cost["peak_rss_gb"]
    minutes, seconds = record["time_v"]["wall"].split(":")
    return 60 * int(minutes) + float(seconds), record["time_v"]["cpu_s"], record["time_v"]["peak_rss_gb"]


@view
def deploy_run(record: Record) -> str:
    """The run's cost (wall, CPU, peak RSS), and how many steps it took."""
    wall, cpu, peak = _run_cost(record)
    minutes, seconds = divmod(round(wall), 60)
    return (f"{minutes} min {seconds} s wall, {cpu:.0f} s of CPU, "
            f"peak RSS {peak:.2f} GB, {len(record['deploy']['steps'])} steps")


DEPLOY_LADDER_NAMES = {"coreml": "Core ML (host executor)", "executorch": "ExecuTorch XNNPACK", "onnx": "ONNX Runtime",
                       "tflite": "LiteRT XNNPACK"}


def _mixed_attempts(record: Record, target: str) -> list[tuple[str, str]]:
    """(float layers, runtime mean / p5 on the search images) of each mixed recipe deploy built, from its step lines."""
    steps = record["deploy"]["steps"]
    searches = [re.search(r"(\d+) of \d+ layers float", s["outcome"])[1] for s in steps
                if s["name"].startswith(f"{target}-int8-mixed: search the recipe")]
    measured = [re.search(r"mask IoU ([\d.]+) / p5 ([\d.]+)", s["outcome"]) for s in steps
                if s["name"] == f"{target}-int8-mixed"]
    return [(layers, f"{float(m[1]):.3f} / {float(m[2]):.3f}") for layers, m in zip(searches, measured)]


@view
def deploy_ladder_table(record: Record) -> str:
    """Per target: the static rung, each mixed recipe tried, what shipped, and its cost against fp32 on this host."""
    rows = []
    for target, ladder in record["deploy"]["ladders"].items():
        static = next(r for r in ladder if r["rung"] == "static")
        attempts = [f"{layers}: {iou}" for layers, iou in _mixed_attempts(record, target)]
        shipped = _held_out(record, record["deploy"]["ship"][target]["artifact"])
        fp32 = _held_out(record, f"{target}-fp32")
        time_ratio = (shipped["encoder_p50_s"] + shipped["decoder_p50_s"]) / (fp32["encoder_p50_s"] + fp32["decoder_p50_s"])
        rows.append([DEPLOY_LADDER_NAMES[target], f"{static['search_mask_iou_mean']:.3f} / {static['search_mask_iou_p5']:.3f}",
                     *(attempts + ["-", "-"])[:2], f"{shipped['mask_iou_mean']:.3f} / {shipped['mask_iou_p5']:.3f}",
                     f"{time_ratio:.2f}x, {shipped['bytes'] / fp32['bytes']:.2f}x"])
    return table(["target", "static, search images: mean / p5", "first mixed recipe: float layers, runtime mean / p5",
                  "searched again: float layers, runtime mean / p5", "shipped, held out: mean / p5",
                  "vs own fp32 on this host: time, size"], "lrrrrr", rows)


@view
def unseen_photos_artifacts(record: Record) -> str:
    return ", ".join(f"{row['artifact']} {row['mask_iou_mean']:.4f} / {row['mask_iou_p5']:.4f}" for row in record["rows"])


@view
def calibration_observers_table(record: Record) -> str:
    """Full static INT8 per target and observer (benchmarks/calibration_observers.py)."""
    def pair(numbers: Record) -> str:
        return f"{numbers['mask_iou_mean']:.3f} / {numbers['mask_iou_p5']:.3f}"
    rows = [[DEPLOY_LADDER_NAMES[row["target"]], row["observer"],
             pair(row["held_out"]), pair(row["unseen_photos"])] for row in record["rows"]]
    return table(["target", "observer", "held out", "unseen photos"], "llrr", rows)


# -- parity with the reference implementation (benchmarks/parity_errors.py) ---------------------------
@view
def parity_errors(record: Record) -> str:
    errors = record["errors"]
    return (f"image embeddings within 1e-4 of their max (measured: {sci(errors['image_embeddings_rel_max'])}), "
            f"low-res logits within 1e-3 (measured: {sci(errors['low_res_logits_rel_max'])}) and IoU predictions "
            f"within 1e-3 ({sci(errors['iou_predictions_abs_max'])}) for a two-point and a box query, full-size masks "
            f"agreeing on {errors['full_res_mask_agreement'] * 100:.5f}% of pixels")


# -- FLOPs (benchmarks/flops_table.py) ----------------------------------------------------------------
def _g(flops: float, digits: int = 1) -> str:
    return f"{flops / 1e9:.{digits}f}"


@view
def flops_table(record: Record) -> str:
    encoder, decoder = record["flops"]["encoder"], record["flops"]["decoder_1024"]
    full = encoder["1024"]
    share = {part: f"{full[part] / full['total']:.0%}" for part in ("attention", "linear")}
    rows = [["encoder at 1024", _g(full["total"]),
             f"attention QK^T and AV {_g(full['attention'])} ({share['attention']}), linear layers "
             f"{_g(full['linear'])} ({share['linear']}), patch embedding and neck {_g(full['patch_embed_and_neck'])}"]]
    for size, why in (("768", "attention is quadratic in the tokens: "), ("512", "")):
        rows.append([f"encoder at {size}", _g(encoder[size]["total"]), f"{why}{full['total'] / encoder[size]['total']:.1f}x fewer"])
    rows.append(["decoder per prompt at 1024", _g(decoder["total"], 2),
                 f"image-side projections of the two-way transformer {_g(decoder['image_side_projections'], 2)}, "
                 f"upscaling {_g(decoder['upscaling'], 2)}"])
    rows.append(["decoder per prompt, per-image context cached", _g(decoder["cached_total"], 2),
                 f"the first layer's three image-side projections ({_g(decoder['per_image'], 2)}) are done once per image"])
    return table(["EfficientSAM-Ti", "GFLOP", "of which"], "lrl", rows)


@view
def decoder_flops_cached(record: Record) -> str:
    decoder = record["flops"]["decoder_1024"]
    return f"{_g(decoder['cached_total'], 2)} GFLOP per prompt instead of {_g(decoder['total'], 2)}"


@view
def flops_attention_share(record: Record) -> str:
    """The sentence that says why INT8 gains little: attention's share and the linear layers'."""
    full = record["flops"]["encoder"]["1024"]
    return f"{full['attention'] / full['total']:.0%} of the encoder's FLOPs"


@view
def flops_linear_share(record: Record) -> str:
    full = record["flops"]["encoder"]["1024"]
    return f"({full['linear'] / full['total']:.0%})"


@view
def flops_int8_bound(record: Record) -> str:
    """Amdahl's bound for INT8 linear layers (4x the multiply-adds of fp32 FMA per instruction)."""
    full = record["flops"]["encoder"]["1024"]
    linear = round(full["linear"] / full["total"], 2)
    return f"1/(1 - {linear:.2f} x 3/4) = {1 / (1 - linear * 3 / 4):.2f}x"


# -- the AOTInductor packages (benchmarks/aoti_precisions.py) ----------------------------------------
AOTI_ROWS = {"fp32": "aoti fp32", "bf16": "aoti bf16", "int8": "aoti int8 static-conv-linear",
             "int8:dynamic-linear": "aoti int8 dynamic-linear", "pytorch bf16 eager": "PyTorch bf16 autocast, eager (no package)"}


@view
def aoti_precisions_table(record: Record) -> str:
    """Drift vs fp32 PyTorch, encoder speed vs PyTorch fp32 eager and compile time per package."""
    rows = []
    for key, name in AOTI_ROWS.items():
        drift = record["packages"][key]
        timing = record["encoder_timing"]["pytorch bf16 eager" if key.startswith("pytorch") else f"aoti {key}"]
        rows.append([name, f"{drift['mask_iou_mean']:.4f}", f"{drift['mask_iou_p5']:.4f}", f"{drift['mask_iou_worst']:.4f}",
                     f"{drift['embedding_sqnr_db_mean']:.1f}", f"{timing['x_pytorch_fp32_eager']:.2f}",
                     f"{drift['export_s']:.0f}" if "export_s" in drift else "-"])
    return table(["package", "mask IoU mean", "p5", "worst", "embedding SQNR dB", "encoder x PyTorch fp32 eager",
                  "export + compile s"], "lrrrrrr", rows)


@view
def deploy_peak_steps(record: Record) -> str:
    """The steps that raised the run's peak RSS, each with the peak after it (deploy.json's steps)."""
    rises, peak = [], 0.0
    for step in record["deploy"]["steps"]:
        if step.get("peak_rss_gb") is not None and step["peak_rss_gb"] > peak:
            peak = step["peak_rss_gb"]
            rises.append(f"{step['name']} {peak:.2f} GB")
    return ", ".join(rises)


# -- the emulated aarch64 place (benchmarks/aarch64_drift.py) -----------------------------------------
@view
def aarch64_drift_table(record: Record) -> str:
    """Per artifact: its IoU vs fp32 on x86, and per emulated CPU its IoU vs fp32 and vs the same artifact on x86."""
    places = [place for place in ("aarch64", "aarch64-orin") if place in record["rows"][0]]
    header = ["artifact", "x86: IoU vs fp32"]
    for place in places:
        header += [f"{place}: IoU vs fp32", f"{place}: IoU vs x86 mean (worst)", f"{place}: emb cos vs x86"]
    rows = []
    for row in record["rows"]:
        cells = [row["artifact"], f"{row['x86']['mask_iou_vs_fp32']:.4f}"]
        for place in places:
            there = row[place]
            cells += [f"{there['mask_iou_vs_fp32']:.4f}", f"{there['mask_iou_vs_x86']:.4f} ({there['mask_iou_vs_x86_worst']:.4f})",
                      f"{there['embedding_cosine_vs_x86']:.6f}"]
        rows.append(cells)
    return table(header, "l" + "r" * (len(header) - 1), rows)


@view
def aarch64_place_size(record: Record) -> str:
    return f"{record['place']['disk_mb'] / 1000:.1f} GB"


# -- each target page's Drift table (benchmarks/target_drift_tables.py) ------------------------------
def _fixed(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return "exact" if math.isinf(value) else f"{value:.{digits}f}"


@view
def target_drift_table(record: Record) -> str:
    """Per artifact on the record's (first) image set: size, embedding and mask drift vs fp32, GT
    mIoU where the images have masks, and the runner's own RSS where the run measured it (no
    latency: the record has none)."""
    rows = next(iter(record["runs"].values()))["rows"]
    ground_truth = any(row["gt_miou"] for row in rows)
    memory = any(row.get("memory") for row in rows)
    header = ["artifact", "size MB", "emb cos", "emb SQNR dB", "mask IoU mean", "p5", "worst", "same top mask"]
    header += ["GT mIoU box", "GT mIoU 1-click"] * ground_truth + ["runner RSS MB"] * memory
    cells = []
    for index, row in enumerate(rows):
        drift = [None] * 6 if index == 0 else [row["embedding_cosine_mean"], row["embedding_sqnr_db_mean"], row["mask_iou_mean"],
                                               row["mask_iou_p5"], row["mask_iou_worst"], row["top_choice_agreement"]]
        cells.append([row["artifact"], f"{row['size_mb']:.1f}",
                      *(_fixed(value, digits) for value, digits in zip(drift, (6, 1, 4, 4, 4, 3))),
                      *[_fixed(row["gt_miou"].get(kind), 4) for kind in ("box", "1-click")] * ground_truth,
                      *[_fixed((row.get("memory") or {}).get("runner_mb"), 1)] * memory])
    return table(header, "l" + "r" * (len(header) - 1), cells)


@view
def tensorrt_drift_table(record: Record) -> str:
    """The TensorRT-form files (and the comparisons) on the synthetic images and on the photo: mask IoU mean / p5."""
    runs = record["runs"]
    synthetic, photo = runs["synthetic"], runs["photo"]
    header = ["artifact", "size MB", f"synthetic test ({synthetic['n_images']} images, {synthetic['n_prompts']} prompts)",
              f"dogs.jpg ({photo['n_prompts']} prompts)"]
    cells = [[row["artifact"], f"{row['size_mb']:.1f}", f"{row['mask_iou_mean']:.4f} / {row['mask_iou_p5']:.4f}",
              f"{on_photo['mask_iou_mean']:.4f} / {on_photo['mask_iou_p5']:.4f}"]
             for row, on_photo in zip(synthetic["rows"][1:], photo["rows"][1:], strict=True)]
    return table(header, "lrll", cells)


LAYER_DROPS_SHOWN = 3


@view
def drift_layer_drops(record: Record) -> str:
    """Per artifact with per-layer rows: its largest SQNR drops (the record keeps report.md's rows,
    largest drop first), then any whole-program row (an ExecuTorch .pte against its PT2E simulation)."""
    cells = []
    for artifact, rows in next(iter(record["runs"].values()))["layers"].items():
        shown = [r for r in rows if r["op_type"] != "program"][:LAYER_DROPS_SHOWN] + [r for r in rows if r["op_type"] == "program"]
        for index, row in enumerate(shown):
            cells.append([artifact if index == 0 else "", f"`{row.get('module') or row['node']}`", row["op_type"],
                          _fixed(row["input_sqnr_db"], 1), _fixed(row["sqnr_db"], 1), _fixed(row["drop_db"], 1)])
    return table(["artifact", "layer", "op", "input SQNR dB", "output SQNR dB", "drop dB"], "lllrrr", cells)


@view
def record_provenance(record: Record) -> str:
    """Which run a table is: commit, date and the machine's load when it started."""
    machine = record["machine"]
    return (f"commit {(record['git_commit'] or 'unknown')[:7]}, {record['date']}, {machine['cpu_model']} with "
            f"{machine['cpu_count']} cores, load average {machine['load_average']} at the start")
