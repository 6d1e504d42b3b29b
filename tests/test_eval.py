"""The Table 4 evaluator: exact values on hand-made cases, and the real model and CLI end to end."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from edge_sam.data import generate_synthetic, open_dataset
from edge_sam.data.codec import make_annotation
from edge_sam.data.types import Sample
from edge_sam.eval import EvalError, evaluate

H = W = 120


def _square(x0: int, y0: int, side: int) -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[y0 : y0 + side, x0 : x0 + side] = True
    return mask


class ListDataset:
    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]


class GroundTruthPredictor:
    """A predictor double that answers with the ground truth of the prompted object.

    The right mask goes in the slot with the highest predicted IoU, with wrong masks in the other
    slots, so the evaluator is also checked to choose by predicted IoU.
    """

    def __init__(self, samples: list[Sample]):
        self.by_image = {id(s.image): s for s in samples}
        self.calls: list[dict] = []

    def set_image(self, image: np.ndarray) -> None:
        self.sample = self.by_image[id(image)]

    def _target(self, point_coords, box) -> np.ndarray:
        for ann in self.sample.annotations:
            if box is not None and np.array_equal(box, ann.bbox_xyxy):
                return ann.mask
            if point_coords is not None and ann.mask.any():
                x, y = np.asarray(point_coords)[0].astype(int)
                if ann.mask[y, x]:
                    return ann.mask
        raise AssertionError("prompt matches no object")

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        self.calls.append({"points": point_coords, "labels": point_labels, "box": box, "multimask": multimask_output})
        target = self._target(point_coords, box)
        if not multimask_output:
            return target[None], np.array([0.9]), None
        wrong = [np.zeros_like(target), np.ones_like(target)]
        return np.stack([wrong[0], target, wrong[1]]), np.array([0.2, 0.95, 0.5]), None


class ShiftedSquarePredictor:
    """Always answers a 20x20 square at (45, 45): a known shift of the 20x20 ground truth at (40, 40)."""

    def set_image(self, image):
        pass

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        return _square(45, 45, 20)[None], np.array([1.0]), None


class ClickCountingPredictor:
    """One click: the right 3/4 of the 20x20 ground-truth square. Two or more clicks: the exact square."""

    def __init__(self):
        self.calls = []

    def set_image(self, image):
        pass

    def predict(self, point_coords=None, point_labels=None, box=None, multimask_output=True):
        self.calls.append((np.asarray(point_coords).copy(), np.asarray(point_labels).copy(), multimask_output))
        mask = _square(40, 40, 20)
        if len(point_coords) == 1:
            mask[:, 40:45] = False
        return mask[None], np.array([1.0]), None


def _sample(masks: list[np.ndarray], name: str = "img") -> Sample:
    image = np.zeros((H, W, 3), np.uint8)
    return Sample(image=image, annotations=[make_annotation(m) for m in masks], image_id=name)


def test_perfect_predictor_scores_one_in_every_mode_and_bucket():
    samples = [
        _sample([_square(5, 5, 10), _square(30, 30, 40)], "a"),  # 100 px small, 1600 px medium
        _sample([_square(0, 0, 100), _square(105, 105, 12)], "b"),  # 10000 px large, 144 px small
    ]
    predictor = GroundTruthPredictor(samples)
    result = evaluate(predictor, ListDataset(samples), n_clicks=3, progress=False)
    summary = result.to_dict()
    assert summary["n_objects"] == 4 and summary["n_images"] == 2
    assert summary["objects_per_size"] == {"small": 2, "medium": 1, "large": 1}
    for mode in ("box", "1-click", "n-click"):
        assert summary["miou"][mode] == {"all": 1.0, "small": 1.0, "medium": 1.0, "large": 1.0}
    assert summary["n_click_curve"] == [1.0, 1.0, 1.0]
    box_calls = [c for c in predictor.calls if c["box"] is not None]
    assert len(box_calls) == 4 and all(c["multimask"] for c in box_calls)


def test_shifted_square_gives_the_iou_computed_by_hand():
    # Ground truth [40, 60)^2, prediction [45, 65)^2: intersection 15*15 = 225, union 400 + 400 - 225 = 575.
    samples = [_sample([_square(40, 40, 20)])]
    result = evaluate(ShiftedSquarePredictor(), ListDataset(samples), n_clicks=2, progress=False)
    expected = 225 / 575
    for mode in ("box", "1-click", "n-click"):
        assert result.miou(mode) == pytest.approx(expected, abs=1e-12)
        assert result.miou(mode, "small") == pytest.approx(expected, abs=1e-12)
        assert result.miou(mode, "large") is None
    assert "| box | 39.1 | 39.1 | n/a | n/a |" in result.format_table()
    assert "| 2-click | 39.1 |" in result.format_table()


def test_n_click_adds_a_positive_correction_click_in_the_missed_strip():
    gt = _square(40, 40, 20)
    predictor = ClickCountingPredictor()
    result = evaluate(predictor, ListDataset([_sample([gt])]), modes=("n-click",), n_clicks=3, progress=False)
    # First click: 300 of 400 pixels (IoU 0.75); the correction click fixes it; the third is not needed.
    assert result.n_click_curve() == [0.75, 1.0, 1.0]
    assert result.miou("n-click") == 1.0
    assert len(predictor.calls) == 2
    (first_points, first_labels, first_multi), (points, labels, multi) = predictor.calls
    assert first_multi and not multi
    assert labels.tolist() == [1, 1]
    x, y = points[1]
    assert 40 <= x < 45 and 40 <= y < 60, "the correction click must fall in the missed columns 40..44"


def test_empty_masks_are_skipped_and_counted():
    samples = [_sample([_square(10, 10, 30), np.zeros((H, W), bool)])]
    result = evaluate(GroundTruthPredictor(samples), ListDataset(samples), modes=("box",), progress=False)
    assert result.n_objects == 1 and result.skipped_empty == 1
    assert "1 empty masks skipped" in result.format_table()


def test_bad_requests_are_clear_errors():
    dataset = ListDataset([_sample([_square(10, 10, 30)])])
    with pytest.raises(EvalError, match="unknown evaluation mode"):
        evaluate(ShiftedSquarePredictor(), dataset, modes=("2-click",), progress=False)
    with pytest.raises(EvalError, match="n_clicks must be between 1 and 6"):
        evaluate(ShiftedSquarePredictor(), dataset, n_clicks=7, progress=False)


# --------------------------------------------------------------------------- real model, real files


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    import torch

    from edge_sam import save_model
    from edge_sam.modeling import EfficientSamConfig, build_efficient_sam

    root = tmp_path_factory.mktemp("eval")
    generate_synthetic(root, {"val": 2}, img_size=64, seed=0, progress=False)
    torch.manual_seed(0)
    model = build_efficient_sam(EfficientSamConfig.tiny()).eval()
    checkpoint = save_model(model, root / "tiny.safetensors")
    return root / "val", model, checkpoint


def test_real_predictor_runs_every_mode_on_synthetic_data(tiny_setup):
    from edge_sam.predictor import Predictor

    dataset_dir, model, _ = tiny_setup
    dataset = open_dataset(dataset_dir)
    result = evaluate(Predictor(model), dataset, n_clicks=3, progress=False)
    expected_objects = sum(len(dataset[i].annotations) for i in range(len(dataset)))
    assert result.n_objects == expected_objects > 0
    for mode in ("box", "1-click", "n-click"):
        assert len(result.ious[mode]) == expected_objects
        assert all(0.0 <= v <= 1.0 for v in result.ious[mode])
    assert len(result.n_click_curve()) == 3


def test_cli_eval_writes_the_table_and_json(tiny_setup, tmp_path, capsys):
    from edge_sam.apps import cmd_eval

    dataset_dir, _, checkpoint = tiny_setup
    parser = argparse.ArgumentParser()
    cmd_eval.register(parser.add_subparsers())
    out = tmp_path / "report" / "eval.json"
    args = parser.parse_args(
        ["eval", "--checkpoint", str(checkpoint), "--dataset", str(dataset_dir), "--modes", "box,1-click",
         "--max-images", "1", "--json", str(out)]
    )
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "| box |" in printed and "| 1-click |" in printed
    report = json.loads(out.read_text())
    assert report["n_images"] == 1 and set(report["miou"]) == {"box", "1-click"}
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--dataset", str(dataset_dir), "--modes", "box,3-click"])

