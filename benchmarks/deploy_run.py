"""Run ``edge-sam deploy`` and record what it took: wall time, CPU time and peak RSS of the run,
next to deploy's own record (``OUT/deploy.json``) and the held-out rows of its report.

    python benchmarks/deploy_run.py --record docs/results/deploy_parity_1024.json -- \\
        --checkpoint tests/data/parity/efficient_sam_vitt_random_seed1234.pt \\
        --targets onnx,executorch,tflite --precisions fp32,int8 \\
        --calibration-images 4 --search-images 4 --held-out-images 4 --out parity_out

Peak RSS is the largest resident set of the deploy process (or of any process it started), as the
kernel reports it for waited-for children. Time it only with nothing else running on the machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import record_header, write_record  # noqa: E402

HELD_OUT_KEYS = ("bytes", "mask_iou_mean", "mask_iou_p5", "encoder_p50_s", "decoder_p50_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, required=True, help="JSON record to write")
    parser.add_argument("deploy_args", nargs=argparse.REMAINDER, help="-- then edge-sam deploy's arguments (with --out)")
    args = parser.parse_args()
    deploy_args = args.deploy_args[1:] if args.deploy_args[:1] == ["--"] else args.deploy_args
    if "--out" not in deploy_args:
        parser.error("give deploy's --out after --")
    out = Path(deploy_args[deploy_args.index("--out") + 1])
    header = record_header()
    beside_python = Path(sys.executable).parent / "edge-sam"
    edge_sam = str(beside_python) if beside_python.is_file() else shutil.which("edge-sam")
    if edge_sam is None:
        parser.error("edge-sam is not installed beside this python nor on PATH (pip install -e .)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([edge_sam, "deploy", *deploy_args], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    report = json.loads((out / "report" / "report.json").read_text())
    deployed = json.loads((out / "deploy.json").read_text())
    record = {
        **header,
        "measured": {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "peak_rss_gb": round(after.ru_maxrss / 1e6, 2)},
        "deploy": deployed,
        "held_out_rows": [{"artifact": Path(row["artifact_dir"]).name if row.get("artifact_dir") else row["label"],
                           **{key: row.get(key) for key in HELD_OUT_KEYS}} for row in report["rows"]],
    }
    write_record(args.record, record)
    minutes, seconds = divmod(round(wall), 60)
    print(f"deploy took {minutes} min {seconds} s wall, {cpu:.0f} s CPU, peak RSS {after.ru_maxrss / 1e6:.2f} GB "
          f"-> {args.record}")


if __name__ == "__main__":
    main()
