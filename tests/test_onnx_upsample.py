"""The official ONNX interface's ``upsample`` export option: bilinear by default (what the official
ONNX files that labelme / osam replace do), bicubic on request (what ``predict_masks`` does; that
artifact is compared with ``predict_masks`` in tests/test_onnx.py), recorded in the manifest,
refused for the deploy interface, and a flag of ``edge-sam export``."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import require_toolchain
from edge_sam.apps.cli import build_parser
from edge_sam.apps.target_flags import given_options
from edge_sam.errors import EdgeSamError
from edge_sam.targets import get_target, read_manifest

ort = require_toolchain("onnxruntime")
require_toolchain("onnxscript")


@pytest.fixture(scope="module")
def official_default(tmp_path_factory, make_tiny_model):
    model = make_tiny_model(img_size=64)
    return model, get_target("onnx").export(model, "fp32", None, tmp_path_factory.mktemp("up") / "official",
                                            interface="official")


def _decode(artifact, hw, seed=0):
    session = ort.InferenceSession(str(artifact / "decoder.onnx"))
    generator = torch.Generator().manual_seed(seed)
    feed = {
        "image_embeddings": torch.randn(2, 32, 4, 4, generator=generator).numpy(),
        "batched_point_coords": (torch.rand(2, 3, 2, 2, generator=generator) * torch.tensor([hw[1], hw[0]])).numpy(),
        "batched_point_labels": torch.ones(2, 3, 2).numpy(),
        "orig_im_size": np.array(hw, np.int64),
    }
    return session.run(None, feed)


@pytest.mark.parametrize("hw", [(603, 1072), (100, 37), (10, 12)])
def test_default_is_bilinear_upsampling_of_the_low_res_logits(official_default, hw):
    _, artifact = official_default
    masks, _, low_res = _decode(artifact, hw)
    expected = F.interpolate(torch.from_numpy(low_res).flatten(0, 1), size=hw, mode="bilinear", align_corners=False)
    expected = expected.reshape(*low_res.shape[:3], *hw).numpy()
    assert masks.shape == expected.shape
    assert np.abs(masks - expected).max() <= 1e-5 * np.abs(expected).max()
    bicubic = F.interpolate(torch.from_numpy(low_res).flatten(0, 1), size=hw, mode="bicubic", align_corners=False)
    assert np.abs(masks - bicubic.reshape(expected.shape).numpy()).max() > 1e-3 * np.abs(expected).max()  # not bicubic


def test_the_manifest_records_the_upsampling(official_default):
    assert read_manifest(official_default[1]).export_options == {"upsample": "bilinear"}


def test_upsample_is_refused_for_the_deploy_interface(official_default, tmp_path):
    model, _ = official_default
    with pytest.raises(EdgeSamError, match="applies to --interface official only") as error:
        get_target("onnx").export(model, "fp32", None, tmp_path / "deploy", upsample="bicubic")
    assert "\n" not in str(error.value) and not (tmp_path / "deploy").exists()


def test_the_cli_has_the_flag_with_its_choices():
    args = build_parser().parse_args(["export", "--target", "onnx", "--interface", "official", "--upsample", "bicubic",
                                      "--out", "x"])
    assert given_options(args, "export", ["onnx"]) == {"onnx": {"upsample": "bicubic"}}
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        build_parser().parse_args(["export", "--target", "onnx", "--upsample", "nearest", "--out", "x"])
