"""The one per-layer comparator every runtime's adapter feeds: SQNR summed over images, the
upstream walk through uncompared values, and the drop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import require_toolchain

from edge_sam.eval.metrics import energy_ratio_db, sqnr_db
from edge_sam.targets.core.layer_drift import Layer, SqnrSums, layer_rows, upstream_sqnr


def _with_sqnr(reference: np.ndarray, db: float, rng: np.random.Generator) -> np.ndarray:
    """``reference`` plus noise scaled so the result is exactly ``db`` dB from it."""
    noise = rng.standard_normal(reference.shape)
    noise *= math.sqrt(np.sum(reference**2) / 10 ** (db / 10) / np.sum(noise**2))
    return reference + noise


def test_sqnr_is_summed_over_images_not_averaged_in_db():
    rng = np.random.default_rng(0)
    loud, quiet = rng.standard_normal(1000) * 10, rng.standard_normal(1000)
    loud_test, quiet_test = _with_sqnr(loud, 40.0, rng), _with_sqnr(quiet, 10.0, rng)
    sums = SqnrSums()
    sums.add("a", loud, loud_test)
    sums.add("a", quiet, quiet_test)
    signal = np.sum(loud**2) + np.sum(quiet**2)
    noise = np.sum((loud - loud_test) ** 2) + np.sum((quiet - quiet_test) ** 2)
    assert sums.sqnr_db()["a"] == pytest.approx(10 * math.log10(signal / noise))
    assert sqnr_db(loud, loud_test) == pytest.approx(40.0) and sqnr_db(quiet, quiet_test) == pytest.approx(10.0)
    assert energy_ratio_db(0.0, 1.0) == -math.inf and energy_ratio_db(1.0, 0.0) == math.inf


def test_values_of_different_sizes_are_not_compared():
    sums = SqnrSums()
    sums.add("same", np.ones(4), np.ones(4))
    sums.add("ended-differently", np.ones(4), np.ones(6))
    sums.add("ended-differently", np.ones(4), np.ones(4))  # a later match does not bring it back
    assert sums.sqnr_db() == {"same": math.inf}


def test_rows_walk_upstream_through_uncompared_values():
    """x -> conv -> a -> reshape -> r -> linear(r, w) -> b; only a and b are compared."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(64), rng.standard_normal(64)
    sums = SqnrSums()
    sums.add("a", a, _with_sqnr(a, 30.0, rng))
    sums.add("b", b, _with_sqnr(b, 12.0, rng))
    producer_inputs = {"a": ["x"], "r": ["a"], "b": ["r", "w"]}
    layers = [
        Layer("encoder.conv", "conv (int8)", "a", ("x",), quantized=True),
        Layer("encoder.fc", "linear (float)", "b", ("r", "w"), quantized=False, module="encoder.fc"),
        Layer("never-compared", "softmax", "s", ("b",)),
    ]
    rows = layer_rows(layers, sums.sqnr_db(), producer_inputs)
    assert [row["node"] for row in rows] == ["encoder.conv", "encoder.fc"]
    conv, fc = rows
    assert conv["sqnr_db"] == pytest.approx(30.0) and conv["input_sqnr_db"] == math.inf  # its input is exact
    assert fc["input_sqnr_db"] == pytest.approx(30.0)  # through the reshape, back to a
    assert fc["drop_db"] == pytest.approx(18.0) and fc["quantized"] is False and fc["module"] == "encoder.fc"
    assert "module" not in conv and conv["output"] == "a"


def test_an_exact_layer_on_exact_inputs_drops_nothing():
    rows = layer_rows([Layer("copy", "add", "y", ("x",))], {"y": math.inf}, {"y": ["x"]})
    assert rows[0]["drop_db"] == 0.0


def test_upstream_of_an_uncompared_value_is_its_worst_compared_ancestor():
    upstream = upstream_sqnr({"p": 20.0, "q": 8.0}, {"m": ["p", "n"], "n": ["q"], "p": ["x"]})
    assert upstream("m") == 8.0 and upstream("x") == math.inf and upstream("p") == 20.0


@pytest.mark.slow  # three Core ML conversions of the tiny model: about 30 s on a loaded 2-core CPU
def test_coreml_rows_say_what_each_op_computes_on(make_tiny_model, dogs, tmp_path):
    """The Core ML adapter: both programs run by the host executor, ops matched across the
    fp32 and fp16 naming; a weight-only recipe shows as int8 weights on conv and linear only."""
    require_toolchain("coremltools")
    from edge_sam.targets import get_target, load_runner

    model = make_tiny_model(seed=3)
    artifact = get_target("coreml").export(model, "int8", "w8-conv-linear", tmp_path / "w8")
    image = dogs[::4, ::4].copy()
    rows = get_target("coreml").layer_drift(artifact, load_runner(artifact), model, [image])
    kinds = {row["op_type"] for row in rows}
    assert {"conv (int8 weights)", "linear (int8 weights)", "layer_norm (float)", "softmax (float)"} <= kinds, kinds
    assert all(np.isfinite(row["sqnr_db"]) and row["sqnr_db"] > 20 for row in rows), rows
    assert all(row["quantized"] == row["op_type"].endswith("weights)") for row in rows)
    first = rows[0]
    assert first["node"] == "conv2d" and first["input_sqnr_db"] == math.inf  # the image itself is exact
