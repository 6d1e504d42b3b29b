"""Views: how a record in docs/results/ reads in the docs (benchmarks/docs_tables.py puts them there).

A view is a function from a record (the JSON as loaded) to Markdown: table rows or a phrase.
The docs name a view by its function's name with dashes (``deploy_ship_table`` ->
``deploy-ship-table``). Formats live here, once, so a number reads the same wherever it is quoted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
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
    values = list(values)
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}-{high}"


def _listed(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``: items in a sentence."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


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
    """(wall s, CPU s, peak RSS GB) of a deploy run, as benchmarks/deploy_run.py measured it."""
    cost = record["measured"]
    return cost["wall_s"], cost["cpu_s"], cost["peak_rss_gb"]


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
        time_ratio = _speed_ratio(record, target)
        rows.append([DEPLOY_LADDER_NAMES[target], f"{static['search_mask_iou_mean']:.3f} / {static['search_mask_iou_p5']:.3f}",
                     *(attempts + ["-", "-"])[:2], f"{shipped['mask_iou_mean']:.3f} / {shipped['mask_iou_p5']:.3f}",
                     f"{time_ratio:.2f}x, {shipped['bytes'] / fp32['bytes']:.2f}x"])
    return table(["target", "static, search images: mean / p5", "first mixed recipe: float layers, runtime mean / p5",
                  "searched again: float layers, runtime mean / p5", "shipped, held out: mean / p5",
                  "vs own fp32 on this host: time, size"], "lrrrrr", rows)


def _steps(record: Record, pattern: str) -> list[Record]:
    """The deploy steps whose name matches ``pattern`` (a regular expression, whole name)."""
    return [step for step in record["deploy"]["steps"] if re.fullmatch(pattern, step["name"])]


def _seconds(steps: Iterable[Record]) -> str:
    return f"{span((step['seconds'] for step in steps), 0)} s"


@view
def deploy_step_times(record: Record) -> str:
    """Where a deploy's time went, from its step lines (summary.md's Steps)."""
    targets = list(record["deploy"]["ladders"])
    first_searches = [_steps(record, rf"{t}-int8-mixed: search the recipe")[0] for t in targets]
    again = [step for t in targets for step in _steps(record, rf"{t}-int8-mixed: search the recipe again at .*")]
    artifacts = [_steps(record, rf"{t}-int8-mixed") for t in targets]
    first_p5 = [float(re.search(r"p5 ([\d.]+)", built[0]["outcome"])[1]) for built in artifacts if len(built) > 1]
    budget_p5 = record["deploy"]["search_budget"]["mask_iou_p5_min"]
    validate = _steps(record, "validate on held-out images")[0]
    phrase = (f"the float exports {sum(s['seconds'] for s in _steps(record, r'[a-z]+-fp(32|16)')):.0f} s; per target, "
              f"full static INT8 exported and run on the search images ({_seconds(_steps(record, r'[a-z]+-int8-static'))}), "
              f"the first mixed search ({first_searches[0]['seconds']:.0f} s on {TARGET_NAMES[targets[0]]}, the first "
              f"target, which also ranks the layers; {_seconds(first_searches[1:])} on the others), the mixed artifact "
              f"({_seconds(built[0] for built in artifacts)})")
    if again:
        where = "every target" if len(again) == len(targets) else f"{len(again)} of {len(targets)} targets"
        phrase += (f", and on {where} one search again, because the runtime measured the first recipe under the p5 "
                   f"its simulation had met ({span(first_p5)} against {budget_p5:.3f}; {_seconds(again)}), and its artifact")
    artifacts_validated = sum(row["artifact"] != "pytorch-fp32" for row in record["held_out_rows"])
    return phrase + f"; validating the {artifacts_validated} artifacts on the held-out images {validate['seconds']:.0f} s"


def _shipped_recipes_float_layers(record: Record) -> list[int]:
    """Float layers of the mixed recipe each target shipped (its last search)."""
    return [int(_mixed_attempts(record, target)[-1][0]) for target, ship in record["deploy"]["ship"].items()
            if ship["artifact"].endswith("-int8-mixed")]


@view
def deploy_float_layers(record: Record) -> str:
    """How many of the encoder's layers the shipped mixed recipes keep float."""
    layers = sorted(_shipped_recipes_float_layers(record))
    return f"{layers[0]}-{layers[-1]}"


def _speed_ratio(record: Record, target: str) -> float:
    """The target's mixed INT8 artifact's time (encoder + decoder p50) over its own fp32, on the held-out images."""
    mixed = _held_out(record, f"{target}-int8-mixed")
    fp32 = _held_out(record, f"{target}-fp32")
    return (mixed["encoder_p50_s"] + mixed["decoder_p50_s"]) / (fp32["encoder_p50_s"] + fp32["decoder_p50_s"])


@view
def deploy_int8_time_ratio(record: Record) -> str:
    """The mixed INT8 artifacts' time against their fp32 on this host, on the runtimes whose host latency means
    something (Core ML's host executor is not a device)."""
    ratios = sorted(_speed_ratio(record, target) for target in record["deploy"]["ladders"] if target != "coreml")
    return f"{ratios[0]:.2f}-{ratios[-1]:.2f}x"


@view
def deploy_onnx_choice(record: Record) -> str:
    """ONNX's ranking by host latency: what shipped against the runner-up, as deploy's summary says it."""
    why = record["deploy"]["ship"]["onnx"]["why"]
    (shipped, ms, mb), (runner_up, runner_ms, runner_mb) = re.findall(r"(onnx-[\w-]+): ([\d.]+ ms), ([\d.]+ MB)", why)[:2]
    return f"{shipped} ({ms}, {mb}) against {runner_up} ({runner_ms}, {runner_mb})"


@view
def deploy_ship_list(record: Record) -> str:
    """What a deploy shipped per target, with its held-out mask IoU (mean / p5)."""
    shipped = [_held_out(record, ship["artifact"]) for ship in record["deploy"]["ship"].values()]
    return ", ".join(f"{row['artifact']} {row['mask_iou_mean']:.4f} / {row['mask_iou_p5']:.4f}" for row in shipped)


@view
def deploy_closest_p5(record: Record) -> str:
    """The shipped artifact closest to the gate's p5 on the held-out images, against that p5."""
    closest = min(_held_out(record, ship["artifact"])["mask_iou_p5"] for ship in record["deploy"]["ship"].values())
    return f"{closest:.3f} against {record['deploy']['gate']['mask_iou_p5_min']:.2f}"


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


@view
def calibration_histogram_gain(record: Record) -> str:
    """The most a histogram observer (PT2E's histogram, ONNX Runtime's percentile) adds to min-max's
    held-out mean on the same target."""
    minmax = {row["target"]: row["held_out"]["mask_iou_mean"] for row in record["rows"] if row["observer"] == "minmax"}
    gains = [row["held_out"]["mask_iou_mean"] - minmax[row["target"]] for row in record["rows"]
             if row["observer"] in ("histogram", "percentile")]
    return f"{max(gains):.2f}"


# -- parity with the reference implementation (benchmarks/parity_errors.py) ---------------------------
@view
def parity_errors(record: Record) -> str:
    errors = record["errors"]
    return (f"image embeddings within 1e-4 of their max (measured: {sci(errors['image_embeddings_rel_max'])}), "
            f"low-res logits within 1e-3 (measured: {sci(errors['low_res_logits_rel_max'])}) and IoU predictions "
            f"within 1e-3 ({sci(errors['iou_predictions_abs_max'])}) for a two-point and a box query, full-size masks "
            f"agreeing on {errors['full_res_mask_agreement'] * 100:.5f}% of pixels")


@view
def parity_onnx_table(record: Record) -> str:
    """The official-interface ONNX export against the reference implementation, each error beside the
    bound tests/test_onnx.py asserts on it."""
    errors = record["errors"]
    rows = [["`image_embeddings`", sci(errors["image_embeddings_rel_max"]), "1e-4"],
            ["`low_res_masks`", sci(errors["low_res_logits_rel_max"]), "1e-3"],
            ["`iou_predictions` (max abs)", sci(errors["iou_predictions_abs_max"]), "1e-3"],
            ["`output_masks > 0` vs the reference's full-size masks", f"{errors['full_res_mask_agreement'] * 100:.4f} % equal pixels",
             "99.9 %"]]
    return table(["output", "max abs diff / max abs", "bound"], "lrr", rows)


# -- the bundled reference model's accuracy (benchmarks/reference_model_eval.py) -----------------------
def _eval_row(record: Record, model: str, split: str) -> Record:
    return next(row for row in record["rows"] if row["model"].startswith(model) and row["split"] == split)


def _miou(row: Record, mode: str, bucket: str = "all") -> str:
    """mIoU in %, one decimal, as the card quotes it."""
    return f"{100 * row['miou'][mode][bucket]:.1f}"


@view
def reference_card_miou(record: Record) -> str:
    """The card's test-split line: box and 1-click in bold (the targets were set on them), 3-click."""
    row = _eval_row(record, "reference", "test")
    return (f"box **{_miou(row, 'box')}**, 1-click **{_miou(row, '1-click')}**, "
            f"{row['n_clicks']}-click {_miou(row, 'n-click')}")


@view
def reference_readme_miou(record: Record) -> str:
    """README's line: box / 1-click on the test split, and random weights' for scale."""
    row, random = _eval_row(record, "reference", "test"), _eval_row(record, "random", "test")
    return (f"box {_miou(row, 'box')} / 1-click {_miou(row, '1-click')} "
            f"(random weights: {_miou(random, 'box')} / {_miou(random, '1-click')})")


@view
def reference_random_box(record: Record) -> str:
    return f"box mIoU {_miou(_eval_row(record, 'random', 'test'), 'box')}"


@view
def reference_eval_table(record: Record) -> str:
    """Every evaluated (model, split): box, 1-click, n-click mIoU and box mIoU by object size."""
    names = {"reference": "shipped file (fp16 weights)", "random": "same architecture, random weights (seed 0)"}
    rows = []
    for row in record["rows"]:
        name = next(text for key, text in names.items() if row["model"].startswith(key))
        split = f"{row['split']} ({row['n_images']} img, {row['n_objects']:,} obj)"
        sizes = " / ".join(_miou(row, "box", bucket) for bucket in ("small", "medium", "large"))
        rows.append([name, split, _miou(row, "box"), _miou(row, "1-click"), _miou(row, "n-click"), sizes])
    n_clicks = record["rows"][0]["n_clicks"]
    return table(["model", "split", "box", "1-click", f"{n_clicks}-click", "box small / medium / large"], "llrrrl", rows)


@view
def reference_box_by_size(record: Record) -> str:
    """Large objects' and small objects' box mIoU on the test split (where the target was missed)."""
    row = _eval_row(record, "reference", "test")
    return (f"Large objects already pass the box target ({_miou(row, 'box', 'large')}); {row['objects_per_size']['small']} "
            f"of the {row['n_objects']:,} test objects are small (box mIoU {_miou(row, 'box', 'small')})")


@view
def reference_test_split_objects(record: Record) -> str:
    """The test split's images and objects, by size (what the evaluator counts)."""
    row = _eval_row(record, "reference", "test")
    sizes = row["objects_per_size"]
    return (f"{row['n_images']} images, {row['n_objects']:,} objects, of which {sizes['small']} small "
            f"(< 32^2 px), {sizes['medium']} medium, {sizes['large']} large")


@view
def reference_targets_missed(record: Record) -> str:
    row = _eval_row(record, "reference", "test")
    return f"Box mIoU {_miou(row, 'box')} against a target of 85, 1-click {_miou(row, '1-click')} against 70"


@view
def reference_dogs_iou(record: Record) -> str:
    """The span of the predicted IoUs of the three multimask outputs for the box on dogs.jpg."""
    return span(record["dogs_box"]["predicted_iou"], 2)


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
def decoder_flops_factored(record: Record) -> str:
    """Per prompt at 1024: the whole decoder, with the context kept, and with the cross-attention folded too."""
    decoder = record["flops"]["decoder_1024"]
    return (f"{_g(decoder['factored_total'], 2)} GFLOP instead of {_g(decoder['cached_total'], 2)} with the "
            f"context alone and {_g(decoder['total'], 2)} for the whole decoder")


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


@view
def aarch64_place_creation(record: Record) -> str:
    """A fresh place's creation time, its slowest steps, and a second create on the made place."""
    minutes, seconds = divmod(record["fresh_s"], 60)
    steps = sorted(record["steps_s"].items(), key=lambda item: -item[1])[:3]
    slowest = ", ".join(f"{name} {value:.0f} s" for name, value in steps)
    return f"{minutes} min {seconds} s ({slowest}); a second `device create` on it {record['cached_s']} s"


# -- edge-sam bench --table against each data type's roofline (benchmarks/roofline_table.py) -----------
@view
def bench_roofline_rates(record: Record) -> str:
    """This CPU's matrix rate per data type, best round, measured in the bench's own run."""
    rates = record["bench"]["matmul"]
    parts = [f"fp32 {max(rates['fp32_gflops']):.0f} GFLOP/s"]
    parts += [f"{dtype} {max(rates[f'{dtype}_gflops']):.0f} GFLOP/s" for dtype in ("bf16", "fp16") if rates.get(f"{dtype}_gflops")]
    parts += [f"int8 {max(rates['int8_gops']):.0f} GOP/s"] if rates.get("int8_gops") else []
    return ", ".join(parts)


@view
def bench_roofline_table(record: Record) -> str:
    """Every path's encoder and decoder at the checkpoint's size, against its data type's roofline."""
    rows = [[row["label"], f"{row['encoder_p50_ms']:.0f}", f"{row['vs_reference']:.2f}x",
             "-" if row["vs_fp32"] is None else f"{row['vs_fp32']:.2f}x", f"{row['encoder_gflops']:.0f}",
             row["roofline_dtype"], f"{row['roofline_gflops']:.0f}", f"{row['roofline_fraction']:.2f}",
             f"{row['decoder_p50_ms']:.1f}", f"{row['decoder_gflop']:.2f}", f"{row['decoder_vs_floor']:.2f}"]
            for row in record["bench"]["rows"]]
    return table(["path", "encoder p50 ms", "x reference eager", "x own fp32", "encoder GFLOP/s", "computes in",
                  "roofline GFLOP/s", "of roofline", "decoder p50 ms / prompt", "decoder GFLOP / prompt",
                  "decoder / FLOP floor"], "lrrrrlrrrrr", rows)


# -- exported decoders, whole vs per-image context (benchmarks/exported_decoder_latency.py) -------------
@view
def decoder_context_table(record: Record) -> str:
    """Per prompt: the whole decoder, the artifact's context decoder (folded cross-attention) and the
    same context decoder unfolded, in the same runtime and rounds."""
    rows = [[row["label"], f"{row['whole_ms']:.1f}", f"{row['unfolded_decoder_ms']:.1f}",
             f"{1 - row['unfolded_decoder_ms'] / row['whole_ms']:.3f}", f"{row['decoder_ms']:.1f}", f"{row['saved']:.3f}",
             f"{row['context_ms']:.1f}", f"{row['mask_iou_min']:.4f}"] for row in record["rows"]]
    return table(["runtime", "whole decoder ms / prompt", "context decoder, unfolded", "saved",
                  "context decoder, folded (the artifact's)", "saved", "context ms, once per image",
                  "mask IoU vs whole, worst"], "lrrrrrrr", rows)


@view
def decoder_context_share(record: Record) -> str:
    """The context's share of the whole decoder's FLOPs, the bar the time saved is held against."""
    return f"{record['context_flop_share']:.3f}"


@view
def decoder_folded_share(record: Record) -> str:
    """The share of the whole decoder's FLOPs the context and the folded cross-attention leave out together."""
    return f"{record['folded_flop_share']:.3f}"


@view
def decoder_context_rate_ratio(record: Record) -> str:
    """Per runtime, FLOP share / time saved by the context alone (the unfolded decoder): how many
    times the whole decoder's average FLOP rate the context's operators ran at (time saved = FLOP
    share x whole rate / context rate)."""
    share = record["context_flop_share"]
    return ", ".join(f"{row['target']} {share / (1 - row['unfolded_decoder_ms'] / row['whole_ms']):.2f}"
                     for row in record["rows"])


@view
def decoder_saved_span(record: Record) -> str:
    """The folded context decoder's time saved against the whole decoder, lowest to highest runtime."""
    return span([row["saved"] for row in record["rows"]])


# -- segment-everything on exported artifacts (benchmarks/everything_latency.py) -----------------------
@view
def everything_table(record: Record) -> str:
    """Everything-mode end to end per path, against its time budget and the memory bound."""
    def iou(row: Record) -> str:
        return "-" if row["iou_min"] is None else f"{row['iou_min']:.3f} / {row['iou_mean']:.3f}"
    rows = [[row["label"], f"{row['encoder_s']:.2f}", f"{row['decode_s'] * 1e3:.1f}", f"{row['total_s']:.1f}",
             f"{row['budget_s']:.1f}", "yes" if row["within_time_budget"] else "no", f"{row['peak_rss_mb']:.0f}",
             "yes" if row["within_rss_budget"] else "no", row["masks"], iou(row)] for row in record["rows"]]
    return table(["path", "encoder s", "decode ms / prompt", "everything s", "budget s", "within", "peak RSS MB",
                  "within 1 GB", "masks", "matched mask IoU vs PyTorch, min / mean"], "lrrrrlrlrr", rows)


@view
def bench_roofline_best(record: Record) -> str:
    """The fastest encoder in the bench table and the fastest fp32 runtime, against the reference's eager encoder."""
    rows = [row for row in record["bench"]["rows"] if row["vs_reference"] is not None]
    best = max(rows, key=lambda row: row["vs_reference"])
    fp32 = max((row for row in rows if row["precision"] == "fp32" and row["kind"] == "artifact"),
               key=lambda row: row["vs_reference"])
    return (f"{best['label']} at {best['vs_reference']:.2f}x the reference's eager encoder, "
            f"the fastest fp32 runtime ({fp32['label']}) at {fp32['vs_reference']:.2f}x")


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
def drift_int8_size_saving(record: Record) -> str:
    """How much smaller the static INT8 artifact is than the target's own fp32 one."""
    rows = next(iter(record["runs"].values()))["rows"]
    fp32 = next(r for r in rows if r["target"] != "pytorch" and r["precision"] == "fp32")
    static = next(r for r in rows if r["recipe"] == "static-conv-linear")
    return f"{1 - static['size_mb'] / fp32['size_mb']:.0%} smaller at {static['img_size']} px"


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


# -- where static INT8 loses the embedding (benchmarks/int8_error_sources.py) -------------------------
NECK_CONVS = ("1x1", "3x3")  # EfficientSAM's neck: a 1x1 then a 3x3 convolution, each read by a LayerNorm
INT8_STEPS = 255  # a per-tensor int8 grid's steps between its ends


def _split_row(record: Record, fake_quantized: str) -> dict[str, Record]:
    """Part 1's scores (by image set) with only ``fake_quantized`` rounded."""
    return next(row["scores"] for row in record["split"]["rows"] if row["fake_quantized"] == fake_quantized)


def _fidelity(scores: Record) -> str:
    return f"{_pair(scores)}, {scores['embedding_sqnr_db']:.1f} dB"


def _lr(value: float) -> str:
    """``3e-5`` as a command line writes it (not Python's ``3e-05`` or ``0.0001``)."""
    mantissa, exponent = f"{value:.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _graph_order(node: str) -> int:
    """``conv2d_2`` -> 2 (``conv2d`` -> 0): the order torch.export named same-kind ops in."""
    suffix = node.rpartition("_")[2]
    return int(suffix) if suffix.isdigit() else 0


@view
def error_sources_table(record: Record) -> str:
    """Part 1: everything, the weights alone, the activations alone, on both image sets."""
    split = record["split"]
    labels = {"everything": "everything (= PTQ)",
              "weights only": f"the {split['weight_quantizers']} weight quantizers only",
              "activations only": f"the {split['activation_quantizers']} activation quantizers only"}
    rows = [[labels[row["fake_quantized"]], _fidelity(row["scores"]["synthetic"]), _fidelity(row["scores"]["photo_crops"])]
            for row in split["rows"]]
    return table(["fake-quantized", "synthetic: mask IoU mean / p5, embedding SQNR", "dogs.jpg crops"], "lrr", rows)


@view
def error_sources_split_sqnr(record: Record) -> str:
    """Part 1's embedding SQNR in a sentence, both image sets."""
    def sqnr(fake_quantized: str) -> str:
        scores = _split_row(record, fake_quantized)
        return (f"{scores['synthetic']['embedding_sqnr_db']:.1f} dB (synthetic) and "
                f"{scores['photo_crops']['embedding_sqnr_db']:.1f} dB (photo crops)")
    return (f"{sqnr('weights only')} with the weights alone rounded, {sqnr('activations only')} with the "
            f"activations alone, and {sqnr('everything')} with everything rounded")


def _synthetic_sqnr_db(record: Record, fake_quantized: str) -> str:
    """Part 1's synthetic embedding SQNR with ``fake_quantized`` rounded, to the dB."""
    return f"{_split_row(record, fake_quantized)['synthetic']['embedding_sqnr_db']:.0f} dB"


@view
def error_sources_weights_only(record: Record) -> str:
    """README: only the weights rounded."""
    return _synthetic_sqnr_db(record, "weights only")


@view
def error_sources_weights_only_p5(record: Record) -> str:
    """The synthetic masks' p5 with only the weights rounded."""
    return f"{_split_row(record, 'weights only')['synthetic']['mask_iou_p5']:.3f}"


@view
def error_sources_ptq_sqnr(record: Record) -> str:
    """Static INT8 (everything rounded)."""
    return _synthetic_sqnr_db(record, "everything")


def _quantizer_in_words(quantizer: Record, alone: list[Record]) -> str:
    """Where one activation quantizer sits, as the docs name layers (the neck's two convolutions by kernel)."""
    layers = quantizer["layer"].split(", ")
    if quantizer["role"] == "after":
        return f"the result of `{quantizer['layer']}`"
    if quantizer["role"] == "input of":
        return "the image input" if layers == ["image_encoder.patch_embed"] else f"the input of {describe_layers(layers)}"
    if layers == ["image_encoder.neck"]:
        outputs = [q for q in alone if q["role"] == "output of" and q["layer"] == quantizer["layer"]]
        convs = sorted({q["graph_input"] for q in outputs if q["graph_input"].startswith("conv2d")}, key=_graph_order)
        # a convolution's rounded output is permuted and rounded again: the permute leads back to its conv
        conv_of = {consumer: q["graph_input"] for q in outputs if q["graph_input"] in convs for consumer in q["consumers"]}
        conv = conv_of.get(quantizer["graph_input"], quantizer["graph_input"])
        if len(convs) == len(NECK_CONVS) and conv in convs:
            return f"the neck's {NECK_CONVS[convs.index(conv)]} convolution output"
    return f"the output of {describe_layers(layers)}"


@view
def error_sources_costliest(record: Record, shown: int = 4) -> str:
    """Part 2: the ``shown`` costliest activation quantizers, each alone, then the next one."""
    alone = record["activations"]["alone"]
    (first, x0), *middle, (following, xn) = [(_quantizer_in_words(q, alone), q["embedding_sqnr_db"]) for q in alone[:shown + 1]]
    return (f"{first} alone leaves {x0:.1f} dB, " + ", ".join(f"{words} {x:.1f} dB" for words, x in middle)
            + f"; the next ({following}) {xn:.1f} dB and the rest more")


@view
def error_sources_peak(record: Record) -> str:
    """The costliest quantizer's peak / RMS, and the SQNR uniform rounding over a grid that wide leaves
    (noise step / sqrt(12) on a grid of INT8_STEPS steps across twice the peak)."""
    costliest = record["activations"]["alone"][0]
    ratio = costliest["peak_over_rms"]
    sqnr = 20 * math.log10(INT8_STEPS * math.sqrt(12) / (2 * ratio))
    words = _quantizer_in_words(costliest, record["activations"]["alone"])
    return (f"{words[0].upper()}{words[1:]}, for example, peaks at {ratio:.1f}x its RMS on the held-out images, so a "
            f"per-tensor int8 grid gives its typical values about 1/{ratio:.0f} of the {INT8_STEPS} steps "
            f"(~{sqnr:.0f} dB)")


@view
def error_sources_all_but_top(record: Record) -> str:
    """Part 2's last row: everything rounded but the costliest ``top`` activation quantizers."""
    activations = record["activations"]
    scores = activations["all_but_top"]
    return (f"the {activations['top']} costliest of the {len(activations['alone'])} unrounded (what 16-bit activations "
            f"there would approach) gives the synthetic set {_pair(scores['synthetic'])} and the photo crops "
            f"{_pair(scores['photo_crops'])}")


def _batch_trace(run: Record) -> str:
    return " -> ".join(f"{point['batch_sqnr_db']:.2f}" for point in run["trace"])


@view
def error_sources_headroom(record: Record) -> str:
    """Part 3 at one learning rate: the batch's SQNR at each quarter, the held-out sets before and after."""
    headroom = record["headroom"]
    run, = headroom["runs"]
    before, after = headroom["scores"], run["scores"]

    def change(key: str, field: str, digits: int, unit: str = "") -> str:
        return f"{before[key][field]:.{digits}f}{unit} to {after[key][field]:.{digits}f}{unit}"
    return (f"{headroom['steps']} AdamW steps at lr {_lr(run['lr'])} take that batch's embedding SQNR from "
            f"{headroom['batch_sqnr_db']:.2f} dB through {_batch_trace(run)} dB (each quarter of the steps), while "
            f"the held-out embeddings go from {change('synthetic', 'embedding_sqnr_db', 1, ' dB')} (synthetic) and "
            f"{change('photo_crops', 'embedding_sqnr_db', 1, ' dB')} (photo crops), the p5 from "
            f"{change('synthetic', 'mask_iou_p5', 4)} and {change('photo_crops', 'mask_iou_p5', 4)}")


def _best_gain(record: Record) -> float:
    """The most any learning rate lifted the batch's SQNR above PTQ's, at any quarter."""
    headroom = record["headroom"]
    return max(point["batch_sqnr_db"] for run in headroom["runs"] for point in run["trace"]) - headroom["batch_sqnr_db"]


@view
def error_sources_lr(record: Record) -> str:
    """Part 3 at several learning rates: where the batch ends, its range on the way, the held-out sets at the end."""
    headroom = record["headroom"]
    runs = headroom["runs"]

    lowest = min(((point["batch_sqnr_db"], run["lr"]) for run in runs for point in run["trace"]))
    held_out = {key: _listed([f"{run['scores'][key]['embedding_sqnr_db']:.1f}" for run in runs]) for key in headroom["scores"]}
    p5 = {key: " / ".join(f"{run['scores'][key]['mask_iou_p5']:.3f}" for run in runs) for key in headroom["scores"]}
    ends = _listed([f"{run['trace'][-1]['batch_sqnr_db']:.2f}" for run in runs])
    return (f"takes that batch from {headroom['batch_sqnr_db']:.2f} dB to {ends} dB after {headroom['steps']} steps "
            f"(at lr {_listed([_lr(run['lr']) for run in runs])}; at most {_best_gain(record):.1f} dB above the start at "
            f"any quarter of the steps, the lowest {lowest[0]:.1f} dB at lr {_lr(lowest[1])}), while the held-out "
            f"embeddings end at {held_out['synthetic']} dB (synthetic) and {held_out['photo_crops']} dB (photo crops), "
            f"p5 {p5['synthetic']} and {p5['photo_crops']}")


@view
def error_sources_best_gain(record: Record) -> str:
    """README: the most QAT's loss lifted the fixed batch's SQNR, over every learning rate and quarter."""
    return f"{_best_gain(record):.1f} dB"


# -- every target on the same images (benchmarks/cross_target_drift.py) --------------------------------
def _photo_means(record: Record, recipe: str) -> list[float]:
    return [row["photo"]["mask_iou_mean"] for row in record["rows"] if row["recipe"] == recipe]


@view
def cross_target_sets(record: Record) -> str:
    """The image sets the run measured on and calibrated with."""
    photo = (f" and {record['photo_crops']} crops of the real photo dogs.jpg ({record['prompts']['photo']} grid and box "
             "prompts), outside the model's synthetic domain" if record["photo_crops"] else "")
    return (f"Reference model at {record['img_size']} px. Held-out images: the first {record['test_images']} of the "
            f"synthetic test split (seed 0, never trained on; {record['prompts']['synthetic']} prompts, a box and a "
            f"centre click per object){photo}. Static INT8 calibrated on the first {record['calibration_images']} "
            "synthetic val images, disjoint from both")


@view
def cross_target_conditions(record: Record) -> str:
    """The machine, torch and its threads, and the load at the start and end of the run."""
    machine = record["machine"]
    return (f"{machine['cpu_count']}-core {machine['cpu_model']} (flags {machine['cpu_flags']}), torch {machine['torch']} "
            f"with {machine['torch_threads']} threads, load average {machine['load_average']} at the start and "
            f"{record['load_average_end']} at the end ({record['minutes']:.0f} min)")


@view
def cross_target_summary(record: Record) -> str:
    """Mean mask IoU vs fp32 per artifact on the synthetic images, the line the script prints."""
    return "; ".join(f"{row['artifact']}{' (host executor)' if row['target'] == 'coreml' else ''} "
                     f"{row['synthetic']['mask_iou_mean']:.3f}" for row in record["rows"])


@view
def cross_target_table(record: Record) -> str:
    """Per artifact: size, mask IoU vs fp32 (mean, p5, worst) and embedding SQNR, then mean / p5 on the photo crops."""
    photo = all("photo" in row for row in record["rows"])
    header = ["artifact", "runs on", "size MB", "mask IoU mean", "p5", "worst", "emb SQNR dB"]
    header += ["photo crops mask IoU mean", "photo p5"] * photo
    rows = []
    for row in record["rows"]:
        synthetic = row["synthetic"]
        cells = [row["artifact"], row["runs_on"], f"{row['size_mb']:.1f}", f"{synthetic['mask_iou_mean']:.4f}",
                 f"{synthetic['mask_iou_p5']:.4f}", f"{synthetic['mask_iou_worst']:.4f}",
                 f"{synthetic['embedding_sqnr_db_mean']:.1f}"]
        cells += [f"{row['photo']['mask_iou_mean']:.4f}", f"{row['photo']['mask_iou_p5']:.4f}"] * photo
        rows.append(cells)
    return table(header, "ll" + "r" * (len(header) - 2), rows)


@view
def cross_target_photo_static(record: Record) -> str:
    """The static INT8 artifacts' range on the photo crops: mean, then p5."""
    static = [row["photo"] for row in record["rows"] if row["recipe"] == "static-conv-linear"]
    return f"{span(r['mask_iou_mean'] for r in static)} (p5 {span((r['mask_iou_p5'] for r in static), 2)})"


PHOTO_GATE = 0.95  # the gate the README's example passes to --fail-under-mask-iou


@view
def cross_target_photo_gate(record: Record) -> str:
    """Which targets' static INT8 falls under the example gate on the photo crops, and which stays above."""
    static = [row for row in record["rows"] if row["recipe"] == "static-conv-linear"]
    under = [TARGET_NAMES[row["target"]] for row in static if row["photo"]["mask_iou_mean"] < PHOTO_GATE]
    above = [TARGET_NAMES[row["target"]] for row in static if row["photo"]["mask_iou_mean"] >= PHOTO_GATE]

    def names(targets: list[str]) -> str:
        return targets[0] if len(targets) == 1 else ", ".join(targets[:-1]) + " and " + targets[-1]
    if not under:
        return f"all of them above a {PHOTO_GATE} gate"
    return f"{names(under)} under a {PHOTO_GATE} gate" + (f", {names(above)} above it" if above else "")


@view
def cross_target_photo_w8(record: Record) -> str:
    """int8 weights alone (Core ML W8) on the photo crops."""
    return f"{_photo_means(record, 'w8-conv-linear')[0]:.3f}"


@view
def cross_target_photo_dynamic(record: Record) -> str:
    """The dynamic-linear artifacts' range on the photo crops."""
    return span(_photo_means(record, "dynamic-linear"))


@view
def cross_target_photo_palettes(record: Record) -> str:
    """The palettized Core ML artifacts on the photo crops."""
    return (f"6-bit palettes reach {_photo_means(record, 'palettize-6bit')[0]:.3f} and 4-bit ones "
            f"{_photo_means(record, 'palettize-4bit')[0]:.3f}")


def _cross_target_static(record: Record, target: str) -> str:
    """One target's static INT8 on both image sets: mean (p5) on each."""
    row = next(r for r in record["rows"] if r["target"] == target and r["recipe"] == "static-conv-linear")
    synthetic, photo = row["synthetic"], row["photo"]
    return (f"{synthetic['mask_iou_mean']:.4f} (p5 {synthetic['mask_iou_p5']:.4f}) on {record['test_images']} held-out "
            f"synthetic images, {photo['mask_iou_mean']:.4f} (p5 {photo['mask_iou_p5']:.4f}) on {record['photo_crops']} "
            "crops of dogs.jpg")


@view
def cross_target_onnx_static(record: Record) -> str:
    return _cross_target_static(record, "onnx")


@view
def cross_target_executorch_static(record: Record) -> str:
    return _cross_target_static(record, "executorch")


# -- the quantization table (benchmarks/quantization_table.sh, its record stage) ----------------------
SYNTHETIC, PHOTOS = "held-out", "dogs.jpg crops"  # compare's image sets: the synthetic test split, dogs.jpg crops
NO_INT16 = {"executorch": "no int16 kernels", "coreml": "no int16 activations"}
README_TARGETS = {"onnx": "ONNX QDQ", "executorch": "ExecuTorch XNNPACK", "tflite": "LiteRT", "coreml": "Core ML W8A8 (host executor)"}
LAYER_KINDS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


# -- W8A16's toolchain traps and search limits (benchmarks/onnx_a16_qdq_fusion.py, a16_two_target_search.py) --
@view
def quant_a16_search_budget(record: Record) -> str:
    """The budget the a16-fallback search chose ``mixed-a16.json`` under (quantization_table.json)."""
    budget = record["recipes"]["mixed-a16.json"]["budget"]
    return f"{budget['min_mask_iou']} / {budget['min_mask_iou_p5']}"


@view
def a16_two_target_search(record: Record) -> str:
    """Every layer a16 on each target's simulation: the worse of them against the search's budget."""
    budget, a16, int8 = record["budget"], record["every_layer_a16"], record["every_layer_int8"]
    short = min(a16, key=lambda target: (a16[target]["mask_iou_mean"] - budget["min_mask_iou"],
                                         a16[target]["mask_iou_p5"] - budget["min_mask_iou_p5"]))
    verdict = "meeting it" if record["budget_met"] else "short of it"
    return (f"under the same {budget['min_mask_iou']} / {budget['min_mask_iou_p5']} budget: with every layer a16, "
            f"{TARGET_NAMES[short]}'s simulation measures {_pair(a16[short], 3)} ({verdict}; {_pair(int8[short], 3)} with "
            "every layer int8)")


@view
def onnx_a16_qdq_fusion(record: Record) -> str:
    """The same W8A16 ONNX artifact on the photo crops with onnxruntime's Q/DQ fusion and without it."""
    fused, unfused = (record["ways"][way][PHOTOS] for way in ("with every optimizer", "as the runner opens it"))
    loss = unfused["embedding_sqnr_db_mean"] - fused["embedding_sqnr_db_mean"]
    return (f"{loss:.0f} dB of embedding SQNR ({fused['embedding_sqnr_db_mean']:.1f} dB with it, "
            f"{unfused['embedding_sqnr_db_mean']:.1f} without; p5 {fused['mask_iou_p5']:.3f} vs {unfused['mask_iou_p5']:.3f})")


# -- mixed vs full static INT8 encoder latency (benchmarks/mixed_precision_latency.py --record) --------
LATENCY_TARGETS = ("onnx", "executorch", "tflite")


def _latency_runs(record: Record, recipe: str) -> list[Record]:
    """The record's runs against the full recipe ``recipe``, smallest size first."""
    return sorted((run for run in record["runs"] if run["recipe"] == recipe), key=lambda run: run["img_size"])


def _latency_result(run: Record, target: str) -> Record | None:
    return next((result for result in run["results"] if result["target"] == target), None)


@view
def mixed_latency_table(record: Record) -> str:
    """Mixed / full static INT8 per size and target (bold: over the run's ``--max-ratio``), with full INT8's seconds."""
    rows = []
    for run in _latency_runs(record, "static-conv-linear"):
        results = [_latency_result(run, target) for target in LATENCY_TARGETS]
        model = "reference model" if run["checkpoint"] == "reference" else (
            "parity checkpoint" if "parity" in run["checkpoint"] else Path(run["checkpoint"]).name)
        seconds = " / ".join(f"{r['full_min_s']:.3g}" if r else "-" for r in results)
        ratios = ["-" if r is None else f"**{r['ratio']:.2f}x**" if not r["within"] else f"{r['ratio']:.2f}x" for r in results]
        rows.append([f"{run['img_size']} px, {model} ({run['rounds']} rounds x {run['runs']} calls; full INT8 {seconds} s)",
                     *ratios])
    return table(["size", *(DEPLOY_LADDER_NAMES[t] for t in LATENCY_TARGETS)], "lrrr", rows)


def _ratios_sentence(run: Record) -> str:
    """One latency run's mixed / full ratio per runtime, against the run's ``--max-ratio``."""
    found = [(t, r) for t in LATENCY_TARGETS if (r := _latency_result(run, t))]
    ratios = [f"{r['ratio']:.3f}x ({DEPLOY_LADDER_NAMES[t]})" for t, r in found]
    return f"the encoders take {_listed(ratios)} full INT8's time, against the script's `--max-ratio` of {run['max_ratio']:.2f}"


@view
def mixed_latency_small_ratios(record: Record) -> str:
    """At the smallest size: each runtime's mixed / full ratio against the run's ``--max-ratio``."""
    return _ratios_sentence(_latency_runs(record, "static-conv-linear")[0])


@view
def mixed_latency_large_ratios(record: Record) -> str:
    """At the largest size timed: each runtime's mixed / full ratio against the run's ``--max-ratio``."""
    return _ratios_sentence(_latency_runs(record, "static-conv-linear")[-1])


@view
def mixed_latency_readme(record: Record) -> str:
    """README: the XNNPACK encoders' mixed / full INT8 ratio at the smallest and the largest size timed."""
    runs = _latency_runs(record, "static-conv-linear")
    xnnpack = ("executorch", "tflite")

    def ratios(run: Record) -> str:
        return span([r["ratio"] for t in xnnpack if (r := _latency_result(run, t))], 2)
    return (f"at {runs[0]['img_size']} px the float layers make the XNNPACK encoders {ratios(runs[0])}x the time of full "
            f"INT8; at {runs[-1]['img_size']} px {ratios(runs[-1])}x")


@view
def a16_encoder_seconds(record: Record) -> str:
    """W8A16's full-graph encoder on LiteRT's int16 kernels against onnxruntime's (seconds, best call)."""
    run = _latency_runs(record, "static-a16-conv-linear")[0]
    tflite, onnx = _latency_result(run, "tflite"), _latency_result(run, "onnx")
    return (f"{tflite['full_min_s']:.2g} s per encoder at {run['img_size']} px against ORT's {onnx['full_min_s']:.2g} s "
            "in the same latency run")


def _cpu(machine: Record) -> str:
    """``2-core AMD EPYC (avx2 fma)``: a record's machine as the docs name it, with the flags that set its kernels."""
    return f"{machine['cpu_count']}-core {machine['cpu_model']} ({machine['cpu_flags']})"


@view
def mixed_latency_machine(record: Record) -> str:
    """Where the latency stage ran, and the 1-minute load at each run's start and end."""
    loads = [float(load.split(" / ")[0]) for run in record["runs"]
             for load in (run["machine"]["load_average"], run["load_average_at_end"])]
    return (f"{_cpu(record['machine'])}, commit {(record['git_commit'] or 'unknown')[:7]}, {record['date']}, "
            f"1-minute load average {span(loads, 1)} at the runs' starts and ends")


def _pair(measured: Record, digits: int = 4) -> str:
    return f"{measured['mask_iou_mean']:.{digits}f} / {measured['mask_iou_p5']:.{digits}f}"


def _rows(record: Record, compare: str, row: str | None = None) -> list[Record]:
    """One compare run's rows (of one kind: PTQ, mixed, QAT, QAT+mixed), in the order it measured them."""
    return [r for r in record["compares"][compare]["rows"] if row is None or r["row"] == row]


def _row(record: Record, compare: str, target: str, row: str = "PTQ") -> Record:
    return next(r for r in _rows(record, compare, row) if r["target"] == target)


def _gt(measured: Record) -> str:
    gt = measured.get("gt_miou") or {}
    return f"{gt['box'] * 100:.2f} / {gt['1-click'] * 100:.2f}" if gt else "-"


def _gt_delta(record: Record, compare: str, row: str | None = None) -> float:
    """The largest GT mIoU change of one compare's rows against its fp32 (box and 1-click, synthetic set), in points."""
    fp32 = record["compares"][compare]["reference"]["gt_miou"][SYNTHETIC]
    return max(abs(r["sets"][SYNTHETIC]["gt_miou"][kind] - fp32[kind]) * 100 for r in _rows(record, compare, row) for kind in fp32)


def _gate(row: Record) -> str:
    return "met" if all(row["budget_met"].values()) else "missed"


def _ranges(numbers: list[int]) -> str:
    """``0-5, 7 and 11``: block indices, runs of three or more as ``first-last``."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = [str(n) for r in runs for n in ([f"{r[0]}-{r[-1]}"] if len(r) > 2 else r)]
    return _listed(parts)


def describe_layers(layers: Iterable[str]) -> str:
    """Encoder layers in words (the layer names of docs/quantization.md), the per-block ones grouped by block."""
    layers = list(layers)
    parts = [name for name, layer in (("the patch embedding", "image_encoder.patch_embed"), ("the neck", "image_encoder.neck"))
             if layer in layers]
    blocks: dict[str, list[str]] = {}
    for kind in LAYER_KINDS:
        found = [int(m[1]) for layer in layers if (m := re.fullmatch(rf"image_encoder\.blocks\.(\d+)\.{kind}", layer))]
        if found:
            blocks.setdefault(_ranges(found), []).append(kind.split(".")[1])
    parts += [f"{' and '.join(names)} in block{'s' * (len(where) > 2)} {where}" for where, names in blocks.items()]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])}, and {parts[-1]}"


def _recipe_layers(record: Record, name: str) -> tuple[int, int, str]:
    """(layers out of INT8, layers, those layers in words) of a recipe file the script's mixed stage wrote."""
    recipe = record["recipes"][name]
    return len(recipe["layers_out_of_int8"]), recipe["n_layers"], describe_layers(recipe["layers_out_of_int8"])


def _target_grid(header: str, targets: list[str], lines: list[tuple[str, dict[str, Record], str]]) -> str:
    """README's grid: one line per (label, rows by target, image set), a column per target (3 digits)."""
    cells = [[label, *(_pair(rows[t]["sets"][image_set], 3) if t in rows else NO_INT16.get(t, "-") for t in targets)]
             for label, rows, image_set in lines]
    return table([header, *(README_TARGETS[t] for t in targets)], "l" + "r" * len(targets), cells)


@view
def quant_table_machine(record: Record) -> str:
    """Which machine and run the quantization table is (the record's header, the compares' loads)."""
    loads = [float(c["load_average_at_end"].split(" / ")[0]) for c in record["compares"].values()]
    return (f"{_cpu(record['machine'])}, commit {(record['git_commit'] or 'unknown')[:7]}, {record['date']}, "
            f"1-minute load average {span(loads, 1)} when each compare ended")


def _who(targets: list[str], of: list[str], every: str = "every static INT8 target") -> str:
    """``every static INT8 target``, ``no target``, or the targets by name (``ONNX and LiteRT``)."""
    if targets and targets == of:
        return every
    names = [TARGET_NAMES[t] for t in targets]
    return _listed(names) if names else "no target"


def _meeting(record: Record, compare: str, row: str, image_set: str | None = None) -> tuple[list[str], list[str]]:
    """(targets whose ``row`` meets the gate on ``image_set``, or on every set; all the row's targets)."""
    rows = _rows(record, compare, row)
    met = [r["target"] for r in rows if (r["budget_met"][image_set] if image_set else all(r["budget_met"].values()))]
    return met, [r["target"] for r in rows]


def _static_rows(record: Record) -> dict[str, dict[str, Record]]:
    """The static compare's rows by kind (PTQ, mixed, QAT, QAT+mixed), then by target."""
    rows: dict[str, dict[str, Record]] = {}
    for row in _rows(record, "static"):
        rows.setdefault(row["row"], {})[row["target"]] = row
    return rows


@view
def quant_readme_static_table(record: Record) -> str:
    """Full static INT8 and the mixed recipe on every static INT8 target, both image sets (3 digits)."""
    rows = _static_rows(record)
    return _target_grid("static INT8, mask IoU mean / p5", list(README_TARGETS),
                        [("full INT8, synthetic", rows["PTQ"], SYNTHETIC), ("full INT8, dogs.jpg crops", rows["PTQ"], PHOTOS),
                         ("mixed, synthetic", rows["mixed"], SYNTHETIC), ("mixed, dogs.jpg crops", rows["mixed"], PHOTOS)])


@view
def quant_readme_mixed_summary(record: Record) -> str:
    """README's sentence: the mixed recipe's float layers, who meets the gate on both sets, GT mIoU."""
    count, total, _ = _recipe_layers(record, "mixed.json")
    met, of = _meeting(record, "static", "mixed")
    budget = record["compares"]["static"]["budget"]
    verb = "meet" if 1 < len(met) < len(of) else "meets"  # "ONNX and LiteRT meet"; "every ... / no target meets"
    return (f"the recipe keeps {count} of {total} layers float, and {_who(met, of)} {verb} mean >= {budget['min_mask_iou']} / "
            f"p5 >= {budget['min_mask_iou_p5']} on held-out synthetic images and on dogs.jpg crops nothing was calibrated "
            f"or chosen on, with GT mIoU within {_gt_delta(record, 'static', 'mixed'):.1f} points of fp32")


@view
def quant_mixed_recipe(record: Record) -> str:
    """The mixed recipe: which layers it keeps float, and the share of the encoder's FLOPs left INT8."""
    count, total, layers = _recipe_layers(record, "mixed.json")
    share = record["recipes"]["mixed.json"]["int8_flop_share"]
    return (f"keeps {count} of the {total} encoder layers float: {layers}; INT8 runs {share:.0%} of the encoder's "
            f"FLOPs at {record['recipes']['mixed.json']['img_size']} px")


@view
def quant_gate_recipe(record: Record) -> str:
    """The search under the gate itself (ranking.json): its float layers, how its own search scored it,
    and the exported recipe on the dogs.jpg crops, lowest target first."""
    count, _, layers = _recipe_layers(record, "ranking.json")
    recipe = record["recipes"]["ranking.json"]
    rows = sorted(_rows(record, "gate-recipe"), key=lambda r: r["sets"][PHOTOS]["mask_iou_p5"])
    missed = [r["target"] for r in rows if not r["budget_met"][PHOTOS]]
    lowest = rows[0]
    return (f"kept only {count} layers float ({layers}) and met it on the search's own held-out images "
            f"({_pair(recipe['simulated'], 3)} simulated, the worst of the {len(recipe['targets'])} targets), but exported and measured on the "
            f"dogs.jpg crops it missed it on {_who(missed, [r['target'] for r in rows], 'every target')} "
            f"({TARGET_NAMES[lowest['target']]} {_pair(lowest['sets'][PHOTOS], 3)})")


@view
def quant_static_table(record: Record) -> str:
    """Every static INT8 row per target (PTQ, mixed, QAT, QAT+mixed), then the target's dynamic or
    weight-only row, under the fp32 model's own line."""
    fp32 = record["compares"]["static"]["reference"]
    budget = record["compares"]["static"]["budget"]
    rows = [["PyTorch fp32", "-", "-", "all", f"{fp32['size_mb']:.1f}", "-", "-", _gt({"gt_miou": fp32["gt_miou"][SYNTHETIC]}), "-"]]
    extra = _rows(record, "dynamic") + _rows(record, "weight-only")
    for target in record["compares"]["static"]["targets"]:
        for row in [r for r in _rows(record, "static") if r["target"] == target] + [r for r in extra if r["target"] == target]:
            recipe = f"`{Path(record['compares']['static']['mixed']).name}`" if "mixed" in row["row"] else row["recipe"]
            rows.append([f"{target} ({row['runs_on']})", row["row"], recipe, row["float_layers"], f"{row['size_mb']:.1f}",
                         _pair(row["sets"][SYNTHETIC]), _pair(row["sets"][PHOTOS]), _gt(row["sets"][SYNTHETIC]), _gate(row)])
    return table(["target (runs on)", "row", "recipe", "float layers", "size MB", "synthetic: mean / p5",
                  "dogs.jpg crops: mean / p5", "GT mIoU box / 1-click", f"gate {budget['min_mask_iou']} / {budget['min_mask_iou_p5']}"],
                 "lllrrrrrl", rows)


@view
def quant_mixed_gate(record: Record) -> str:
    """Who the mixed recipe meets the gate for, on both sets."""
    met, of = _meeting(record, "static", "mixed")
    return f"Mixed meets the gate on {_who(met, of)}, on both sets" if met else "Mixed meets the gate on no target on both sets"


@view
def quant_mixed_gt(record: Record) -> str:
    """Mixed rows' GT mIoU against fp32's, on the synthetic set."""
    fp32 = record["compares"]["static"]["reference"]["gt_miou"][SYNTHETIC]
    n_images = record["compares"]["static"]["sets"][SYNTHETIC]["count"]
    return (f"within {_gt_delta(record, 'static', 'mixed'):.1f} points of fp32 (box {fp32['box'] * 100:.2f}, "
            f"1-click {fp32['1-click'] * 100:.2f} on these {n_images} images)")


@view
def quant_ptq_gate(record: Record) -> str:
    """Full static INT8 against the gate: who meets it on the photo crops (their p5 span), and on the synthetic set."""
    photo, of = _meeting(record, "static", "PTQ", PHOTOS)
    synthetic, _ = _meeting(record, "static", "PTQ", SYNTHETIC)
    p5 = span([r["sets"][PHOTOS]["mask_iou_p5"] for r in _rows(record, "static", "PTQ")], 2)

    def on(targets: list[str]) -> str:
        if not targets:
            return "on no target"
        return "on every target" if targets == of else f"on none but {_who(targets, of)}"
    return f"meets it {on(photo)} on the photo crops (p5 {p5}) and {on(synthetic)} on the synthetic set"


@view
def quant_qat_run(record: Record) -> str:
    """The QAT run's settings, as the bullet says them."""
    qat, training = record["qat"], record["qat"]["training"]
    ranges = training["activation_ranges"]
    frozen = ("ranges frozen at the calibrated min / max" if ranges["frozen_after_step"] == 0
              else f"ranges learned for {ranges['frozen_after_step']} steps")
    return (f"{qat['steps']} steps of batch {training['batch_size']} on the synthetic train split, "
            f"lr {_lr(training['lr'])}, {frozen}")


@view
def quant_qat_vs_ptq(record: Record) -> str:
    """QAT against PTQ per target on each set's p5: where it is above and where below."""
    rows = _static_rows(record)
    parts = []
    for image_set, name in ((SYNTHETIC, "synthetic"), (PHOTOS, "photo")):
        p5 = {t: (rows["QAT"][t]["sets"][image_set]["mask_iou_p5"], rows["PTQ"][t]["sets"][image_set]["mask_iou_p5"])
              for t in rows["QAT"]}
        above = [t for t, (qat, ptq) in p5.items() if qat > ptq]
        below = [t for t in p5 if t not in above]
        if not above or not below:
            parts.append(f"on the {name} p5 it is {'above' if above else 'below'} PTQ on every target")
            continue
        pairs = " and ".join(f"{p5[t][0]:.3f} vs {p5[t][1]:.3f}" for t in above)
        parts.append(f"on the {name} p5 it is above PTQ on {_who(above, list(p5))} ({pairs}) and below on {_who(below, list(p5))}")
    return "; ".join(parts)


@view
def quant_qat_mixed_vs_mixed(record: Record) -> str:
    """QAT+mixed against mixed with the original weights, the synthetic set, averaged over the targets."""
    rows = _static_rows(record)

    def mean(kind: str) -> str:
        measured = [r["sets"][SYNTHETIC] for r in rows[kind].values()]
        return f"{sum(m['mask_iou_mean'] for m in measured) / len(measured):.3f} / {sum(m['mask_iou_p5'] for m in measured) / len(measured):.3f}"
    below = all(rows["QAT+mixed"][t]["sets"][SYNTHETIC]["mask_iou_p5"] < rows["mixed"][t]["sets"][SYNTHETIC]["mask_iou_p5"]
                for t in rows["mixed"])
    return (f"{'below' if below else 'not always below'} mixed with the original weights ({mean('QAT+mixed')} vs "
            f"{mean('mixed')} synthetic, the targets' mean)")


@view
def quant_dynamic_gate(record: Record) -> str:
    """Dynamic INT8 and Core ML's weight-only W8 against the gate on each set."""
    rows = _rows(record, "dynamic") + _rows(record, "weight-only")

    def names(image_set: str) -> list[str]:
        return [f"{TARGET_NAMES[r['target']]} {'W8' if r['recipe'].startswith('w8') else 'dynamic'}"
                for r in rows if r["budget_met"][image_set]]

    def who(found: list[str]) -> str:
        return _listed(found) if found else "none"
    synthetic, photos = names(SYNTHETIC), names(PHOTOS)
    kept = "keep synthetic images" if len(synthetic) == len(rows) else f"keep synthetic images on {who(synthetic)}"
    verb = "meets" if len(photos) == 1 else "meet"
    return f"{kept}; on the photos {'only ' * (0 < len(photos) < len(rows))}{who(photos)} {verb} the gate"


@view
def quant_mixed_size(record: Record) -> str:
    """How much the float layers cost in size: mixed against full INT8, ONNX's pair, and fp32's weights."""
    rows = _static_rows(record)
    extra = [rows["mixed"][t]["size_mb"] - rows["PTQ"][t]["size_mb"] for t in rows["mixed"]]
    onnx = (rows["mixed"]["onnx"]["size_mb"], rows["PTQ"]["onnx"]["size_mb"])
    fp32 = record["compares"]["static"]["reference"]["size_mb"]
    return (f"{span(extra, 0)} MB larger than full INT8 ({onnx[0]:.1f} vs {onnx[1]:.1f} MB for ONNX), still smaller than "
            f"the fp32 model's weights ({fp32:.1f} MB)")


@view
def quant_mixed_size_mb(record: Record) -> str:
    """README: the mixed recipe's size cost, the largest over the targets."""
    rows = _static_rows(record)
    return f"{max(rows['mixed'][t]['size_mb'] - rows['PTQ'][t]['size_mb'] for t in rows['mixed']):.0f} MB"


@view
def quant_qat_table(record: Record) -> str:
    """docs/qat.md: PTQ against QAT per target (how the target took QAT's ranges), both sets, 4 digits."""
    rows = _static_rows(record)
    cells = []
    for target, qat in rows["QAT"].items():
        ranges = "learned ranges" if (qat.get("activation_ranges") or "").startswith("learned") else "re-calibrated"
        ptq = rows["PTQ"][target]
        cells.append([DEPLOY_LADDER_NAMES[target], ranges, _pair(ptq["sets"][SYNTHETIC]), _pair(qat["sets"][SYNTHETIC]),
                      _pair(ptq["sets"][PHOTOS]), _pair(qat["sets"][PHOTOS])])
    return table(["target", "QAT's activation ranges", "PTQ synthetic", "QAT synthetic", "PTQ dogs.jpg crops",
                  "QAT dogs.jpg crops"], "llrrrr", cells)


@view
def quant_readme_a16_table(record: Record) -> str:
    """W8A16 on every static INT8 target (those without 16-bit activations say so), both image sets."""
    a16 = {r["target"]: r for r in _rows(record, "a16")}
    return _target_grid(f"W8A16 (`{next(iter(a16.values()))['recipe']}`), mask IoU mean / p5", list(README_TARGETS),
                        [("synthetic", a16, SYNTHETIC), ("dogs.jpg crops", a16, PHOTOS)])


@view
def quant_a16_table(record: Record) -> str:
    """W8A16 everywhere, and the a16-fallback mixed recipe, with embedding SQNR."""
    def pair(measured: Record) -> str:
        return f"{_pair(measured)} ({measured['embedding_sqnr_db_mean']:.1f} dB)"

    rows = []
    for name in ("a16", "mixed-a16"):
        compare = record["compares"][name]
        recipe_file = Path(compare["mixed"]).name if compare["mixed"] else None
        for row in _rows(record, name, "mixed" if recipe_file else None):
            runs_on = "LiteRT, 16x8 reference kernels" if row["target"] == "tflite" else row["runs_on"]
            recipe = row["recipe"]
            if recipe_file:
                n_layers = record["recipes"][recipe_file]["n_layers"]
                recipe = f"`{recipe_file}`: {row['a16_layers']} layers a16, {n_layers - row['a16_layers']} int8"
            rows.append([f"{row['target']} ({runs_on})", recipe, row["float_layers"], f"{row['size_mb']:.1f}",
                         pair(row["sets"][SYNTHETIC]), pair(row["sets"][PHOTOS]), _gt(row["sets"][SYNTHETIC]), _gate(row)])
    budget = record["compares"]["a16"]["budget"]
    return table(["target (runs on)", "recipe", "float layers", "size MB", "synthetic: mean / p5 (emb. SQNR)",
                  "dogs.jpg crops: mean / p5 (emb. SQNR)", "GT mIoU box / 1-click",
                  f"gate {budget['min_mask_iou']} / {budget['min_mask_iou_p5']}"], "llrrrrrl", rows)


@view
def quant_a16_gt(record: Record) -> str:
    return f"within {_gt_delta(record, 'a16'):.2f} points of fp32"


@view
def quant_a16_recipe(record: Record) -> str:
    """The a16-fallback recipe: how many layers keep int8 activations, and which get 16 bits."""
    count, total, layers = _recipe_layers(record, "mixed-a16.json")
    return f"keeps the {total - count} layers it can at int8 activations and puts the other {count} ({layers}) at int16"


@view
def quant_a16_mixed_onnx(record: Record) -> str:
    """README's summary of the a16-fallback search on ONNX."""
    count, total, _ = _recipe_layers(record, "mixed-a16.json")
    return f"ONNX: {count} of {total} layers, {_pair(_row(record, 'mixed-a16', 'onnx', 'mixed')['sets'][PHOTOS], 3)} on the photo crops"


@view
def quant_a16_photo_p5(record: Record) -> str:
    """The a16-fallback recipe's photo p5 on ONNX against W8A16 everywhere."""
    mixed, full = _row(record, "mixed-a16", "onnx", "mixed"), _row(record, "a16", "onnx")
    return f"p5 {mixed['sets'][PHOTOS]['mask_iou_p5']:.3f} vs {full['sets'][PHOTOS]['mask_iou_p5']:.3f}"
