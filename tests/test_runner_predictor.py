"""The Predictor and everything-mode over any runner: an fp32 ONNX artifact of the bundled
reference model answers prompts like the PyTorch model, with the same prompt checks; the
segment and everything commands run it with --artifact."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_toolchain

import edge_sam
from edge_sam.apps.cli import main
from edge_sam.errors import EdgeSamError, PromptError
from edge_sam.eval.metrics import mask_iou
from edge_sam.everything import EverythingConfig, EverythingGenerator
from edge_sam.predictor import Predictor, Prompt
from edge_sam.targets import get_target, load_runner
from edge_sam.transforms import read_image

require_toolchain("onnxruntime")

# The reference model's IoU head predicts 0.1-0.4 (see the demo), so SAM's 0.88 would keep nothing.
EVERYTHING = EverythingConfig(points_per_side=6, pred_iou_thresh=0.2, stability_score_thresh=0.3)
PROMPTS = [
    Prompt(np.array([[580.0, 350.0]]), np.array([1.0])),
    Prompt(box=np.array([575.0, 225.0, 775.0, 592.0])),
    Prompt(np.array([[100.0, 100.0], [900.0, 500.0]]), np.array([1.0, 0.0]), box=np.array([50.0, 50.0, 1000.0, 580.0])),
    Prompt(np.array([[0.0, 0.0], [1072.0, 603.0], [300.0, 300.0]]), np.array([1.0, 1.0, 0.0])),  # on the image border
]


pytestmark = pytest.mark.torch_threads(1)


@pytest.fixture(scope="module")
def reference():
    return edge_sam.load_model("reference")


@pytest.fixture(scope="module")
def onnx_fp32(tmp_path_factory, reference):
    """The bundled reference model exported as a deploy-form fp32 ONNX artifact (about 7 s)."""
    return get_target("onnx").export(reference, "fp32", None, tmp_path_factory.mktemp("artifact") / "onnx-fp32")


@pytest.fixture(scope="module")
def predictors(reference, onnx_fp32, dogs) -> dict[str, Predictor]:
    predictors = {"pytorch": Predictor(reference), "onnx": Predictor(load_runner(onnx_fp32))}
    for predictor in predictors.values():
        predictor.set_image(dogs)
    return predictors


def test_artifact_predictor_answers_like_pytorch(predictors):
    torch_masks, torch_iou, _ = predictors["pytorch"].predict_batch(PROMPTS)
    onnx_masks, onnx_iou, _ = predictors["onnx"].predict_batch(PROMPTS)
    assert onnx_masks.shape == torch_masks.shape == (len(PROMPTS), 3, 603, 1072)
    for q in range(len(PROMPTS)):
        for k in range(3):
            assert mask_iou(onnx_masks[q, k], torch_masks[q, k]) >= 0.999, (q, k)
    np.testing.assert_allclose(onnx_iou, torch_iou, atol=1e-4)
    single, _, _ = predictors["onnx"].predict(PROMPTS[1].point_coords, PROMPTS[1].point_labels, PROMPTS[1].box)
    np.testing.assert_array_equal(single, onnx_masks[1])


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        (Prompt(np.zeros((7, 2)) + 5, np.ones(7)), "7 prompt slots used; the decoder takes at most 6"),
        (Prompt(np.array([[1, 1]] * 5), np.ones(5), box=np.array([0, 0, 5, 5])), "at most 6"),
        (Prompt(np.array([[1073, 10]]), np.array([1])), r"\(1073, 10\) is outside the 1072x603 image"),
        (Prompt(np.array([[10, -3]]), np.array([1])), "outside the 1072x603 image"),
        (Prompt(box=np.array([0, 0, 2000, 40])), "outside the 1072x603 image"),
        (Prompt(np.array([[1, 1]]), np.array([4])), r"labels must be in \(-1, 0, 1, 2, 3\)"),
        (Prompt(np.array([[1, 1]]), np.array([-1])), "empty prompt"),
        (Prompt(np.array([[np.nan, 1]]), np.array([1])), "finite"),
    ],
)
def test_every_runner_refuses_the_same_bad_prompts(predictors, prompt, message):
    for name, predictor in predictors.items():
        with pytest.raises(PromptError, match=message) as info:
            predictor.predict_batch([PROMPTS[0], prompt])
        assert "\n" not in str(info.value), name


def test_single_mask_output_is_pytorch_only(predictors):
    masks, iou, _ = predictors["pytorch"].predict(np.array([[580.0, 350.0]]), np.array([1.0]), multimask_output=False)
    assert masks.shape == (1, 603, 1072) and iou.shape == (1,)
    with pytest.raises(EdgeSamError, match="3 multimask outputs only") as info:
        predictors["onnx"].predict(np.array([[580.0, 350.0]]), np.array([1.0]), multimask_output=False)
    assert "\n" not in str(info.value)


def test_decode_batch_is_decode_per_query(predictors, dogs):
    """TorchRunner decodes a batch in one call; the default decode_batch loops over decode; both
    give, per query, what decode gives."""
    points = np.array([[[580.0, 350.0], [-1, -1]], [[575.0, 225.0], [775.0, 592.0]]], np.float32)
    labels = np.array([[1.0, -1.0], [2.0, 3.0]], np.float32)
    for predictor in predictors.values():
        runner = predictor.runner
        low_res, iou = runner.decode_batch(predictor.image_embedding, points, labels, dogs.shape[:2])
        assert low_res.shape[:2] == (2, 3) and iou.shape == (2, 3)
        for q in range(2):
            one_low, one_iou = runner.decode(predictor.image_embedding, points[q], labels[q], dogs.shape[:2])
            np.testing.assert_allclose(low_res[q], one_low[0], atol=1e-4)
            np.testing.assert_allclose(iou[q], one_iou[0], atol=1e-5)


def _matched_ious(expected: list[dict], actual: list[dict]) -> list[float]:
    """For each expected mask, the best IoU among the actual masks from the same grid point."""
    ious = []
    for record in expected:
        same_point = [r["segmentation"] for r in actual if r["point_coords"] == record["point_coords"]]
        ious.append(max((mask_iou(record["segmentation"], m) for m in same_point), default=0.0))
    return ious


def test_everything_on_an_artifact_matches_pytorch(predictors):
    torch_records = EverythingGenerator(predictors["pytorch"], EVERYTHING).generate(progress=False)
    onnx_records = EverythingGenerator(predictors["onnx"], EVERYTHING).generate(progress=False)
    assert len(torch_records) >= 10
    assert abs(len(onnx_records) - len(torch_records)) <= 0.02 * len(torch_records)
    assert min(_matched_ious(torch_records, onnx_records)) >= 0.99
    assert min(_matched_ious(onnx_records, torch_records)) >= 0.99


# -- the commands ----------------------------------------------------------------------------------

def test_segment_and_everything_run_an_artifact(capsys, tmp_path, onnx_fp32, sample_image_path):
    box = ["--box", "575,225,775,592"]
    for name, model in (("pt", []), ("onnx", ["--artifact", str(onnx_fp32)])):
        assert main(["segment", str(sample_image_path), *model, *box, "--out", str(tmp_path / f"{name}.png")]) == 0
        assert main(["everything", str(sample_image_path), *model, "--out", str(tmp_path / f"every-{name}"),
                     "--points-per-side", "3", "--pred-iou-thresh", "0.2", "--stability-thresh", "0.3"]) == 0
    assert mask_iou(read_image(tmp_path / "pt.png")[..., 0] > 0, read_image(tmp_path / "onnx.png")[..., 0] > 0) >= 0.999
    counts = [len(list((tmp_path / f"every-{name}").glob("mask_*.png"))) for name in ("pt", "onnx")]
    assert counts[0] == counts[1] > 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "other.pt"], "give --artifact or --checkpoint, not both"),
        (["--point", "5000,5"], "outside the 1072x603 image"),
        (["--point", "1,1"] * 7, "at most 6"),
    ],
)
def test_segment_artifact_errors_are_one_line(capsys, tmp_path, onnx_fp32, sample_image_path, argv, message):
    if "--point" not in argv:
        argv = [*argv, "--point", "5,5"]
    code = main(["segment", str(sample_image_path), "--artifact", str(onnx_fp32), *argv, "--out", str(tmp_path / "m.png")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "m.png").exists()
