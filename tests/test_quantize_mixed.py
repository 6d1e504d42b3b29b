"""Per-layer INT8: the recipe registry and recipe files, the per-layer simulation, sensitivity,
the mixed-precision search and its errors, and the targets honouring per-layer choices."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import require_toolchain

from edge_sam.apps.cli import main
from edge_sam.checkpoint import save_model
from edge_sam.quantize.studies.heldout import HeldOutSet, split_images
from edge_sam.quantize.layers import quantizable_layers, scope_in_layer
from edge_sam.quantize.recipe_file import read_recipe_file, recipe_from_manifest, write_recipe_file
from edge_sam.quantize.recipes import RECIPES, RecipeError
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.targets import get_target, image_folder
from edge_sam.transforms import read_image, write_image

require_toolchain("torchao.quantization.pt2e")
require_toolchain("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")

STATIC = "static-conv-linear"


pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Eight textured non-square images (grid and box prompts: no annotations needed)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(8):
        base = rng.integers(0, 255, (6, 8, 3)).astype(np.float32)
        image = np.kron(base, np.ones((10, 10, 1))) + rng.normal(0, 12, (60, 80, 3))
        write_image(folder / f"img_{i}.png", np.clip(image, 0, 255).astype(np.uint8))
    return folder


MODEL_SEED = 3  # the tiny weights of conftest's module-scoped `model` fixture


@pytest.fixture(scope="module")
def split(images):
    return split_images(image_folder(images), calibration=3, held_out=4)


@pytest.fixture(scope="module")
def study(model, split):
    from edge_sam.quantize.studies.sensitivity import LayerStudy

    calibration, held_out = split
    return LayerStudy(model, get_recipe(STATIC), "executorch", calibration, [HeldOutSet(model, held_out, 64)])


def _mixed(model, floats: list[str], name: str = "t"):
    layers = quantizable_layers(model.config)
    return get_recipe(STATIC).with_layers({layer: "float" if layer in floats else "static" for layer in layers}, name=name)


# -- registry and recipe files ------------------------------------------------------------------------
def test_one_registry_holds_every_scheme_and_targets_refuse_what_they_do_not_take(tiny_model, tmp_path):
    assert {r.scheme for r in RECIPES.values()} == {"static", "dynamic", "weight-only"}
    assert get_recipe("palettize-4bit").codec == "palette" and get_recipe("naive-all-int8").scheme == "static"
    with pytest.raises(RecipeError, match="target coreml takes static, weight-only recipes; 'dynamic-linear' is dynamic"):
        get_target("coreml").export(tiny_model, "int8", "dynamic-linear", tmp_path / "a")
    with pytest.raises(RecipeError, match="target onnx takes static, dynamic recipes; 'w8-conv-linear' is weight-only"):
        get_target("onnx").export(tiny_model, "int8", "w8-conv-linear", tmp_path / "b")
    with pytest.raises(RecipeError, match="unknown quantization recipe 'nope'"):
        get_recipe("nope")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_16_bit_activations_only_where_the_runtime_has_the_kernels(tiny_model, tmp_path):
    import dataclasses

    from edge_sam.quantize.studies.simulate import target_quantizer

    a16 = get_recipe("static-a16-conv-linear")
    assert a16.scheme == "static" and a16.activation_bits == 16 and a16.describe()["activation_bits"] == 16
    for target in ("executorch", "coreml"):
        with pytest.raises(RecipeError, match=rf"target {target} quantizes activations to 8 bits; 'static-a16-conv-linear' asks 16"):
            get_target(target).export(tiny_model, "int8", a16.name, tmp_path / target)
        with pytest.raises(RecipeError, match="asks 16"):
            target_quantizer(target, a16)
        assert not (tmp_path / target).exists()
    with pytest.raises(RecipeError, match="16-bit activations need a static recipe, not dynamic"):
        dataclasses.replace(get_recipe("dynamic-linear"), activation_bits=16)
    with pytest.raises(RecipeError, match="activations in 12 bits"):
        dataclasses.replace(a16, activation_bits=12)


def test_recipe_file_round_trip(model, tmp_path):
    layers = quantizable_layers(model.config)
    recipe = _mixed(model, [layers[1], layers[-1]], name="mixed-test")
    path = write_recipe_file(recipe, tmp_path / "mixed.json", {"budget": {"min_mask_iou": 0.98, "min_mask_iou_p5": 0.95}})
    again = get_recipe(str(path))
    assert again == recipe == read_recipe_file(path)
    assert again.float_layers == (layers[1], layers[-1]) and again.base == STATIC and again.schemes == {"static"}
    assert recipe_from_manifest(json.loads(json.dumps(recipe.describe()))) == recipe  # what an artifact records
    data = json.loads(path.read_text())
    assert data["scheme"] == "static" and data["layers"][layers[1]] == "float" and data["layers"][layers[0]] == "static"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"base": "nope"}, "base recipe 'nope' is not in the registry"),
        ({"layers": {"image_encoder.neck": "dynamic"}}, "not dynamic"),
        ({"extra": 1}, "unknown key"),
        ({"format": "other"}, "is not an edge-sam recipe file"),
    ],
)
def test_malformed_recipe_files_are_one_line(model, tmp_path, edit, message):
    path = write_recipe_file(_mixed(model, []), tmp_path / "r.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), **edit}))
    with pytest.raises(RecipeError, match=message) as exc:
        get_recipe(str(path))
    assert "\n" not in str(exc.value)


def test_a_recipe_naming_layers_the_model_lacks_is_refused_before_any_work(model, images, tmp_path):
    recipe = get_recipe(STATIC).with_layers({"image_encoder.blocks.7.attn.qkv": "float", "image_encoder.head": "float"}, name="x")
    path = write_recipe_file(recipe, tmp_path / "bad.json")
    checkpoint = save_model(model, tmp_path / "tiny.safetensors")
    code = main(["export", "--target", "onnx", "--precision", "int8", "--recipe", str(path), "--checkpoint", str(checkpoint),
                 "--calibration", str(images), "--out", str(tmp_path / "art")])
    assert code == 2 and not (tmp_path / "art").exists()
    with pytest.raises(RecipeError, match=r"does not have: image_encoder\.blocks\.7\.attn\.qkv, image_encoder\.head"):
        get_target("executorch").export(model, "int8", str(path), tmp_path / "art2", calibration=image_folder(images))


def test_layer_scopes_match_exactly():
    assert scope_in_layer("encoder.blocks.1.attn.qkv", "image_encoder.blocks.1.attn.qkv")
    assert scope_in_layer("deploy_encoder.encoder.neck.0", "image_encoder.neck")
    assert not scope_in_layer("encoder.blocks.11.attn.qkv", "image_encoder.blocks.1.attn.qkv")
    assert not scope_in_layer("encoder.blocks.1.attn", "image_encoder.blocks.1.attn.qkv")


# -- simulation, sensitivity, search ------------------------------------------------------------------
@pytest.mark.parametrize("target", ["executorch", "onnx"])
def test_a_simulated_variant_equals_quantizing_with_the_per_layer_recipe(model, split, target):
    """Bypassing a layer's quantize/dequantize pairs in the all-INT8 graph = never annotating it."""
    from edge_sam.quantize.pt2e import quantize_pt2e
    from edge_sam.quantize.studies.simulate import SimulatedEncoder, target_quantizer
    from edge_sam.graph_contract import calibration_batches, deploy_graph

    calibration, _ = split
    layers = quantizable_layers(model.config)
    floats = [layers[0], layers[2], layers[-1]]
    simulated = SimulatedEncoder(model, 64, get_recipe(STATIC), target, calibration)
    graph = deploy_graph(model, 64, "encoder")
    batches, total = calibration_batches(model, calibration, 64, "encoder")
    direct = quantize_pt2e(graph, graph.example_inputs(), target_quantizer(target, _mixed(model, floats)), batches,
                           fold_quantize=False, total=total)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(simulated.variant(floats)(x), direct(x))
        assert not torch.equal(simulated.variant([])(x), direct(x))
        assert torch.allclose(simulated.variant(layers)(x), graph(x), atol=1e-5)  # all float = fp32


def test_a_simulated_a16_variant_matches_quantizing_those_layers_with_16_bit_activations(model, split):
    """Widening a layer's int8 quantize/dequantize pairs to int16 = annotating it with an int16 config
    (up to the int16 range being derived from the int8 one), and closer to fp32 than int8."""
    from edge_sam.quantize.pt2e import quantize_pt2e
    from edge_sam.quantize.studies.sensitivity import LayerStudy
    from edge_sam.quantize.studies.simulate import SimulatedEncoder, target_quantizer
    from edge_sam.graph_contract import calibration_batches, deploy_graph, encoder_input

    calibration, held_out = split
    layers = quantizable_layers(model.config)
    simulated = SimulatedEncoder(model, 64, get_recipe(STATIC), "onnx", calibration)
    every_a16 = get_recipe(STATIC).with_layers({layer: "a16" for layer in layers}, name="all-a16")
    assert every_a16.activation_widths == {8, 16} and every_a16.schemes == {"static"}
    graph = deploy_graph(model, 64, "encoder")
    batches, total = calibration_batches(model, calibration, 64, "encoder")
    direct = quantize_pt2e(graph, graph.example_inputs(), target_quantizer("onnx", every_a16), batches,
                           fold_quantize=False, total=total)
    assert any(n.args[-1] == torch.int16 for n in direct.graph.nodes if "quantize_per_tensor" in str(n.target))
    x = encoder_input(next(iter(held_out.images())), 64)  # an image: random noise leaves the calibrated range
    with torch.no_grad():
        fp32, int8, a16 = graph(x), simulated.variant()(x), simulated.variant(a16_layers=layers)(x)
        int8_error, a16_error = (int8 - fp32).norm(), (a16 - fp32).norm()
        assert a16_error < int8_error  # what is left is the int8 weights' (measured 0.23 vs 0.40)
        assert (a16 - direct(x)).norm() < int8_error / 20  # measured 0.005
    with pytest.raises(RecipeError, match="asks 16"):  # no 16-bit activations there: refused before calibrating
        LayerStudy(model, get_recipe(STATIC), "executorch", calibration, [HeldOutSet(model, held_out, 64)], fallback="a16")


def test_onnx_and_litert_honour_a16_and_float_layers(model, images, tmp_path):
    """Per layer: a16 layers read int16, float layers nothing quantized, the rest int8."""
    require_toolchain("onnxruntime")
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    from edge_sam.targets.tflite.quantize import layer_scope_regex

    choices = {"image_encoder.patch_embed": "a16", "image_encoder.blocks.0.mlp.fc1": "a16",
               "image_encoder.blocks.0.attn.qkv": "float"}
    layers = quantizable_layers(model.config)
    recipe = get_recipe(STATIC).with_layers({layer: choices.get(layer, "static") for layer in layers}, name="per-layer-a16")
    onnx_out, tflite_out = (get_target(target).export(model, "int8", recipe, tmp_path / target, calibration=image_folder(images),
                                                      calibration_images=2) for target in ("onnx", "tflite"))

    graph = onnx.load(str(onnx_out / "encoder.onnx")).graph
    zero_point_types = {t.name: t.data_type for t in graph.initializer}
    widths = [16 if zero_point_types[n.input[2]] == onnx.TensorProto.INT16 else 8 for n in graph.node if n.op_type == "QuantizeLinear"]
    # the image (patch embedding) and fc1's input at 16 bits; qkv's input not quantized at all
    assert widths.count(16) == 2 and widths.count(8) == len(layers) + 1 - len(choices)  # the neck has two convs

    interpreter = Interpreter(model_path=str(tflite_out / "encoder.tflite"))
    tensors = {d["index"]: d for d in interpreter.get_tensor_details()}
    input_types = {}
    for op in interpreter._get_ops_details():
        if op["op_name"] in ("FULLY_CONNECTED", "CONV_2D"):
            name = tensors[op["outputs"][0]]["name"]
            (layer,) = [layer for layer in layers if re.search(layer_scope_regex(layer), name)]
            input_types.setdefault(layer, set()).add(tensors[op["inputs"][0]]["dtype"].__name__)
    assert set(input_types) == set(layers)
    assert {layer: types for layer, types in input_types.items() if types != {"int8"}} == {
        "image_encoder.patch_embed": {"int16"}, "image_encoder.blocks.0.mlp.fc1": {"int16"},
        "image_encoder.blocks.0.attn.qkv": {"float32"}}


def test_sensitivity_table_has_every_layer_both_ways(study, tmp_path):
    from edge_sam.quantize.studies.sensitivity import measure_sensitivity, read_sensitivity, write_sensitivity

    report = measure_sensitivity(study)
    assert sorted(report.ranking) == sorted(study.layers) and len(report.rows) == 10
    sqnr = [row.alone.embedding_sqnr_db for row in report.rows]
    assert sqnr == sorted(sqnr)  # most sensitive (lowest SQNR alone) first
    assert all(row.all_but is not None and 0 <= row.alone.mask_iou_p5 <= 1 for row in report.rows)
    assert abs(sum(row.flop_share for row in report.rows) - sum(study.flops.values()) / study.total_flops) < 1e-9
    assert report.full_int8.embedding_sqnr_db < min(sqnr)  # all layers' noise together exceeds any one's
    out = write_sensitivity(report, tmp_path / "sens")
    table = (out / "sensitivity.md").read_text()
    assert table.count("| image_encoder.") == 10
    assert read_sensitivity(out).ranking == report.ranking


def test_mixed_search_meets_the_budget_and_prunes(study):
    from edge_sam.quantize.studies.mixed import Budget, search
    from edge_sam.quantize.studies.sensitivity import measure_sensitivity

    full = study.score()
    ranking = measure_sensitivity(study, both=False).ranking
    budget = Budget(min(1.0, full.mask_iou_mean + 1e-6), min(1.0, full.mask_iou_p5 + 1e-6))  # just above all-INT8
    result = search([study], ranking, budget)
    assert budget.met(result.fidelity) and result.float_layers
    for layer in result.float_layers:  # pruned: no float layer can go back to INT8
        assert not budget.met(study.score([f for f in result.float_layers if f != layer]))
    assert [s["action"] for s in result.steps][0] == "all INT8"


def test_the_prune_goes_by_flops_and_tries_last_where_the_profile_saw_no_saving(study):
    """FLOPs order the prune; the measured savings only send a layer whose INT8 form ran no
    faster to the end (their magnitudes, noisy between runs, do not reorder the rest)."""
    from edge_sam.quantize.studies.mixed import Budget, search
    from edge_sam.quantize.studies.sensitivity import measure_sensitivity

    ranking = measure_sensitivity(study, both=False).ranking
    needs = study.score(ranking[:4])
    budget = Budget(needs.mask_iou_mean, needs.mask_iou_p5)
    by_flops = search([study], ranking, budget)
    greedy = [step["layer"] for step in by_flops.steps if step["action"] == "float"]
    assert len(greedy) >= 2
    flops_order = sorted(greedy, key=lambda layer: (-study.flops[layer], -ranking.index(layer)))
    flops_pruned = [step["layer"] for step in by_flops.steps if step["action"] in ("INT8 again", "stays float")]
    assert flops_pruned == flops_order
    slow = flops_order[0]  # INT8 measured slower on the runtime: tried last
    savings = {layer: float(i + 1) for i, layer in enumerate(flops_order[::-1])}  # magnitudes against FLOPs
    savings[slow] = -0.1
    timed = search([study], ranking, budget, int8_savings=savings)
    pruned = [step["layer"] for step in timed.steps if step["action"] in ("INT8 again", "stays float")]
    assert pruned == [*flops_order[1:], slow]


def test_a_budget_no_recipe_meets_names_the_limiting_layers(study):
    from edge_sam.quantize.studies.mixed import Budget, BudgetError, search
    from edge_sam.quantize.studies.sensitivity import measure_sensitivity

    full = study.score()
    assert full.mask_iou_worst < 1.0  # INT8 moves some mask of this model
    ranking = measure_sensitivity(study, both=False).ranking
    with pytest.raises(BudgetError, match=rf"with at most 1 layers float meets .* the limit was the layers {ranking[0]}") as exc:
        search([study], ranking, Budget(1.0, 1.0), max_float=1)
    assert "\n" not in str(exc.value)


def test_mixed_cli_writes_a_recipe_file_every_target_reads(model, images, tmp_path, capsys):
    checkpoint = save_model(model, tmp_path / "tiny.safetensors")
    out = tmp_path / "mixed.json"
    code = main(["quantize", "mixed", "--checkpoint", str(checkpoint), "--images", str(images), "--calibration-images", "3",
                 "--held-out-images", "4", "--min-mask-iou", "0.5", "--min-mask-iou-p5", "0.1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    recipe = get_recipe(str(out))
    provenance = json.loads(out.read_text())["provenance"]
    assert recipe.base == STATIC and set(dict(recipe.layers)) == set(quantizable_layers(model.config))
    assert provenance["verified"]["executorch"]["mask_iou_mean"] >= 0.5
    # the same search under a stricter budget reuses the file's ranking (no sensitivity pass)
    assert "sensitivity (executorch)" in capsys.readouterr().err
    strict = tmp_path / "strict.json"
    code = main(["quantize", "mixed", "--checkpoint", str(checkpoint), "--images", str(images), "--calibration-images", "3",
                 "--held-out-images", "4", "--min-mask-iou", "0.9", "--min-mask-iou-p5", "0.5", "--sensitivity", str(out),
                 "--out", str(strict)])
    assert code == 0, capsys.readouterr().err
    again = json.loads(strict.read_text())["provenance"]
    assert again["ranking"] == provenance["ranking"] and len(again["float_layers"]) >= len(provenance["float_layers"])
    assert "sensitivity (executorch)" not in capsys.readouterr().err


def test_quantize_commands_fail_in_one_line(tmp_path, images, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["quantize", "mixed", "--images", str(empty), "--out", str(tmp_path / "r.json")]) == 2
    assert "holds no images" in capsys.readouterr().err
    assert main(["quantize", "sensitivity", "--images", str(images), "--calibration-images", "6", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "holds 8 images; the split needs 6 for calibration and at least 16 held out" in err and err.count("\n") == 1
    assert main(["quantize", "mixed", "--images", str(images), "--min-mask-iou", "1.5", "--out", str(tmp_path / "r.json")]) == 2
    assert "--min-mask-iou must be in (0, 1], got 1.5" in capsys.readouterr().err
    assert main(["quantize", "mixed", "--images", str(images), "--calibration-images", "2", "--held-out-images", "4",
                 "--img-size", "64", "--fallback", "a16", "--target", "coreml", "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "target coreml quantizes activations to 8 bits" in err and err.count("\n") == 1
    assert not (tmp_path / "r.json").exists()


# -- targets honour per-layer choices -----------------------------------------------------------------
def test_onnx_leaves_the_float_layers_nodes_unquantized(model, images, tmp_path):
    require_toolchain("onnxruntime")
    import onnx

    from edge_sam.targets.onnx.quantize import node_scopes

    floats = ["image_encoder.blocks.0.attn.qkv", "image_encoder.neck"]
    path = write_recipe_file(_mixed(model, floats, name="onnx-mixed"), tmp_path / "m.json")
    out = get_target("onnx").export(model, "int8", str(path), tmp_path / "art", calibration=image_folder(images),
                                    calibration_images=2)
    graph = onnx.load(str(out / "encoder.onnx")).graph
    producers = {o: n for n in graph.node for o in n.output}

    def quantized_inputs(layer: str) -> int:
        nodes = [n for n in graph.node if n.op_type in ("MatMul", "Conv")
                 and any(scope_in_layer(s, layer) for s in node_scopes(n))]
        assert nodes, layer
        return sum(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for n in nodes for i in n.input)

    assert all(quantized_inputs(layer) == 0 for layer in floats)
    assert quantized_inputs("image_encoder.blocks.0.mlp.fc1") >= 2 and quantized_inputs("image_encoder.patch_embed") >= 2
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "onnx-mixed" and manifest["recipe"]["layers"]["image_encoder.neck"] == "float"


def test_compare_measures_every_row_on_every_image_set(model, images, tmp_path, capsys):
    require_toolchain("onnxruntime")
    checkpoint = save_model(model, tmp_path / "tiny.safetensors")
    layers = quantizable_layers(model.config)
    recipe = write_recipe_file(_mixed(model, [layers[0], layers[-1]], name="tiny-mixed"), tmp_path / "mixed.json",
                               {"budget": {"min_mask_iou": 0.5, "min_mask_iou_p5": 0.1}})
    extra = tmp_path / "extra"
    extra.mkdir()
    for i in range(2):
        write_image(extra / f"x{i}.png", np.full((40, 50, 3), 60 * i + 40, np.uint8))
    out = tmp_path / "compare"
    code = main(["quantize", "compare", "--checkpoint", str(checkpoint), "--images", str(images), "--calibration-images", "3",
                 "--held-out-images", "2", "--targets", "onnx", "--mixed", str(recipe), "--extra-held-out", str(extra),
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "compare.json").read_text())
    assert [(r["target"], r["row"], r["float_layers"], r["a16_layers"]) for r in data["rows"]] == [
        ("onnx", "PTQ", 0, 0), ("onnx", "mixed", 2, 0)]
    assert set(data["sets"]) == {"held-out", "extra"} and data["sets"]["held-out"]["count"] == 2
    assert all(set(r["sets"]) == {"held-out", "extra"} and r["size_mb"] > 0 for r in data["rows"])
    assert data["budget"] == {"min_mask_iou": 0.5, "min_mask_iou_p5": 0.1}
    assert (out / "compare.md").read_text().count("| onnx | mixed | tiny-mixed | 2 |") == 2
    assert not (out / "artifacts").exists()
    # the table held to another gate than the recipe was chosen for (a part not given stays the recipe's)
    code = main(["quantize", "compare", "--checkpoint", str(checkpoint), "--images", str(images), "--calibration-images", "3",
                 "--held-out-images", "2", "--targets", "onnx", "--mixed", str(recipe), "--min-mask-iou", "1.0",
                 "--out", str(out), "--overwrite"])
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "compare.json").read_text())
    assert data["budget"] == {"min_mask_iou": 1.0, "min_mask_iou_p5": 0.1}
    assert not any(row["budget_met"]["held-out"] for row in data["rows"])
    # a 16-bit recipe: every layer counted as a 16-bit one
    code = main(["quantize", "compare", "--checkpoint", str(checkpoint), "--images", str(images), "--calibration-images", "3",
                 "--held-out-images", "2", "--targets", "onnx", "--recipe", "static-a16-conv-linear", "--out", str(out), "--overwrite"])
    assert code == 0, capsys.readouterr().err
    (row,) = json.loads((out / "compare.json").read_text())["rows"]
    assert (row["recipe"], row["float_layers"], row["a16_layers"]) == ("static-a16-conv-linear", 0, len(layers))


def test_sample_photos_for_the_search_are_real_colour_photos(tmp_path):
    """benchmarks/sample_photos.py (the real-photo held-out set of the mixed search in
    benchmarks/quantization_table.sh) writes ten colour crops from the `bench` extra's photos."""
    import importlib.util

    require_toolchain("skimage")
    path = Path(__file__).parents[1] / "benchmarks" / "sample_photos.py"
    spec = importlib.util.spec_from_file_location("sample_photos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    crops = [read_image(p) for p in module.write_crops(tmp_path / "photos")]
    assert len(crops) == 10 and len(image_folder(tmp_path / "photos")) == 10
    assert all(c.ndim == 3 and c.shape[2] == 3 and min(c.shape[:2]) >= 128 and c.std() > 20 for c in crops)
