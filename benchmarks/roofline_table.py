"""The bench table against each data type's roofline, recorded: ``edge-sam bench --table`` over the
PyTorch rows, every runtime's fp32 and INT8 exports and the AOTInductor packages (fp32, bf16, INT8
where the CPU has VNNI or AMX), written with its record header to docs/results/.

    python benchmarks/roofline_table.py --checkpoint tests/data/parity/efficient_sam_vitt_random_seed1234.pt \\
        --out out/roofline [--json docs/results/bench_roofline.json] [--rounds 5] [--threads 2]

Run it on a quiet machine: it times every path in interleaved rounds, one process per runtime
(:mod:`edge_sam.targets.benchmarking.run`), and measures this CPU's matrix rate per data type in
the same rounds. The record holds the header (command, commit, date, machine), the bench's own
bench.json (raw timings, rates, rows) and its markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from records import REPO, record_header, write_record  # noqa: E402  (a sibling module)

# One spec per row (TARGET:PRECISION[:RECIPE]); the INT8 rows use the default static recipe.
EXPORTS = ("onnx:fp32", "onnx:int8", "tflite:fp32", "tflite:int8", "executorch:fp32", "executorch:int8",
           "aoti:fp32", "aoti:bf16", "aoti:int8")
TORCH_ROWS = ("fp32", "bf16")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", type=Path, required=True, help="the bench's folder (artifacts, logs, bench.*)")
    parser.add_argument("--json", type=Path, default=REPO / "docs" / "results" / "bench_roofline.json")
    parser.add_argument("--export", action="append", default=None, help=f"override the rows (default {', '.join(EXPORTS)})")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reuse-exports", action="store_true")
    args = parser.parse_args()
    header = record_header()
    command = [sys.executable, "-m", "edge_sam.apps.cli", "bench", "--table", "--checkpoint", args.checkpoint,
               "--out", str(args.out), "--rounds", str(args.rounds), "--bench-threads", str(args.threads)]
    for spec in args.export or EXPORTS:
        command += ["--export", spec]
    for precision in TORCH_ROWS:
        command += ["--torch", precision]
    command += ["--reuse-exports"] if args.reuse_exports else []
    subprocess.run(command, check=True)
    bench = json.loads((args.out / "bench.json").read_text())
    write_record(args.json, {**header, "bench": bench, "table_md": (args.out / "bench.md").read_text()})
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
