"""Segment-everything: the filters, NMS and mask bookkeeping, on a real (random-weight) model."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from edge_sam.eval.metrics import mask_iou
from edge_sam.everything import (
    EverythingConfig,
    EverythingGenerator,
    box_nms,
    count_true,
    mask_to_box,
    point_grid,
    stability_score,
)
from edge_sam.predictor import Predictor
from edge_sam.runner import Runner, TorchRunner, one_torch_thread


def test_point_grid_covers_cell_centres():
    grid = point_grid(4, (40, 80))
    assert grid.shape == (16, 2)
    np.testing.assert_allclose(sorted(set(grid[:, 0])), [10, 30, 50, 70])
    np.testing.assert_allclose(sorted(set(grid[:, 1])), [5, 15, 25, 35])


def test_box_nms_keeps_best_of_overlapping_boxes():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9.0]])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.6])
    assert box_nms(boxes, scores, 0.7).tolist() == [1, 2]
    assert box_nms(boxes, scores, 0.95).tolist() == [1, 2, 3, 0]


def test_mask_to_box_and_stability():
    masks = torch.zeros(2, 8, 10, dtype=torch.bool)
    masks[0, 2:5, 3:7] = True
    assert mask_to_box(masks).tolist() == [[3, 2, 7, 5], [0, 0, 0, 0]]
    assert count_true(masks).tolist() == [12, 0]
    logits = torch.full((1, 4, 4), -5.0)
    logits[0, :2, :2] = 5.0
    logits[0, 2, 2] = 0.5  # inside the outer threshold only
    assert stability_score(logits, 0.0, 1.0).item() == pytest.approx(4 / 5)


@pytest.fixture(scope="module")
def predictor(make_tiny_model, dogs) -> Predictor:
    """The photo encoded once by a small model (the mechanics do not depend on the size)."""
    predictor = Predictor(make_tiny_model(img_size=128))
    predictor.set_image(dogs)
    return predictor


@pytest.fixture(scope="module")
def records(predictor):
    config = EverythingConfig(points_per_side=6, points_per_batch=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    return EverythingGenerator(predictor, config).generate(progress=False)


def test_records_are_consistent(records, dogs):
    assert 0 < len(records) <= 6 * 6 * 3
    for record in records:
        mask = record["segmentation"]
        assert mask.shape == dogs.shape[:2] and mask.dtype == bool
        assert record["area"] == int(mask.sum()) > 0
        x, y, w, h = record["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, x + w, y + h) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    scores = [r["predicted_iou"] for r in records]
    assert scores == sorted(scores, reverse=True)


def test_no_two_kept_boxes_overlap_above_threshold(records):
    from edge_sam.everything import box_iou

    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in records)], dtype=torch.float32)
    overlaps = box_iou(boxes) - torch.eye(len(boxes))
    assert overlaps.max() <= 0.7


def test_filters_remove_candidates(predictor):
    strict = EverythingConfig(points_per_side=4, pred_iou_thresh=2.0)  # IoU predictions never exceed 2
    assert EverythingGenerator(predictor, strict).generate(progress=False) == []


def test_coco_rle_output_decodes_to_the_mask(predictor):
    from pycocotools import mask as mask_utils

    base = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    binary = EverythingGenerator(predictor, EverythingConfig(**base)).generate(progress=False)
    rle = EverythingGenerator(predictor, EverythingConfig(**base, output_mode="coco_rle")).generate(progress=False)
    assert len(binary) == len(rle) > 0
    for b, r in zip(binary, rle):
        assert np.array_equal(mask_utils.decode(r["segmentation"]).astype(bool), b["segmentation"])


class LoopingRunner(Runner):
    """The PyTorch model behind encode/decode only, so decode_batch is the base class's loop
    (what an artifact runner without a batched graph gets)."""

    def __init__(self, model) -> None:
        self.inner = TorchRunner(model)
        self.label, self.img_size, self.max_prompt_points = "looping", self.inner.img_size, self.inner.max_prompt_points
        self.decode_calls = 0
        self.torch_threads_while_decoding: set[int] = set()

    def encode(self, image):
        return self.inner.encode(image)

    def decode(self, embedding, points, labels, image_hw):
        self.decode_calls += 1
        self.torch_threads_while_decoding.add(torch.get_num_threads())
        return self.inner.decode(embedding, points, labels, image_hw)


def test_everything_over_the_default_decode_loop_equals_the_batched_path(make_tiny_model, dogs):
    model = make_tiny_model(img_size=128)
    config = EverythingConfig(points_per_side=4, points_per_batch=5, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    batched = EverythingGenerator(Predictor(model), config).generate(dogs, progress=False)
    runner = LoopingRunner(model)
    threads_before = torch.get_num_threads()
    looped = EverythingGenerator(Predictor(runner), config).generate(dogs, progress=False)
    assert runner.decode_calls == 16 and len(looped) == len(batched) > 0
    # a runner with its own runtime threads decodes the grid while torch's pool is one thread (restored after)
    assert runner.torch_threads_while_decoding == {1} and torch.get_num_threads() == threads_before > 1
    for a, b in zip(batched, looped):
        assert a["point_coords"] == b["point_coords"] and mask_iou(a["segmentation"], b["segmentation"]) >= 0.999


def test_host_side_work_is_one_torch_thread_beside_another_runtime(make_tiny_model):
    """Host-side torch work next to a runtime with its own threads (preprocessing, the grid's
    filters) runs on one torch thread, so no idle OpenMP worker spins on the runtime's cores;
    beside the PyTorch model it keeps torch's pool."""
    model = make_tiny_model(img_size=128)
    threads_before = torch.get_num_threads()
    with LoopingRunner(model).host_side():
        assert torch.get_num_threads() == 1
    with TorchRunner(model).host_side():
        assert torch.get_num_threads() == threads_before
    assert torch.get_num_threads() == threads_before > 1


def test_one_torch_thread_nests_and_leaves_other_threads_alone():
    """Nested uses restore once; torch reads its thread count per calling thread, so another
    thread's use neither changes ours nor is undone by ours."""
    before = torch.get_num_threads()
    seen: list[int] = []

    def other_thread() -> None:
        with one_torch_thread():
            seen.append(torch.get_num_threads())

    with one_torch_thread():
        with one_torch_thread():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 1
    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join(5)
    assert seen == [1] and torch.get_num_threads() == before > 1
