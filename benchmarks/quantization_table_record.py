"""Gather what the stages of benchmarks/quantization_table.sh wrote into one record, the source of
the quantization tables in README.md, docs/quantization.md and docs/qat.md.

    python benchmarks/quantization_table_record.py WORK_DIR --record docs/results/quantization_table.json

(the script's ``record`` stage runs it). It reads the recipe files ``quantize mixed`` wrote
(``ranking.json``: the search under the gate itself, whose ranking the others reuse; ``mixed.json``;
``mixed-a16.json``), the QAT checkpoint's ``qat/qat.json`` and every ``compare-*/compare.json``,
and keeps accuracy, sizes, layer counts and GT mIoU. Timings are left out: ``compare`` times each
encoder once per image on whatever else the CPU is doing (the ``latency`` stage times them, on a
quiet machine). The record's command is the script call that regenerates every output it found.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from records import REPO, record_header, write_record  # noqa: E402

RECIPE_FILES = ("ranking.json", "mixed.json", "mixed-a16.json")
QAT_FILE = Path("qat") / "qat.json"
COMPARE_FILE = "compare.json"
TIMING_KEYS = ("encoder_p50_s",)  # measured under load inside compare: not published
RECIPE_KEYS = ("targets", "img_size", "budget", "fallback", "calibration", "held_out", "n_prompts", "int8_flop_share",
               "full_int8", "simulated", "verified")


def recipe_summary(path: Path) -> dict[str, Any]:
    """A ``quantize mixed`` recipe file: which layers left INT8 (and to what), and how the search scored it."""
    data = json.loads(path.read_text())
    layers = data["layers"]
    provenance = data.get("provenance") or {}
    out_of_int8 = [layer for layer, choice in layers.items() if choice != data["scheme"]]
    return {"name": data["name"], "base": data["base"], "n_layers": len(layers), "layers_out_of_int8": out_of_int8,
            **{key: provenance.get(key) for key in RECIPE_KEYS}}


def qat_summary(path: Path) -> dict[str, Any]:
    """The QAT run's settings (its learned parameters stay in the checkpoint)."""
    data = json.loads(path.read_text())
    return {"recipe": data["recipe"]["name"], "img_size": data["img_size"], "steps": data["steps"],
            "teacher": data["teacher"]["checkpoint"], "training": data["training"]}


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: without_timing(item) for key, item in value.items() if key not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timing(item) for item in value]
    return value


def compare_summary(path: Path) -> dict[str, Any]:
    """One ``quantize compare`` run: its setup, the fp32 reference and every row, without timings;
    its machine reduced to the load when it finished (the record's header says which machine)."""
    data = json.loads(path.read_text())
    machine = data.pop("machine")
    return {**without_timing(data), "load_average_at_end": machine["load_average"]}


def finished_at(path: Path) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(path.stat().st_mtime))


def gather(work: Path) -> tuple[dict[str, Any], list[str]]:
    """(the numbers every stage's output holds, the stages that wrote them, in the script's order)."""
    outputs: dict[str, Path] = {}
    record: dict[str, Any] = {"recipes": {}, "qat": None, "compares": {}}
    for name in RECIPE_FILES:
        if (work / name).is_file():
            outputs[name] = work / name
            record["recipes"][name] = recipe_summary(work / name)
    if (work / QAT_FILE).is_file():
        outputs[str(QAT_FILE)] = work / QAT_FILE
        record["qat"] = qat_summary(work / QAT_FILE)
    for path in sorted(work.glob(f"compare-*/{COMPARE_FILE}")):
        outputs[str(path.relative_to(work))] = path
        record["compares"][path.parent.name.removeprefix("compare-")] = compare_summary(path)
    stages = ["data"] * (work / "synth").is_dir() + ["mixed"] * bool(record["recipes"]) + ["qat"] * bool(record["qat"])
    stages += ["compare"] * bool(record["compares"])
    record["finished"] = {name: finished_at(path) for name, path in outputs.items()}
    return record, stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path, help="the WORK_DIR benchmarks/quantization_table.sh wrote")
    parser.add_argument("--record", type=Path, default=REPO / "docs" / "results" / "quantization_table.json",
                        help="the JSON record to write (default: %(default)s)")
    args = parser.parse_args(argv)
    header = record_header()
    numbers, stages = gather(args.work)
    if not numbers["compares"]:
        parser.error(f"{args.work} holds no compare-*/{COMPARE_FILE}: run the script's compare stage first")
    work = args.work.resolve()
    shown = work.relative_to(REPO) if work.is_relative_to(REPO) else args.work
    header["command"] = f"bash benchmarks/quantization_table.sh {shown} {' '.join(stages)} record"
    write_record(args.record, {**header, "work_dir": str(shown), **numbers})
    print(f"{len(numbers['finished'])} outputs of stages {', '.join(stages)} -> {args.record}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
