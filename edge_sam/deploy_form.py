"""Deploy-form graphs: what every mobile/edge target exports.

The PyTorch model resizes its position table (bicubic) on every call, takes any number of
prompts per query and tiles embeddings per query — fine in eager mode, but bicubic resize is
missing from CoreML and the 5-D tile broke ONNX shape inference in peers' exports. These
wrappers fix what can be fixed at export time:

- :class:`EncoderGraph`: input is the already preprocessed image (resized to a fixed square
  size, ImageNet-normalized; the manifest carries the contract), the position grid is computed
  once and stored as a constant, every tensor stays at rank <= 4.
- :class:`DecoderGraph`: one query per batch row, exactly ``max_prompt_points`` slots whose
  coordinates are already in model pixels (-1 marks padding); returns low-res logits and IoU
  predictions. Upscaling to the image size happens on the host (:func:`edge_sam.transforms.upscale_logits`).
- :class:`DecoderContextGraph` and :class:`ContextDecoderGraph`: the same decoder split in two,
  what depends on the image alone (run once per image) and what depends on the prompt; the
  per-prompt graph also folds the cross-attentions' image-side projections into the prompt
  tokens (``factored``, :mod:`edge_sam.modeling.transformer`), the same masks for fewer FLOPs.
"""

from __future__ import annotations

import copy
from typing import Literal

import numpy as np
import torch
from torch import nn

from .errors import PromptError
from .flops import folds_decoder_attention
from .modeling import EfficientSam
from .modeling.mask_decoder import MaskDecoder
from .modeling.transformer import ImageContext

AttentionImpl = Literal["sdpa", "matmul"]


def set_attention(module: nn.Module, impl: AttentionImpl) -> None:
    """Switch every attention layer under ``module`` between SDPA and matmul + softmax."""
    if impl not in ("sdpa", "matmul"):
        raise ValueError(f"attention must be 'sdpa' or 'matmul', got {impl!r}")
    for sub in module.modules():
        if hasattr(sub, "explicit_softmax"):
            sub.explicit_softmax = impl == "matmul"


class EncoderGraph(nn.Module):
    """Normalized [B, 3, S, S] image -> image embeddings [B, C, S/16, S/16].

    ``img_size`` may differ from the model's own size (export at 512 to trade accuracy for
    speed): the position table is resized once to the new token grid. ``attention="matmul"``
    spells attention as matmul + softmax for delegates without an SDPA kernel.
    """

    def __init__(self, model: EfficientSam, img_size: int | None = None, attention: AttentionImpl = "sdpa") -> None:
        super().__init__()
        self.img_size = img_size or model.image_encoder.img_size
        patch = model.image_encoder.patch_size
        if self.img_size % patch:
            raise ValueError(f"img_size {self.img_size} is not a multiple of the patch size {patch}")
        self.encoder = copy.deepcopy(model.image_encoder).eval()
        set_attention(self.encoder, attention)
        grid = self.img_size // patch
        with torch.no_grad():
            position = self.encoder.position_embedding(grid, grid).detach().contiguous().clone()  # permuted strides broke ExecuTorch 1.5.1 silently
        self.register_buffer("position", position)
        del self.encoder.pos_embed  # the constant above replaces it

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder.forward_with_position(image, self.position)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor]:
        return (torch.randn(batch, 3, self.img_size, self.img_size),)


class DecoderGraph(nn.Module):
    """(embeddings [B, C, h, w], coords [B, slots, 2] model px, labels [B, slots]) -> (logits, iou).

    Logits are [B, 3, 4h, 4w] with ``multimask=True`` (tokens 1..3), else [B, 1, 4h, 4w]
    (token 0). The dense position encoding of the embedding grid is a stored constant. The
    whole decoder in one graph (the official ONNX interface's); deploy artifacts split it into
    :class:`DecoderContextGraph` (once per image) and :class:`ContextDecoderGraph` (per prompt).
    """

    def __init__(
        self,
        model: EfficientSam,
        img_size: int | None = None,
        multimask: bool = True,
        attention: AttentionImpl = "sdpa",
    ) -> None:
        super().__init__()
        self.img_size = img_size or model.image_encoder.img_size
        self.grid = self.img_size // model.image_encoder.patch_size
        self.slots = model.decoder_max_num_input_points
        self.embed_dim = model.config.neck_dim
        self.multimask = multimask
        self.config = model.config
        self.prompt_encoder = copy.deepcopy(model.prompt_encoder).eval()
        self.mask_decoder = copy.deepcopy(model.mask_decoder).eval()
        set_attention(self.mask_decoder, attention)
        with torch.no_grad():
            dense_pe = self.prompt_encoder.get_dense_pe(self.grid).detach().contiguous().clone()  # (as above)
        self.register_buffer("dense_pe", dense_pe)

    def forward(
        self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self.prompt_encoder(point_coords, point_labels, self.img_size)
        masks, iou = self.mask_decoder.predict_masks(image_embeddings, self.dense_pe, sparse)
        return MaskDecoder.select_outputs(masks, iou, self.multimask)

    def image_context(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The prompt-independent tensors of :class:`~edge_sam.modeling.transformer.ImageContext`,
        in :data:`CONTEXT_TENSORS` order (the position encoding stays a constant of the decoder)."""
        context = self.mask_decoder.image_context(image_embeddings, self.dense_pe)
        return tuple(getattr(context, field) for field in CONTEXT_TENSORS)

    def decode_with_context(
        self, context: tuple[torch.Tensor, ...], point_coords: torch.Tensor, point_labels: torch.Tensor,
        factored: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` from :meth:`image_context`'s tensors: a batch-1 context serves every prompt row.
        ``factored``: the transformer's (:class:`~edge_sam.modeling.transformer.TwoWayTransformer`)."""
        key_pe = self.dense_pe.flatten(2).transpose(1, 2).contiguous()  # (a folded constant: standard strides)
        image_context = ImageContext((self.grid, self.grid), context[0], key_pe, *context[1:])
        sparse = self.prompt_encoder(point_coords, point_labels, self.img_size)
        masks, iou = self.mask_decoder.predict_masks(None, None, sparse, image_context, factored)
        return MaskDecoder.select_outputs(masks, iou, self.multimask)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        embeddings = torch.randn(batch, self.embed_dim, self.grid, self.grid)
        return (embeddings, *example_prompts(self.img_size, self.slots, batch))


# ImageContext fields a context graph returns, in order: the image tokens and the first two-way
# layer's token-to-image keys and values and image-to-token queries. Everything else a prompt
# needs depends on the prompt (the position encoding is a constant).
CONTEXT_TENSORS = ("keys", "first_k", "first_v", "first_q")


def example_prompts(img_size: int, slots: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One foreground point in the middle per row, the other slots padding."""
    coords = torch.full((batch, slots, 2), -1.0)
    labels = torch.full((batch, slots), -1.0)
    coords[:, 0] = img_size / 2
    labels[:, 0] = 1
    return coords, labels


class DecoderContextGraph(nn.Module):
    """Embeddings [1, C, h, w] -> the decoder's per-image context (:data:`CONTEXT_TENSORS`):
    run once per image, so no prompt pays for it (~0.8 of ~3.7 GFLOP per prompt at 1024)."""

    def __init__(self, decoder: DecoderGraph) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, image_embeddings: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.decoder.image_context(image_embeddings)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor]:
        return self.decoder.example_inputs(batch)[:1]


class ContextDecoderGraph(nn.Module):
    """(context of one image, coords [Q, slots, 2] model px, labels [Q, slots]) -> (logits, iou):
    the per-prompt part of :class:`DecoderGraph`, the same masks. ``factored`` folds the
    image-side projections of the cross-attentions after the context into the prompt tokens
    (EfficientSAM's decoder: the image tokens meet [88, 256] matrices instead of [128, 256]
    ones); by default where that counts fewer FLOPs (:func:`edge_sam.flops.folds_decoder_attention`),
    which is not so for decoders with many heads and narrow attention (the tests' tiny config)."""

    def __init__(self, decoder: DecoderGraph, factored: bool | None = None) -> None:
        super().__init__()
        self.decoder = decoder
        self.factored = folds_decoder_attention(decoder.config, decoder.img_size) if factored is None else factored
        self.context_graph = DecoderContextGraph(decoder)

    def forward(
        self, image_tokens: torch.Tensor, token_to_image_keys: torch.Tensor, token_to_image_values: torch.Tensor,
        image_to_token_queries: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        context = (image_tokens, token_to_image_keys, token_to_image_values, image_to_token_queries)
        return self.decoder.decode_with_context(context, point_coords, point_labels, self.factored)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """A real context (of a random embedding) and ``batch`` prompt rows."""
        embeddings, coords, labels = self.decoder.example_inputs(batch)
        with torch.no_grad():
            context = self.context_graph(embeddings[:1])
        return (*context, coords, labels)


def pad_prompts(
    points: np.ndarray, labels: np.ndarray, image_hw: tuple[int, int], img_size: int, slots: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Image-pixel prompts -> the decoder graph's fixed slots in model pixels.

    Matches ``EfficientSam.predict_masks``: x and y are scaled separately (the image is
    stretched to a square), padding slots are (-1, -1) with label -1. More prompts than slots is
    an error rather than a silent truncation.
    """
    points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    labels = np.asarray(labels, dtype=np.float32).reshape(-1)
    if len(points) != len(labels):
        raise PromptError(f"{len(points)} points but {len(labels)} labels")
    if len(points) > slots:
        raise PromptError(f"{len(points)} prompt points given; the decoder takes at most {slots} (a box uses 2)")
    h, w = image_hw
    scale = np.array([img_size / w, img_size / h], dtype=np.float32)
    coords = np.full((slots, 2), -1.0, dtype=np.float32)
    padded_labels = np.full((slots,), -1.0, dtype=np.float32)
    coords[: len(points)] = np.where(points >= 0, points * scale, -1.0)
    padded_labels[: len(labels)] = labels
    return coords, padded_labels
