"""SAM-style mask decoder with EfficientSAM's GroupNorm upscaling and no dense (mask) prompt."""

from __future__ import annotations

import torch
from torch import nn

from .common import MLPBlock
from .config import EfficientSamConfig
from .transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
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

    def predict_masks(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, sparse_prompt_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One query per batch row: embeddings [B, C, h, w], prompts [B, N, C].

        Returns logits of all mask tokens [B, 4, 4h, 4w] and their IoU predictions [B, 4].
        """
        b = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = torch.cat([output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings], dim=1)
        _, c, h, w = image_embeddings.shape
        hs, src = self.transformer(image_embeddings, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens, :]

        upscaled = src.transpose(1, 2).reshape(b, c, h, w)
        for layer in self.final_output_upscaling_layers:
            upscaled = layer(upscaled)
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        _, uc, uh, uw = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(b, uc, uh * uw)).reshape(b, -1, uh, uw)
        return masks, self.iou_prediction_head(iou_token_out)

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
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Several queries per image: embeddings [B, C, h, w], prompts [B, Q, N, C] -> [B*Q, ...]."""
        b, q, n, c = sparse_prompt_embeddings.shape
        per_query = image_embeddings.repeat_interleave(q, dim=0)
        masks, iou = self.predict_masks(per_query, image_pe, sparse_prompt_embeddings.reshape(b * q, n, c))
        return self.select_outputs(masks, iou, multimask_output)
