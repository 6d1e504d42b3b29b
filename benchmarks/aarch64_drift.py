"""Mask drift of the runtimes' aarch64 builds, run on their ARM kernels under emulation, against fp32
PyTorch and against the same artifact on this x86 host, in one table.

    edge-sam device create aarch64 .device-cache/aarch64      # once (root)
    python benchmarks/aarch64_drift.py --place .device-cache/aarch64 --work aarch64_drift

Exports the reference model (``--checkpoint``) to LiteRT, ONNX Runtime and ExecuTorch at fp32 and
static INT8 (static-conv-linear, calibrated on the synthetic val split), then runs every artifact
here (x86 builds) and in the emulated aarch64 place on each ``--cpus`` (phone: dot product + i8mm +
bf16; orin: dot product only, like Jetson Orin's Cortex-A78AE), on the held-out synthetic test
images with the prompts ``validate`` uses. Every aarch64 run is the artifact's Python runner
(``python -m edge_sam.targets.devices.worker`` in the userland; ExecuTorch through its pybindings).
Two comparisons per aarch64 row: mask IoU vs fp32 PyTorch (what validate reports), and vs the same
artifact's x86 run (the ARM kernels' own rounding). Accuracy only: the emulator's seconds per run
are kept to size runs, not as a device's speed. Writes a JSON record (``--out``) with the command,
commit, machine and date (benchmarks/records.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import edge_sam
from edge_sam.data.synthetic import generate_synthetic
from edge_sam.fixed_prompts import prompts_for
from edge_sam.image_sources import dataset_source
from edge_sam.runner import TorchRunner
from edge_sam.targets import load_runner
from edge_sam.targets.devices.device_runner import RemoteSettings, device_runners, jobs_for
from edge_sam.targets.validation.drift import PROMPT_GRID, measure_drift, warm_up_prompt

from cross_target_drift import Plan, export_all
from records import record_header, write_record

PLANS = (
    Plan("LiteRT fp32", "tflite", "fp32"),
    Plan("LiteRT INT8 static", "tflite", "int8", "static-conv-linear"),
    Plan("ONNX Runtime fp32", "onnx", "fp32"),
    Plan("ONNX Runtime INT8 static", "onnx", "int8", "static-conv-linear"),
    Plan("ExecuTorch XNNPACK fp32", "executorch", "fp32"),
    Plan("ExecuTorch XNNPACK INT8 static", "executorch", "int8", "static-conv-linear"),
)
MAX_OBJECTS = 4


def _round(value, digits: int = 5):
    return None if value is None else round(float(value), digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--place", required=True, help="the emulated place's folder (edge-sam device create aarch64 DIR)")
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--work", default="aarch64_drift", help="folder for the data and artifacts (kept)")
    parser.add_argument("--test-images", type=int, default=4, help="held-out synthetic test images")
    parser.add_argument("--calibration-images", type=int, default=8, help="synthetic val images to calibrate on")
    parser.add_argument("--targets", default="tflite,onnx,executorch", help="comma-separated subset")
    parser.add_argument("--cpus", default="phone,orin", help="emulated CPUs (comma-separated)")
    parser.add_argument("--reuse", action="store_true", help="keep artifacts already in --work")
    parser.add_argument("--out", default="docs/results/aarch64_drift.json", help="the JSON record")
    args = parser.parse_args(argv)

    header = record_header()
    started = time.time()
    model = edge_sam.load_model(args.checkpoint)
    img_size = model.image_encoder.img_size
    work = Path(args.work)
    data = work / "synth"
    missing = {split: n for split, n in (("val", args.calibration_images), ("test", args.test_images)) if not (data / split).is_dir()}
    if missing:
        generate_synthetic(data, missing, img_size=img_size, seed=0, progress=False)
    calibration = dataset_source(data / "val", args.calibration_images)
    held_out = dataset_source(data / "test", args.test_images)
    plans = [p for p in PLANS if p.target in set(args.targets.split(","))]
    artifacts = export_all(model, plans, work, calibration, args.reuse)

    x86 = {plan: load_runner(path) for plan, path in artifacts.items()}
    places = [f"aarch64{'' if cpu == 'phone' else '-' + cpu}:{args.place}" for cpu in args.cpus.split(",")]
    jobs = jobs_for(held_out.samples(), lambda sample: prompts_for(sample, PROMPT_GRID, MAX_OBJECTS), warm_up_prompt)
    emulated = {}
    for place in places:
        start = time.perf_counter()
        runners = device_runners([str(p) for p in artifacts.values()], [place], jobs, RemoteSettings(program="python", warmup=0))
        emulated.update({(plan, place): runner for plan, runner in zip(artifacts, runners)})
        print(f"{place}: {len(runners)} artifacts in {time.perf_counter() - start:.0f} s")

    reference = TorchRunner(model, img_size)
    vs_fp32 = measure_drift(reference, [*x86.values(), *emulated.values()], held_out, max_objects=MAX_OBJECTS, measure_memory=False)
    fp32_rows = {row["label"]: row for row in (r.summary() for r in vs_fp32.runners)}
    rows = []
    for plan in artifacts:
        x86_row = fp32_rows[x86[plan].describe()["label"]]
        row = {"artifact": plan.label, "target": plan.target, "precision": plan.precision, "recipe": plan.recipe,
               "x86": {"mask_iou_vs_fp32": _round(x86_row["mask_iou_mean"]), "embedding_cosine_vs_fp32": _round(x86_row["embedding_cosine_mean"], 6)}}
        for place in places:
            runner = emulated[(plan, place)]
            arm_row = fp32_rows[runner.describe()["label"]]
            vs_x86 = measure_drift(x86[plan], [runner], held_out, max_objects=MAX_OBJECTS, measure_memory=False).runners[0].summary()
            row[place.split(":")[0]] = {
                "mask_iou_vs_fp32": _round(arm_row["mask_iou_mean"]), "embedding_cosine_vs_fp32": _round(arm_row["embedding_cosine_mean"], 6),
                "mask_iou_vs_x86": _round(vs_x86["mask_iou_mean"]), "mask_iou_vs_x86_worst": _round(vs_x86["mask_iou_worst"]),
                "embedding_cosine_vs_x86": _round(vs_x86["embedding_cosine_mean"], 7),
                "embedding_sqnr_db_vs_x86": _round(vs_x86["embedding_sqnr_db_mean"], 1),
                "top_choice_agreement_vs_x86": _round(vs_x86["top_choice_agreement"], 3),
                "emulated_encoder_s": _round(arm_row["encoder_p50_s"], 2),
                "cpu": runner.describe()["remote_machine"]["cpu"],
            }
        rows.append(row)

    record = {**header, "checkpoint": args.checkpoint, "img_size": img_size,
              "images": f"synthetic test split images 0-{args.test_images - 1} (seed 0), {vs_fp32.n_prompts} prompts "
                        f"(box + centre click per object, up to {MAX_OBJECTS} objects per image)",
              "calibration": f"synthetic val split images 0-{args.calibration_images - 1}",
              "place": json.loads((Path(args.place) / "place.json").read_text()),
              "minutes": round((time.time() - started) / 60, 1), "rows": rows}
    write_record(args.out, record)
    kinds = [place.split(":")[0] for place in places]
    print("| artifact | x86 IoU vs fp32 | " + " | ".join(f"{k} IoU vs fp32 | {k} IoU vs x86 (worst) | {k} emb cos vs x86" for k in kinds) + " |")
    print("| --- | ---: | " + " | ".join("---: | ---: | ---:" for _ in kinds) + " |")
    for row in rows:
        cells = [row["artifact"], f"{row['x86']['mask_iou_vs_fp32']:.4f}"]
        for k in kinds:
            arm = row[k]
            cells += [f"{arm['mask_iou_vs_fp32']:.4f}", f"{arm['mask_iou_vs_x86']:.4f} ({arm['mask_iou_vs_x86_worst']:.4f})",
                      f"{arm['embedding_cosine_vs_x86']:.6f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"record: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
