"""SAM-style mask decoder with EfficientSAM's GroupNorm upscaling and no dense (mask) prompt."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import MLPBlock
from .config import EfficientSamConfig
from .transformer import ImageContext, TwoWayTransformer


def to_raster(masks: torch.Tensor, grid: tuple[int, int], levels: int) -> torch.Tensor:
    """[Q, M, pixels] in :meth:`MaskDecoder.upscale`'s order -> [Q, M, 2^L h, 2^L w] images.

    One level at a time, in rank-4 reshapes (what every mobile runtime takes): split off the
    coarsest level's (dy, dx) and move dy next to the row, dx next to the column.
    """
    q, m, _ = masks.shape
    h, w = grid
    for level in range(levels):
        inner = 4 ** (levels - level - 1)  # pixels under each child at this level
        x = masks.reshape(q * m * h, w, 2, 2 * inner).transpose(1, 2)  # rows (.., y, dy), cols (x, dx, inner)
        h, w = 2 * h, 2 * w
        masks = x.reshape(q, m, h * w, inner) if inner > 1 else x
    return masks.reshape(q, m, h, w)


class MaskDecoder(nn.Module):
    # Prompts of one image decoded per call in forward(): each prompt carries [4096, 256]-sized
    # image tensors at 1024, and a few at a time keep them in the CPU's caches (16 at once was
    # slower per prompt than one; on 2 threads 2 at a time beat 1 and 4 in fp32 and bf16:
    # benchmarks/decoder_latency.py --chunks, docs/performance.md).
    prompt_chunk: int = 2

    def __init__(self, config: EfficientSamConfig) -> None:
        super().__init__()
        dim = config.neck_dim
        self.num_multimask_outputs = config.num_multimask_outputs
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(config.decoder_depth, dim, config.decoder_heads, config.decoder_mlp_dim)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        layers = []
        in_dim = dim
        for i, out_dim in enumerate(config.upscaling_dims):
            last = i == len(config.upscaling_dims) - 1
            layers.append(
                nn.Sequential(
                    nn.ConvTranspose2d(in_dim, out_dim, kernel_size=2, stride=2),
                    nn.Identity() if last else nn.GroupNorm(1, out_dim),
                    nn.GELU(),
                )
            )
            in_dim = out_dim
        self.final_output_upscaling_layers = nn.ModuleList(layers)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLPBlock(dim, dim, in_dim, num_layers=2) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLPBlock(dim, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth - 1)

    def image_context(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor) -> ImageContext:
        """The prompt-independent part of decoding [B, C, h, w] embeddings: compute it once per
        image and pass it to :meth:`predict_masks` / :meth:`forward` for every prompt."""
        return self.transformer.image_context(image_embeddings, image_pe)

    def predict_masks(
        self,
        image_embeddings: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        sparse_prompt_embeddings: torch.Tensor,
        context: ImageContext | None = None,
        factored: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One query per batch row: embeddings [B, C, h, w] (or B = 1 for every row), prompts [Q, N, C].

        ``context`` replaces the embeddings and position encoding when already computed;
        ``factored`` is the transformer's (:class:`~edge_sam.modeling.transformer.TwoWayTransformer`).
        Returns logits of all mask tokens [Q, 4, 4h, 4w] and their IoU predictions [Q, 4].
        """
        q = sparse_prompt_embeddings.shape[0]
        if context is None:
            context = self.image_context(image_embeddings, image_pe)
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(q, -1, -1), sparse_prompt_embeddings], dim=1)
        hs, src = self.transformer(None, None, tokens, context, factored)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = self.upscale(src)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = hyper_in @ upscaled.transpose(1, 2)  # [Q, 4, pixels], pixels in upscale()'s order
        return to_raster(masks, context.grid, len(self.final_output_upscaling_layers)), self.iou_prediction_head(iou_token_out)

    def upscale(self, src: torch.Tensor) -> torch.Tensor:
        """Image tokens [Q, N, C] -> upscaled features [Q, N * 4^L, C_L] (L layers).

        Each ConvTranspose2d(kernel 2, stride 2) maps a pixel to its 2x2 children on its own, so
        it is one linear layer on the tokens with the kernel laid out [(dy, dx, C_out), C_in]; the
        children stay next to their parent (pixel order: token, then dy, dx per level) and
        :func:`to_raster` puts the final masks in image order once. The same arithmetic as the
        convolutions, without the channels-first copies of the 64- and 32-channel maps (the
        copies and the 64-channel transposed convolution were a third of a prompt's time);
        GroupNorm(1) is a layer norm over all pixels and channels.
        """
        x = src
        for layer in self.final_output_upscaling_layers:
            conv, norm, act = layer
            # [C_in, C_out, dy, dx] -> rows (dy, dx, C_out): one linear layer per pixel
            weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * conv.out_channels, conv.in_channels)
            x = F.linear(x, weight, conv.bias.repeat(4)).reshape(x.shape[0], -1, conv.out_channels)
            if isinstance(norm, nn.GroupNorm):
                x = F.layer_norm(x, x.shape[-2:], eps=norm.eps) * norm.weight + norm.bias
            x = act(x)
        return x

    @staticmethod
    def select_outputs(
        masks: torch.Tensor, iou: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token 0 is the single-mask output, tokens 1.. the multimask candidates."""
        if multimask_output and masks.shape[1] > 1:
            return masks[:, 1:], iou[:, 1:]
        return masks[:, :1], iou[:, :1]

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        context: ImageContext | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Several queries per image: embeddings [B, C, h, w], prompts [B, Q, N, C] -> [B*Q, ...].

        One image's queries share its context (computed here once, or given) and are decoded
        ``prompt_chunk`` at a time; several images with several queries each repeat the
        embeddings per query.
        """
        b, q, n, c = sparse_prompt_embeddings.shape
        sparse = sparse_prompt_embeddings.reshape(b * q, n, c)
        if context is not None and b > 1 and q > 1:
            raise ValueError(f"a decoder context serves one image's queries, not {b} images with {q} queries each")
        if context is None and b > 1 and q > 1:
            per_query = image_embeddings.repeat_interleave(q, dim=0)
            masks, iou = self.predict_masks(per_query, image_pe, sparse)
        else:
            if context is None:
                context = self.image_context(image_embeddings, image_pe)
            chunk = len(sparse) if context.keys.shape[0] > 1 else self.prompt_chunk
            outputs = [self.predict_masks(None, None, sparse[i : i + chunk], context) for i in range(0, len(sparse), chunk)]
            masks, iou = (torch.cat(parts) if len(parts) > 1 else parts[0] for parts in zip(*outputs))
        return self.select_outputs(masks, iou, multimask_output)
