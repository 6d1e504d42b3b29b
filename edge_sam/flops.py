"""Analytic FLOP counts of EfficientSAM's encoder and decoder, from the config alone.

Only multiply-accumulates count (2 FLOPs each): matmuls, linear layers, convolutions and the
attention products (QK^T and AV). Softmax, norms, GELU and adds are left out, as benchmark
FLOP counts usually do; they are bandwidth, not arithmetic. The numbers are what
``torch.utils.flop_counter.FlopCounterMode`` counts for the same graphs (tests check both).

The decoder count is per prompt (one query). ``cached=True`` leaves out what the decoder
computes from the image alone and a runner computes once per image (the first two-way layer's
image-side key/value projections and its image-to-token query projection, see
:meth:`edge_sam.modeling.mask_decoder.MaskDecoder.image_context`); ``factored=True`` counts the
deploy form's per-prompt decoder, whose cross-attentions after the context fold the image-side
projections into the prompt tokens (:mod:`edge_sam.modeling.transformer`).

    >>> from edge_sam.modeling import EfficientSamConfig
    >>> round(encoder_flops(EfficientSamConfig.vitt()).total / 1e9)
    205
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .modeling.config import EfficientSamConfig

__all__ = ["FlopCount", "encoder_flops", "decoder_flops", "decoder_image_flops", "folds_decoder_attention"]


@dataclass(frozen=True)
class FlopCount:
    """FLOPs by part (name -> FLOPs); ``total`` is their sum."""

    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def group(self, prefix: str) -> int:
        """FLOPs of every part whose name starts with ``prefix``."""
        return sum(v for k, v in self.parts.items() if k.startswith(prefix))


def _matmul(m: int, k: int, n: int) -> int:
    """[m, k] @ [k, n]: m*n*k multiply-accumulates."""
    return 2 * m * k * n


def encoder_flops(config: EfficientSamConfig, img_size: int | None = None) -> FlopCount:
    """The image encoder (patch embedding, ViT blocks, neck) at ``img_size`` (default the config's)."""
    size = img_size or config.img_size
    grid = size // config.patch_size
    tokens, dim = grid * grid, config.encoder_dim
    hidden = int(dim * config.mlp_ratio)
    depth, neck = config.encoder_depth, config.neck_dim
    parts = {"patch_embed": _matmul(tokens, 3 * config.patch_size**2, dim)}
    per_block = {
        "linear.qkv": _matmul(tokens, dim, 3 * dim),
        # Over all heads: heads * tokens^2 * head_dim = tokens^2 * dim, for QK^T and for AV.
        "attention.qk": _matmul(tokens, dim, tokens),
        "attention.av": _matmul(tokens, tokens, dim),
        "linear.proj": _matmul(tokens, dim, dim),
        "linear.mlp": _matmul(tokens, dim, hidden) + _matmul(tokens, hidden, dim),
    }
    for name, flops in per_block.items():
        parts[name] = depth * flops
    parts["neck.conv1x1"] = _matmul(tokens, dim, neck)
    parts["neck.conv3x3"] = _matmul(tokens, 9 * neck, neck)
    return FlopCount(parts)


def _decoder_sizes(config: EfficientSamConfig, img_size: int | None) -> tuple[int, int, int, int, int]:
    grid = (img_size or config.img_size) // config.patch_size
    dim = config.neck_dim
    tokens = 1 + (config.num_multimask_outputs + 1) + config.max_prompt_points  # iou, mask tokens, prompt slots
    cross = dim // 2  # the two-way transformer's cross-attention downsample rate is 2
    return grid, grid * grid, dim, tokens, cross


def decoder_image_flops(config: EfficientSamConfig, img_size: int | None = None) -> FlopCount:
    """What the decoder computes from the image embedding alone (once per image when cached)."""
    _, n, dim, _, cross = _decoder_sizes(config, img_size)
    return FlopCount({
        "layer0.token_to_image.k_proj": _matmul(n, dim, cross),
        "layer0.token_to_image.v_proj": _matmul(n, dim, cross),
        "layer0.image_to_token.q_proj": _matmul(n, dim, cross),
    })


def _factored_cross_attention(config: EfficientSamConfig, img_size: int | None, layer: int) -> dict[str, int]:
    """One two-way layer's cross-attentions with the image-side projections folded into the T
    tokens (``TwoWayAttention.tokens_to_image`` / ``image_to_tokens``); layer 0 takes its
    image-side projections from the context."""
    _, n, dim, t, cross = _decoder_sizes(config, img_size)
    folded = config.decoder_heads * t  # image-side columns: every head's tokens
    p = f"layer{layer}."
    parts = {p + "token_to_image.q_proj": _matmul(t, dim, cross), p + "token_to_image.out_proj": _matmul(t, cross, dim)}
    if layer == 0:
        parts[p + "token_to_image.attention"] = _matmul(t, cross, n) + _matmul(t, n, cross)
        parts[p + "image_to_token.attention"] = _matmul(n, cross, t)
    else:
        parts[p + "token_to_image.fold"] = _matmul(t, cross, dim) + _matmul(t, dim, cross)  # q into W_k, W_v after
        parts[p + "token_to_image.attention"] = _matmul(n, dim, folded) + _matmul(folded, n, dim)
        parts[p + "image_to_token.fold"] = _matmul(t, cross, dim) + _matmul(t, cross, 1)  # k into W_q and b_q
        parts[p + "image_to_token.attention"] = _matmul(n, dim, folded)
    parts[p + "image_to_token.kv_proj"] = 2 * _matmul(t, dim, cross)
    parts[p + "image_to_token.fold_out"] = _matmul(t, cross, dim)  # v into W_out
    parts[p + "image_to_token.out"] = _matmul(n, folded, dim)
    return parts


def decoder_flops(
    config: EfficientSamConfig, img_size: int | None = None, cached: bool = False, factored: bool = False
) -> FlopCount:
    """The mask decoder (prompt encoding included) for one prompt, with the 6 prompt slots filled
    and all 4 mask tokens computed (what every decoder graph does). ``factored`` (implies
    ``cached``): the deploy form's per-prompt decoder graph."""
    cached = cached or factored
    grid, n, dim, t, cross = _decoder_sizes(config, img_size)
    heads_out = config.num_multimask_outputs + 1
    parts: dict[str, int] = {"prompt_encoding": _matmul(config.max_prompt_points, 2, dim // 2)}
    for layer in range(config.decoder_depth):
        p = f"layer{layer}."
        parts[p + "self_attn.proj"] = 4 * _matmul(t, dim, dim)
        parts[p + "self_attn.attention"] = _matmul(t, dim, t) + _matmul(t, t, dim)
        parts[p + "token_to_image.q_proj"] = _matmul(t, dim, cross)
        parts[p + "token_to_image.k_proj"] = _matmul(n, dim, cross)
        parts[p + "token_to_image.v_proj"] = _matmul(n, dim, cross)
        parts[p + "token_to_image.attention"] = _matmul(t, cross, n) + _matmul(t, n, cross)
        parts[p + "token_to_image.out_proj"] = _matmul(t, cross, dim)
        parts[p + "mlp"] = _matmul(t, dim, config.decoder_mlp_dim) + _matmul(t, config.decoder_mlp_dim, dim)
        parts[p + "image_to_token.q_proj"] = _matmul(n, dim, cross)
        parts[p + "image_to_token.kv_proj"] = 2 * _matmul(t, dim, cross)
        parts[p + "image_to_token.attention"] = _matmul(n, cross, t) + _matmul(n, t, cross)
        parts[p + "image_to_token.out_proj"] = _matmul(n, cross, dim)
        if factored:
            for name in [name for name in parts if name.startswith(p + "token_to_image.") or name.startswith(p + "image_to_token.")]:
                del parts[name]
            parts.update(_factored_cross_attention(config, img_size, layer))
    parts["final.token_to_image.q_proj"] = _matmul(t, dim, cross)
    parts["final.token_to_image.kv_proj"] = 2 * _matmul(n, dim, cross)
    parts["final.token_to_image.attention"] = _matmul(t, cross, n) + _matmul(t, n, cross)
    parts["final.token_to_image.out_proj"] = _matmul(t, cross, dim)
    if factored:  # the final attention is the token-to-image half of a later layer
        del parts["final.token_to_image.kv_proj"]
        final = _factored_cross_attention(config, img_size, max(config.decoder_depth, 1))
        parts.update({"final." + name.split(".", 1)[1]: flops for name, flops in final.items() if ".token_to_image." in name})
    side, channels = grid, dim
    for i, out_channels in enumerate(config.upscaling_dims):  # ConvTranspose2d k2 s2: 4 taps per input pixel
        parts[f"upscaling.{i}"] = _matmul(side * side, channels, 4 * out_channels)
        side, channels = 2 * side, out_channels
    parts["hypernetworks"] = heads_out * (2 * _matmul(1, dim, dim) + _matmul(1, dim, channels))
    parts["mask_product"] = _matmul(heads_out, channels, side * side)
    iou_dims = [dim] + [config.iou_head_hidden_dim] * (config.iou_head_depth - 1) + [heads_out]
    parts["iou_head"] = sum(_matmul(1, a, b) for a, b in zip(iou_dims, iou_dims[1:]))
    if cached:
        for name in decoder_image_flops(config, img_size).parts:
            parts[name] = 0
    return FlopCount(parts)


def folds_decoder_attention(config: EfficientSamConfig, img_size: int | None = None) -> bool:
    """Whether the deploy form's per-prompt decoder folds its cross-attentions' image-side
    projections into the tokens: where that counts fewer FLOPs (EfficientSAM's decoder, at any
    size; not a decoder whose heads times tokens outnumber its attention width)."""
    return decoder_flops(config, img_size, factored=True).total < decoder_flops(config, img_size, cached=True).total
