"""benchmarks/int8_error_sources.py on a tiny model: the record holds what the script printed (one
structure behind both), and its numbers obey what they measure."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from conftest import benchmark_script

from edge_sam.checkpoint import save_model

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.torch_threads(1)


def test_the_record_is_what_the_script_printed(make_tiny_model, tiny_synthetic, tmp_path, monkeypatch, capsys):
    data = tiny_synthetic(train=4, test=6)
    checkpoint = save_model(make_tiny_model(seed=3), tmp_path / "tiny.safetensors")
    record_path = tmp_path / "sources.json"
    script = benchmark_script("int8_error_sources")
    monkeypatch.setattr(sys, "argv", [
        str(ROOT / "benchmarks" / "int8_error_sources.py"), "--checkpoint", str(checkpoint), "--images", str(data / "test"), "--train", str(data / "train"),
        "--calibration-images", "2", "--held-out-images", "4", "--top", "2", "--steps", "4", "--lr", "1e-4,1e-3",
        "--threads", "1", "--record", str(record_path)])
    script.main()
    printed = capsys.readouterr().out
    record = json.loads(record_path.read_text())

    assert record["command"].startswith("python benchmarks/int8_error_sources.py --checkpoint")
    names = record["sets"]
    assert (script.split_text(record["split"], record["recipe"], names) in printed
            and script.costliest_text(record["activations"], names) in printed)
    headroom = record["headroom"]
    for run in headroom["runs"]:
        assert script.headroom_text(headroom, run, names) in printed

    split = {row["fake_quantized"]: row["scores"] for row in record["split"]["rows"]}
    for key in names:  # rounding only the weights keeps more of the embedding than rounding everything
        assert split["weights only"][key]["embedding_sqnr_db"] > split["everything"][key]["embedding_sqnr_db"]
    alone = record["activations"]["alone"]
    assert len(alone) == record["split"]["activation_quantizers"]
    assert [q["embedding_sqnr_db"] for q in alone] == sorted(q["embedding_sqnr_db"] for q in alone)
    assert all(q["peak_over_rms"] >= 1.0 for q in alone[:2]) and all("peak_over_rms" not in q for q in alone[2:])
    assert [[point["step"] for point in run["trace"]] for run in headroom["runs"]] == [[1, 2, 3, 4]] * 2
    assert all(math.isfinite(point["batch_sqnr_db"]) for run in headroom["runs"] for point in run["trace"])
