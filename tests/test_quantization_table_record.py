"""benchmarks/quantization_table_record.py, the record stage of benchmarks/quantization_table.sh:
it gathers what real ``quantize compare`` runs and a recipe file wrote (here on a tiny model)
into one record, without the timings compare takes under load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import benchmark_script, require_toolchain

from edge_sam.apps.cli import main
from edge_sam.checkpoint import save_model
from edge_sam.quantize.layers import quantizable_layers
from edge_sam.quantize.recipe_file import get_recipe, write_recipe_file
from edge_sam.transforms import write_image


pytestmark = pytest.mark.torch_threads(1)


def test_the_record_holds_every_compare_row_and_recipe_without_timings(make_tiny_model, tmp_path, capsys):
    require_toolchain("onnxruntime")
    model = make_tiny_model(seed=3)
    checkpoint = save_model(model, tmp_path / "tiny.safetensors")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        image = np.kron(rng.integers(0, 255, (6, 8, 3)), np.ones((10, 10, 1))) + rng.normal(0, 12, (60, 80, 3))
        write_image(images / f"img_{i}.png", np.clip(image, 0, 255).astype(np.uint8))
    work = tmp_path / "work"
    layers = quantizable_layers(model.config)
    floats = [layers[0], layers[-1]]
    recipe = get_recipe("static-conv-linear").with_layers({layer: "float" if layer in floats else "static" for layer in layers},
                                                          name="mixed")
    write_recipe_file(recipe, work / "mixed.json", {"budget": {"min_mask_iou": 0.5, "min_mask_iou_p5": 0.1}})
    common = ["quantize", "compare", "--checkpoint", str(checkpoint), "--images", str(images), "--calibration-images", "3",
              "--held-out-images", "2", "--targets", "onnx"]
    assert main([*common, "--mixed", str(work / "mixed.json"), "--out", str(work / "compare-static")]) == 0, capsys.readouterr().err

    gatherer = benchmark_script("quantization_table_record")
    out = tmp_path / "record.json"
    assert gatherer.main([str(work), "--record", str(out)]) == 0
    text = out.read_text()
    record = json.loads(text)
    assert record["command"] == f"bash benchmarks/quantization_table.sh {work} mixed compare record"
    assert record["recipes"]["mixed.json"]["layers_out_of_int8"] == floats
    assert record["recipes"]["mixed.json"]["n_layers"] == len(layers) and record["qat"] is None
    assert list(record["compares"]) == ["static"]
    static = record["compares"]["static"]
    assert [(r["row"], r["float_layers"]) for r in static["rows"]] == [("PTQ", 0), ("mixed", 2)]
    assert all(0 < r["sets"]["held-out"]["mask_iou_mean"] <= 1 and r["size_mb"] > 0 for r in static["rows"])
    assert all(r["activation_ranges"] is None for r in static["rows"])  # said for QAT rows only
    assert static["budget"] == {"min_mask_iou": 0.5, "min_mask_iou_p5": 0.1} and static["load_average_at_end"]
    assert "encoder_p50_s" not in text and "machine" not in static and record["machine"]["cpu_count"] > 0
    assert set(record["finished"]) == {"mixed.json", "compare-static/compare.json"}

    (work / "compare-static" / "compare.json").unlink()
    with pytest.raises(SystemExit) as exc:
        gatherer.main([str(work), "--record", str(out)])
    assert exc.value.code == 2 and "holds no compare-*/compare.json" in capsys.readouterr().err
