"""AOTInductor packages of one model at fp32, bf16 and INT8 (static and dynamic): what compiling
took, how far each drifts from the fp32 PyTorch model, and its host encoder time as a ratio to PyTorch eager.

    python benchmarks/aoti_precisions.py [--checkpoint reference] [--threads 1] [--out out/aoti-precisions] \\
        [--json docs/results/aoti_precisions.json]

Images: the bundled deploy set (synthetic scenes and photo crops), split as deploy splits it: 8
calibrate the INT8 package, 11 held out measure drift (mask IoU vs fp32 on every validation
prompt, as ``edge-sam validate``). Timing: the PyTorch model (fp32 eager, bf16 autocast) and each
package's ``encode`` in interleaved rounds in this one process (all of them torch, one thread
pool), min over rounds; PyTorch's own bf16 autocast is measured beside the bf16 package (drift
and time), so the bf16 package's drift can be told from bf16's own. Only ratios in one run mean anything, and on a CPU without AMX they say
nothing about AMX. Writes a JSON record with the header of benchmarks/records.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from records import REPO, record_header, write_record  # noqa: E402  (a sibling module)

CALIBRATION, SEARCH, HELD_OUT = 8, 1, 11  # the 20 bundled images (search: unused here)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="reference")
    parser.add_argument("--precisions", default="fp32,bf16,int8,int8:dynamic-linear",
                        help="PRECISION[:RECIPE], comma-separated (int8 alone: the default static recipe)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, compiled into the packages too")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "aoti-precisions")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "aoti_precisions.json")
    args = parser.parse_args()
    header = record_header()

    import torch

    import edge_sam
    from edge_sam.image_sources import image_folder
    from edge_sam.runner import TorchRunner
    from edge_sam.targets import get_target, load_runner
    from edge_sam.targets.deploy.images import bundled_images, split_images
    from edge_sam.targets.validation.drift import measure_drift
    from edge_sam.transforms import read_image

    torch.set_num_threads(args.threads)
    model = edge_sam.load_model(args.checkpoint)
    split = split_images(bundled_images(), CALIBRATION, SEARCH, HELD_OUT)
    calibration_dir, held_out_dir = args.out / "calibration", args.out / "held_out"
    for folder, paths in ((calibration_dir, split.calibration), (held_out_dir, split.held_out)):
        folder.mkdir(parents=True, exist_ok=True)
        for path in paths:
            (folder / path.name).write_bytes(path.read_bytes())
    rows = {}
    for spec in args.precisions.split(","):
        precision, _, recipe = spec.partition(":")
        start = time.perf_counter()
        artifact = get_target("aoti").export(model, precision, recipe or None, args.out / spec.replace(":", "-"),
                                             overwrite=True,
                                             calibration=image_folder(calibration_dir) if precision == "int8" else None)
        rows[spec] = {"export_s": round(time.perf_counter() - start, 1), "artifact": str(artifact)}
    runners = {spec: load_runner(row["artifact"]) for spec, row in rows.items()}
    # PyTorch's own bf16 (autocast, eager) beside the bf16 package: how much of the drift is bf16's own
    rows["pytorch bf16 eager"] = {}
    runners["pytorch bf16 eager"] = TorchRunner(model, precision="bf16")
    report = measure_drift(TorchRunner(model), list(runners.values()), image_folder(held_out_dir), measure_memory=False)
    for precision, drift in zip(runners, report.runners):
        summary = drift.summary()
        rows[precision].update({key: summary[key] for key in ("mask_iou_mean", "mask_iou_p5", "mask_iou_worst",
                                                               "embedding_sqnr_db_mean", "top_choice_agreement", "bytes")})

    timed = {"pytorch fp32 eager": TorchRunner(model),
             **{name if name.startswith("pytorch") else f"aoti {name}": runner for name, runner in runners.items()}}
    image = read_image(split.held_out[0])
    best = {name: float("inf") for name in timed}
    for runner in timed.values():
        runner.encode(image)  # warm-up
    for _ in range(args.rounds):
        for name, runner in timed.items():
            start = time.perf_counter()
            runner.encode(image)
            best[name] = min(best[name], time.perf_counter() - start)
    baseline = best["pytorch fp32 eager"]
    timings = {name: {"encoder_min_ms": round(1e3 * seconds, 2), "x_pytorch_fp32_eager": round(baseline / seconds, 2)}
               for name, seconds in best.items()}
    record = {**header, "settings": {"checkpoint": args.checkpoint, "img_size": model.image_encoder.img_size,
                                     "threads": args.threads, "rounds": args.rounds,
                                     "calibration_images": CALIBRATION, "held_out_images": HELD_OUT},
              "packages": rows, "encoder_timing": timings}
    write_record(args.json, record)
    print(json.dumps({"packages": rows, "encoder_timing": timings}, indent=2, default=str))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
