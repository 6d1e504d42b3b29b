"""Predictor: encode once, decode many; every bad prompt is one clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_sam.errors import ImageError, PromptError
from edge_sam.predictor import Predictor, Prompt
from edge_sam.transforms import image_to_tensor, upscale_logits


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(48, 80, 3), dtype=np.uint8)


@pytest.fixture
def predictor(tiny_model, image) -> Predictor:
    p = Predictor(tiny_model)
    p.set_image(image)
    return p


def test_predict_matches_the_model_end_to_end(tiny_model, predictor, image):
    points, labels = np.array([[10.0, 20.0], [60.0, 30.0]]), np.array([1.0, 0.0])
    masks, iou, low_res = predictor.predict(points, labels, box=np.array([5, 5, 70, 40]))
    with torch.inference_mode():
        coords = torch.tensor([[[[10.0, 20.0], [60.0, 30.0], [5, 5], [70, 40]]]])
        expected_masks, expected_iou = tiny_model(image_to_tensor(image), coords, torch.tensor([[[1.0, 0.0, 2, 3]]]))
    assert masks.shape == (3, 48, 80) and masks.dtype == bool
    assert low_res.shape == (3, tiny_model.config.low_res_size, tiny_model.config.low_res_size)
    np.testing.assert_allclose(iou, expected_iou[0, 0].numpy(), atol=1e-6)
    assert (masks == (expected_masks[0, 0].numpy() > 0)).mean() >= 0.9999


def test_image_is_encoded_once(tiny_model, image):
    calls = []
    tiny_model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    predictor = Predictor(tiny_model)
    predictor.set_image(image)
    for x in (5, 15, 25):
        predictor.predict(np.array([[x, 10]]), np.array([1]))
    assert len(calls) == 1


def test_batch_equals_one_by_one(predictor):
    prompts = [
        Prompt(np.array([[10, 10]]), np.array([1])),
        Prompt(box=np.array([2, 3, 40, 30])),
        Prompt(np.array([[30, 20], [50, 40], [70, 5]]), np.array([1, 1, 0])),
    ]
    masks, iou, low_res = predictor.predict_batch(prompts)
    assert masks.shape == (3, 3, 48, 80)
    for q, prompt in enumerate(prompts):
        single_masks, single_iou, single_low = predictor.predict(prompt.point_coords, prompt.point_labels, prompt.box)
        np.testing.assert_allclose(iou[q], single_iou, atol=1e-5)
        np.testing.assert_allclose(low_res[q], single_low, atol=1e-4)


def test_logits_and_single_mask(predictor):
    logits, _, low = predictor.predict(np.array([[10, 10]]), np.array([1]), multimask_output=False, return_logits=True)
    assert logits.shape == (1, 48, 80) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, upscale_logits(torch.from_numpy(low), (48, 80)).numpy(), atol=1e-5)


@pytest.mark.parametrize(("low_hw", "image_hw"), [((64, 64), (603, 1072)), ((16, 16), (48, 80)), ((5, 7), (9, 3))])
def test_upscale_logits_is_torch_bicubic(low_hw, image_hw):
    """The CPU path (OpenCV's cubic resize) against torch's bicubic, which the reference uses:
    within 1e-4 of the logits' range, into a given buffer too; gradients take torch's path."""
    low = torch.randn(2, 3, *low_hw, generator=torch.Generator().manual_seed(0)) * 4
    expected = torch.nn.functional.interpolate(low.reshape(6, 1, *low_hw), image_hw, mode="bicubic").reshape(2, 3, *image_hw)
    full = upscale_logits(low, image_hw)
    assert full.shape == expected.shape
    assert (full - expected).abs().max() <= 1e-4 * float(low.abs().max())
    assert ((full > 0) == (expected > 0)).float().mean() >= 0.9999
    buffer = torch.empty(6, *image_hw)
    assert upscale_logits(low, image_hw, out=buffer).data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(buffer.reshape(2, 3, *image_hw), full)
    wanting_grad = low.clone().requires_grad_(True)
    torch.testing.assert_close(upscale_logits(wanting_grad, image_hw).detach(), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"point_coords": np.zeros((7, 2)) + 5, "point_labels": np.ones(7)}, "7 prompt slots used; the decoder takes at most 6"),
        ({"point_coords": np.array([[1, 1]] * 5), "point_labels": np.ones(5), "box": np.array([0, 0, 5, 5])}, "at most 6"),
        ({"point_coords": np.array([[81, 10]]), "point_labels": np.array([1])}, r"\(81, 10\) is outside the 80x48 image"),
        ({"point_coords": np.array([[10, -3]]), "point_labels": np.array([1])}, "outside the 80x48 image"),
        ({"box": np.array([0, 0, 90, 40])}, "outside the 80x48 image"),
        ({"point_coords": np.array([[1, 1]]), "point_labels": np.array([4])}, r"labels must be in \(-1, 0, 1, 2, 3\)"),
        ({}, "empty prompt"),
        ({"point_coords": np.array([[1, 1]]), "point_labels": np.array([-1])}, "empty prompt"),
        ({"point_coords": np.array([[1, 1]])}, "must be given together"),
        ({"point_coords": np.array([[1, 1], [2, 2]]), "point_labels": np.array([1])}, "2 points but 1 labels"),
        ({"box": np.array([10, 10, 5, 20])}, "x0 < x1"),
        ({"point_coords": np.array([[np.nan, 1]]), "point_labels": np.array([1])}, "finite"),
    ],
)
def test_bad_prompts_raise_one_clear_error(predictor, kwargs, message):
    with pytest.raises(PromptError, match=message) as info:
        predictor.predict(**kwargs)
    assert "\n" not in str(info.value)


def test_predict_before_set_image(tiny_model):
    with pytest.raises(PromptError, match="no image set"):
        Predictor(tiny_model).predict(np.array([[1, 1]]), np.array([1]))


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((10, 10), np.uint8), "HxWx3"),
        (np.zeros((10, 10, 4), np.uint8), "HxWx3"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        ([[0, 0, 0]], "numpy array"),
    ],
)
def test_bad_images(tiny_model, image, message):
    with pytest.raises(ImageError, match=message):
        Predictor(tiny_model).set_image(image)


def test_one_prompt_type_for_the_predictor_and_validation(predictor):
    """Validation prompts are predictor Prompts: the drift report's prompts replay here as they are."""
    from edge_sam.fixed_prompts import box_prompt, click_prompt, grid_prompts

    click, box = click_prompt([10, 20], object_index=4), box_prompt([5, 5, 70, 40])
    both = Prompt(np.array([[1, 1], [2, 2]]), np.array([1, 0]), box=np.array([0, 0, 9, 9]))
    assert (click.kind, box.kind, both.kind, Prompt(np.zeros((2, 2)), np.ones(2)).kind) == ("click", "box", "points+box", "points")
    np.testing.assert_array_equal(both.points, [[1, 1], [2, 2], [0, 0], [9, 9]])
    np.testing.assert_array_equal(both.labels, [1, 0, 2, 3])
    assert click.describe() == {"kind": "click", "points": [[10.0, 20.0]], "labels": [1.0], "object_index": 4}
    _, iou, _ = predictor.predict_batch([click, box])
    np.testing.assert_allclose(iou[1], predictor.predict(box=np.array([5, 5, 70, 40]))[1], atol=1e-6)
    assert predictor.predict_batch(grid_prompts((48, 80)))[0].shape == (12, 3, 48, 80)


def test_embedding_from_elsewhere(tiny_model, predictor, image):
    """set_embedding takes a stored embedding (numpy or torch) and answers as set_image does."""
    expected = predictor.predict(np.array([[10, 10]]), np.array([1]))[1]
    other = Predictor(tiny_model)
    other.set_embedding(torch.from_numpy(predictor.image_embedding.copy()), image.shape[:2])
    np.testing.assert_allclose(other.predict(np.array([[10, 10]]), np.array([1]))[1], expected, atol=1e-6)
