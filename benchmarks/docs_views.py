"""Views: how a record in docs/results/ reads in the docs (benchmarks/docs_tables.py puts them there).

A view is a function from a record (the JSON as loaded) to Markdown: table rows or a phrase.
The docs name a view by its function's name with dashes (``deploy_ship_table`` ->
``deploy-ship-table``). Formats live here, once, so a number reads the same wherever it is quoted.
"""

from __future__ import annotations

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
    for target, ship in sorted(record["deploy"]["ship"].items()):
        row = _held_out(record, ship["artifact"])
        rows.append([target, ship["artifact"], f"{row['mask_iou_mean']:.4f}", f"{row['mask_iou_p5']:.4f}",
                     f"{row['encoder_p50_s']:.3f}", f"{row['decoder_p50_s'] * 1e3:.1f}", f"{row['bytes'] / 1e6:.1f}",
                     ship["why"]])
    return table(["target", "ship", "mask IoU mean", "p5", "encoder p50 s", "decoder p50 ms", "size MB", "why"],
                 "llrrrrrl", rows)


@view
def deploy_time(record: Record) -> str:
    """Wall time, CPU time and peak memory of the whole run, from ``/usr/bin/time -v``."""
    minutes, seconds = record["time_v"]["wall"].split(":")
    return (f"{int(minutes)} min {round(float(seconds))} s of wall time ({record['time_v']['cpu_s']:.0f} s of CPU, "
            f"peak RSS {record['time_v']['peak_rss_gb']:.1f} GB")


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


# -- parity with the reference implementation (benchmarks/parity_errors.py) ---------------------------
@view
def parity_errors(record: Record) -> str:
    errors = record["errors"]
    return (f"image embeddings within 1e-4 of their max (measured: {sci(errors['image_embeddings_rel_max'])}), "
            f"low-res logits within 1e-3 (measured: {sci(errors['low_res_logits_rel_max'])}) and IoU predictions "
            f"within 1e-3 ({sci(errors['iou_predictions_abs_max'])}) for a two-point and a box query, full-size masks "
            f"agreeing on {errors['full_res_mask_agreement'] * 100:.5f}% of pixels")


# -- every target on one held-out set (benchmarks/cross_target_drift.py) ------------------------------
@view
def cross_target_table(record: Record) -> str:
    rows = []
    for row in record["rows"]:
        synthetic, photo = row["synthetic"], row.get("photo")
        rows.append([row["artifact"], row["runs_on"], f"{row['size_mb']:.1f}", f"{synthetic['mask_iou_mean']:.4f}",
                     f"{synthetic['mask_iou_p5']:.4f}", f"{synthetic['mask_iou_worst']:.4f}",
                     f"{synthetic['embedding_sqnr_db_mean']:.1f}",
                     f"{photo['mask_iou_mean']:.4f}" if photo else "-", f"{photo['mask_iou_p5']:.4f}" if photo else "-"])
    return table(["artifact", "runs on", "size MB", "mask IoU mean", "p5", "worst", "emb SQNR dB",
                  "photo crops mask IoU mean", "photo p5"], "llrrrrrrr", rows)


@view
def cross_target_summary(record: Record) -> str:
    return "; ".join(f"{row['artifact']}{' (host executor)' if row['runs_on'] == 'host executor' else ''} "
                     f"{row['synthetic']['mask_iou_mean']:.3f}" for row in record["rows"])
