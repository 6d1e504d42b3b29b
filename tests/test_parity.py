"""Exact parity with the reference implementation on an official-format checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge_sam.checkpoint import check_state_dict
from edge_sam.modeling import EfficientSamConfig, build_efficient_sam
from edge_sam.transforms import image_to_tensor


def _rel_max_diff(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def embeddings(parity_model, dogs) -> torch.Tensor:
    with torch.inference_mode():
        return parity_model.get_image_embeddings(image_to_tensor(dogs))


def test_image_embeddings_match_reference(embeddings, parity_outputs):
    expected = parity_outputs["image_embeddings"]
    assert embeddings.shape == expected.shape
    assert _rel_max_diff(embeddings.numpy(), expected) <= 1e-4


def test_predict_masks_match_reference(parity_model, parity_outputs):
    with torch.inference_mode():
        low_res, iou = parity_model.predict_masks(
            torch.from_numpy(parity_outputs["image_embeddings"]),
            torch.from_numpy(parity_outputs["batched_points"]),
            torch.from_numpy(parity_outputs["batched_point_labels"]),
            multimask_output=True,
            input_h=603,
            input_w=1072,
        )
    expected_logits = parity_outputs["low_res_logits"]
    for query in range(2):  # two points, then a box
        assert _rel_max_diff(low_res[0, query].numpy(), expected_logits[0, query]) <= 1e-3
        np.testing.assert_allclose(iou[0, query].numpy(), parity_outputs["iou_predictions"][0, query], atol=1e-3)


def test_end_to_end_full_size_masks_agree(parity_model, parity_outputs, dogs):
    with torch.inference_mode():
        masks, _ = parity_model(
            image_to_tensor(dogs),
            torch.from_numpy(parity_outputs["batched_points"]),
            torch.from_numpy(parity_outputs["batched_point_labels"]),
        )
    expected = parity_outputs["full_res_masks"]
    assert masks.shape == expected.shape
    assert ((masks.numpy() > 0) == expected).mean() >= 0.999


@pytest.mark.parametrize(("name", "config"), [("vitt", EfficientSamConfig.vitt()), ("vits", EfficientSamConfig.vits())])
def test_official_key_lists_load_strictly(name, config, parity_dir):
    keys = json.loads((parity_dir / f"efficient_sam_{name}_state_dict_keys.json").read_text())
    model = build_efficient_sam(config)
    state = {k: torch.zeros(shape) for k, shape in keys.items()}
    check_state_dict(model, state, name)  # raises on any missing/unexpected key or shape
    model.load_state_dict(state, strict=True)
    assert set(model.state_dict()) == set(keys)
