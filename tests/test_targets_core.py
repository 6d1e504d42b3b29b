"""The target-neutral core: manifest and hashes, staging, recipes, prompts, image sources, TorchRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_sam.data import generate_synthetic
from edge_sam.errors import EdgeSamError
from edge_sam.quantize.recipes import RECIPES, OpClass, RecipeError
from edge_sam.quantize.recipe_file import get_recipe
from edge_sam.targets import ArtifactError, TorchRunner, get_target, image_folder, open_source
from edge_sam.image_sources import photo_crops
from edge_sam.staging import staged_dir
from edge_sam.runner import model_at_size
from edge_sam.checkpoint import state_dict_sha256
from edge_sam.targets.core.target import resolve_recipe
from edge_sam.targets.core.manifest import (
    MANIFEST_NAME,
    GraphSpec,
    Manifest,
    TensorSpec,
    read_manifest,
    verify_files,
    write_manifest,
)
from edge_sam.fixed_prompts import grid_prompts, object_prompts, prompts_for
from edge_sam.transforms import image_to_tensor, write_image


pytestmark = pytest.mark.torch_threads(1)


def _manifest(file_name: str = "encoder.bin") -> Manifest:
    spec = TensorSpec("image", (1, 3, 64, 64), "float32")
    quantized = TensorSpec("image_embeddings", (1, 256, 4, 4), "int8", {"scale": 0.05, "zero_point": -3})
    return Manifest(
        target="onnx", backend="onnxruntime", interface="deploy", precision="fp32", recipe=None, img_size=64,
        model_config={}, preprocessing={}, prompts={"slots": 6}, graphs=(GraphSpec("encoder", file_name, (spec,), (quantized,)),),
        source_checkpoint={"state_dict_sha256": "0" * 64}, toolchain={}, calibration=None,
    )


@pytest.fixture
def artifact(tmp_path):
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "encoder.bin").write_bytes(b"weights" * 100)
    write_manifest(folder, _manifest())
    return folder


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_manifest_round_trip_records_file_hashes(artifact):
    manifest = read_manifest(artifact)
    assert manifest.files["encoder.bin"]["bytes"] == 700
    assert len(manifest.files["encoder.bin"]["sha256"]) == 64
    assert manifest.graph("encoder").inputs[0] == TensorSpec("image", (1, 3, 64, 64), "float32")
    assert manifest.graph("encoder").outputs[0].quantization == {"scale": 0.05, "zero_point": -3}
    assert manifest.created_at
    verify_files(artifact, manifest)


def test_tampered_file_is_refused(artifact):
    (artifact / "encoder.bin").write_bytes(b"weightz" * 100)
    with pytest.raises(ArtifactError) as exc:
        verify_files(artifact, read_manifest(artifact))
    assert "encoder.bin does not match its manifest hash" in _one_line(exc)


def test_missing_file_is_refused(artifact):
    (artifact / "encoder.bin").unlink()
    with pytest.raises(ArtifactError) as exc:
        verify_files(artifact, read_manifest(artifact))
    assert "encoder.bin is missing" in _one_line(exc)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda text: text[:-5], "is not valid JSON"),
        (lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "graphs"}), "missing field(s): graphs"),
        (lambda text: json.dumps({**json.loads(text), "format_version": 99}), "format_version 99"),
        (lambda text: "[1, 2]", "does not hold a JSON object"),
    ],
)
def test_broken_manifest_is_refused(artifact, edit, expected):
    path = artifact / MANIFEST_NAME
    path.write_text(edit(path.read_text()))
    with pytest.raises(ArtifactError) as exc:
        read_manifest(artifact)
    assert expected in _one_line(exc)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(tmp_path)
    with pytest.raises(ArtifactError, match="not found"):
        read_manifest(tmp_path / "nowhere")


def test_staged_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "art"
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


def test_staged_dir_replaces_only_when_asked(tmp_path):
    out = tmp_path / "art"
    with staged_dir(out) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(EdgeSamError, match="already exists"), staged_dir(out):
        pass
    with staged_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]
    assert sorted(p.name for p in out.iterdir()) == ["b"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with staged_dir(empty) as tmp:  # an empty folder counts as absent
        (tmp / "c").write_text("3")
    assert [p.name for p in empty.iterdir()] == ["c"]


def test_recipes_keep_attention_softmax_norm_gelu_residual_float():
    recipe = get_recipe("static-conv-linear")
    assert recipe.quantized_ops == {OpClass.CONV, OpClass.LINEAR}
    assert set(recipe.float_ops) == {
        OpClass.ATTENTION_MATMUL, OpClass.SOFTMAX, OpClass.NORM, OpClass.ACTIVATION, OpClass.ELEMENTWISE,
    }
    assert recipe.needs_calibration and not get_recipe("dynamic-linear").needs_calibration
    assert recipe.quantizes("encoder") and not recipe.quantizes("decoder")
    described = recipe.describe()
    assert json.loads(json.dumps(described)) == described
    assert all(name == r.name for name, r in RECIPES.items())


def test_recipe_resolution_errors():
    assert resolve_recipe("int8", None).name == "static-conv-linear"
    assert resolve_recipe("fp32", None) is None
    with pytest.raises(RecipeError, match="int8 only"):
        resolve_recipe("fp16", "static-conv-linear")
    with pytest.raises(RecipeError, match="known: "):
        resolve_recipe("int8", "int4-magic")
    assert resolve_recipe("bf16", None) is None  # a float precision (the aoti target's)
    with pytest.raises(EdgeSamError, match="unknown precision"):
        resolve_recipe("fp8", None)


def test_unknown_target_lists_known_ones():
    with pytest.raises(EdgeSamError, match=r"unknown target 'tensorrt' \(known: .*onnx"):
        get_target("tensorrt")


def test_grid_prompts_are_deterministic_and_inside_the_image():
    prompts = grid_prompts((603, 1072))
    assert [p.kind for p in prompts] == ["click"] * 9 + ["box"] * 3
    again = grid_prompts((603, 1072))
    assert all(np.array_equal(a.points, b.points) for a, b in zip(prompts, again))
    for prompt in prompts:
        assert (prompt.points >= 0).all() and (prompt.points[:, 0] <= 1072).all() and (prompt.points[:, 1] <= 603).all()
    assert prompts[-1].labels.tolist() == [2.0, 3.0]


def test_object_prompts_box_and_centre_click(tmp_path):
    split = generate_synthetic(tmp_path / "synthetic", {"val": 2}, img_size=64, progress=False)["val"]
    sample = open_source(split).sample(0)
    prompts = object_prompts(sample)
    assert len(prompts) == 2 * sum(a.mask.any() for a in sample.annotations)
    for box, click in zip(prompts[::2], prompts[1::2]):
        assert box.kind == "box" and click.kind == "click" and box.object_index == click.object_index
        x, y = click.points[0].astype(int)
        assert sample.annotations[click.object_index].mask[y, x]
    assert len(prompts_for(sample, max_objects=1)) == 2


def test_image_folder_source(tmp_path, dogs):
    for name in ("b.png", "a.jpg"):
        write_image(tmp_path / name, dogs[:100, :120])
    (tmp_path / "notes.txt").write_text("not an image")
    source = image_folder(tmp_path)
    assert len(source) == 2 and source.describe()["ids"] == ["a.jpg", "b.png"]
    assert len(source.limited(1)) == 1
    assert next(source.images()).shape == (100, 120, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgeSamError, match="holds no images"):
        image_folder(tmp_path / "empty")


def test_photo_crops_are_distinct_half_size_views(tmp_path, dogs):
    source = photo_crops(dogs, tmp_path / "crops", count=4)
    images = list(source.images())
    h, w = dogs.shape[:2]
    assert len(images) == 4 and all(image.shape == (h // 2, w // 2, 3) for image in images)
    assert len({image.tobytes() for image in images}) == 4


def test_dataset_source_carries_annotations(tmp_path):
    split = generate_synthetic(tmp_path / "synthetic", {"val": 3}, img_size=64, progress=False)["val"]
    source = open_source(split, limit=2)
    assert source.kind == "dataset" and len(source) == 2
    assert all(sample.annotations for sample in source.samples())


def test_torch_runner_is_the_model(tiny_model, dogs):
    runner = TorchRunner(tiny_model)
    embedding = runner.encode(dogs)
    points, labels = np.array([[500.0, 300.0], [700.0, 320.0]]), np.array([1.0, 1.0])
    low_res, iou = runner.decode(embedding, points, labels, dogs.shape[:2])
    with torch.inference_mode():
        expected_embedding = tiny_model.get_image_embeddings(image_to_tensor(dogs))
        masks, expected_iou = tiny_model.predict_masks(
            expected_embedding, torch.tensor(points, dtype=torch.float32)[None, None],
            torch.tensor(labels, dtype=torch.float32)[None, None], True, 603, 1072,
        )
    np.testing.assert_array_equal(embedding, expected_embedding.numpy())
    np.testing.assert_array_equal(low_res, masks[:, 0].numpy())
    np.testing.assert_array_equal(iou, expected_iou[:, 0].numpy())
    assert low_res.shape == (1, 3, 16, 16) and iou.shape == (1, 3)


def test_model_at_size_keeps_the_weights(tiny_model):
    resized = model_at_size(tiny_model, 128)
    assert resized.image_encoder.img_size == 128 and resized.config.img_size == 128
    assert state_dict_sha256(resized) == state_dict_sha256(tiny_model)
    assert model_at_size(tiny_model, 64) is tiny_model
