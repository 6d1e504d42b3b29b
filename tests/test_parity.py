"""Exact parity with the reference implementation on an official-format checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from edge_sam.checkpoint import check_state_dict
from edge_sam.modeling import EfficientSamConfig, build_efficient_sam


@pytest.fixture(scope="module")
def errors(parity_errors, parity_model, parity_outputs, dogs) -> dict[str, float]:
    return parity_errors.measure(parity_model, parity_outputs, dogs)


def test_image_embeddings_match_reference(errors):
    assert errors["image_embeddings_rel_max"] <= 1e-4


def test_predict_masks_match_reference(errors):
    """Low-res logits of both queries (two points, then a box) and their IoU predictions."""
    assert errors["low_res_logits_rel_max"] <= 1e-3
    assert errors["iou_predictions_abs_max"] <= 1e-3


def test_end_to_end_full_size_masks_agree(errors):
    assert errors["full_res_mask_agreement"] >= 0.999


@pytest.mark.parametrize(("name", "config"), [("vitt", EfficientSamConfig.vitt()), ("vits", EfficientSamConfig.vits())])
def test_official_key_lists_load_strictly(name, config, parity_dir):
    keys = json.loads((parity_dir / f"efficient_sam_{name}_state_dict_keys.json").read_text())
    model = build_efficient_sam(config)
    state = {k: torch.zeros(shape) for k, shape in keys.items()}
    check_state_dict(model, state, name)  # raises on any missing/unexpected key or shape
    model.load_state_dict(state, strict=True)
    assert set(model.state_dict()) == set(keys)
