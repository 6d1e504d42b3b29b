"""Checkpoint formats, config inference, strictness and the error messages users see."""

from __future__ import annotations

import zipfile

import pytest
import torch

import edge_sam
from edge_sam.checkpoint import infer_config, read_state_dict
from edge_sam.errors import CheckpointError
from edge_sam.modeling import EfficientSamConfig, build_efficient_sam


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_safetensors_round_trip_keeps_config_and_weights(tiny_model, tmp_path):
    path = edge_sam.save_model(tiny_model, tmp_path / "tiny.safetensors")
    loaded = edge_sam.load_model(path)
    assert loaded.config == tiny_model.config
    assert _same_weights(loaded, tiny_model)
    assert not list(tmp_path.glob("*.tmp"))


def test_fp16_weights_are_cast_to_fp32(tiny_model, tmp_path):
    path = edge_sam.save_model(tiny_model, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = edge_sam.load_model(path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    expected = tiny_model.image_encoder.pos_embed.half().float()
    assert torch.equal(loaded.image_encoder.pos_embed, expected)


def test_official_pt_layout_and_zip_wrapper(tiny_model, tmp_path):
    pt = tmp_path / "model.pt"
    torch.save({"model": {k: v.half() for k, v in tiny_model.state_dict().items()}}, pt)
    wrapped = tmp_path / "model.pt.zip"
    with zipfile.ZipFile(wrapped, "w") as archive:  # the official ViT-S file is a zip around the .pt
        archive.write(pt, "weights/model.pt")
    for path in (pt, wrapped):
        loaded = edge_sam.load_model(path, config=tiny_model.config)
        assert torch.allclose(loaded.image_encoder.pos_embed, tiny_model.image_encoder.pos_embed, atol=1e-3)


def test_plain_state_dict_is_accepted(tiny_model, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(tiny_model.state_dict(), path)
    assert _same_weights(edge_sam.load_model(path, config=tiny_model.config), tiny_model)


@pytest.mark.parametrize(("config", "dim", "heads"), [(EfficientSamConfig.vitt(), 192, 3), (EfficientSamConfig.vits(), 384, 6)])
def test_ti_and_s_are_inferred_from_shapes(config, dim, heads):
    state = build_efficient_sam(config).state_dict()
    inferred = infer_config(state)
    assert (inferred.encoder_dim, inferred.encoder_heads, inferred.encoder_depth) == (dim, heads, 12)
    assert inferred == config


def test_parity_checkpoint_is_inferred_as_ti(parity_checkpoint):
    state, config = read_state_dict(parity_checkpoint)
    assert config is None
    assert infer_config(state) == EfficientSamConfig.vitt()


def test_mismatch_names_missing_unexpected_and_shapes(tiny_model, tmp_path):
    state = dict(tiny_model.state_dict())
    del state["mask_decoder.iou_token.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["image_encoder.neck.1.weight"] = torch.zeros(7)
    path = tmp_path / "bad.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError) as info:
        edge_sam.load_model(path, config=tiny_model.config)
    message = str(info.value)
    assert "\n" not in message
    assert "1 missing: mask_decoder.iou_token.weight" in message
    assert "1 unexpected: extra.weight" in message
    assert "image_encoder.neck.1.weight: checkpoint (7,) vs model (32,)" in message


def test_ti_checkpoint_into_s_model_is_refused(parity_checkpoint):
    with pytest.raises(CheckpointError, match="shape mismatch"):
        edge_sam.build_efficient_sam_vits(parity_checkpoint)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"not a checkpoint at all", "not a readable PyTorch checkpoint"), (None, "checkpoint not found")],
)
def test_unreadable_checkpoints_give_one_line(tmp_path, content, match):
    path = tmp_path / "broken.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as info:
        edge_sam.load_model(path)
    assert "\n" not in str(info.value)


def test_pickled_code_is_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "hook": print}, path)  # a non-tensor object
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        edge_sam.load_model(path)


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        edge_sam.load_model(path)
