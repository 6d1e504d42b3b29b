"""The model a training run starts from: fresh weights, a full checkpoint, or a SAMI encoder."""

from __future__ import annotations

import dataclasses
import hashlib

import torch
from torch import nn

from edge_sam.checkpoint import check_state_dict, load_model
from edge_sam.errors import CheckpointError
from edge_sam.modeling import EfficientSam, EfficientSamConfig, build_efficient_sam

VIT_INIT_STD = 0.02


def init_encoder_from_scratch(encoder: nn.Module) -> None:
    """ViT-style initialization (truncated normal 0.02, zero biases) for an encoder trained from nothing.

    The module defaults leave the position table at zero and scale linear layers by fan-in,
    which trains noticeably slower from scratch; this is the usual ViT/MAE recipe.
    """
    for module in encoder.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=VIT_INIT_STD)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.trunc_normal_(encoder.pos_embed, std=VIT_INIT_STD)
    patch = encoder.patch_embed.proj
    nn.init.xavier_uniform_(patch.weight.view(patch.weight.shape[0], -1))
    nn.init.zeros_(patch.bias)


def fresh_model(config: EfficientSamConfig) -> EfficientSam:
    model = build_efficient_sam(config)
    init_encoder_from_scratch(model.image_encoder)
    return model


def load_at_size(path: str, img_size: int) -> EfficientSam:
    """A checkpoint's model rebuilt at ``img_size``: the position table is resized on every
    forward pass, so the same weights run at any multiple of the patch size."""
    loaded = load_model(path)
    model = build_efficient_sam(dataclasses.replace(loaded.config, img_size=img_size))
    model.load_state_dict(loaded.state_dict())
    return model


def copy_encoder(model: EfficientSam, encoder_path: str) -> None:
    """Put a pretrained (e.g. SAMI) image encoder into ``model``; the shapes must match."""
    source = load_model(encoder_path).image_encoder.state_dict()
    check_state_dict(model.image_encoder, source, f"{encoder_path} (image encoder)")
    model.image_encoder.load_state_dict(source)


def initial_model(config: EfficientSamConfig, init: str | None, init_encoder: str | None) -> EfficientSam:
    """Fresh weights for ``config``, or the ``init`` checkpoint (its own architecture, at
    ``config.img_size``); then, if given, the encoder from ``init_encoder``."""
    if init and init_encoder:
        raise CheckpointError("give either a full checkpoint to start from or a pretrained encoder, not both")
    model = load_at_size(init, config.img_size) if init else fresh_model(config)
    if init_encoder:
        copy_encoder(model, init_encoder)
    return model.train()


def state_fingerprint(model: nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, dtypes, bytes): equal weights, equal hash."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
