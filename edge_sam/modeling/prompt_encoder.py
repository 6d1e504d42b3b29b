"""Prompt encoder: random-Fourier position encoding plus a learned embedding per label.

Unlike SAM, label 0 (a background click) gets no learned embedding (the official weights were
not trained with negative points) and padding slots keep the encoding of their (-1, -1)
coordinate. Both are kept exactly so official checkpoints behave as they were trained.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding of [0, 1] coordinates through a fixed random Gaussian projection."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Encoding of every cell centre of an h x w grid: [C, h, w]."""
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(grid_h, device=device, dtype=torch.float32) + 0.5) / grid_h
        x = (torch.arange(grid_w, device=device, dtype=torch.float32) + 0.5) / grid_w
        yy, xx = torch.meshgrid(y, x, indexing="ij")
        return self._pe_encoding(torch.stack([xx, yy], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: int) -> torch.Tensor:
        """Encoding of [..., 2] (x, y) pixel coordinates in a square image of side ``image_size``."""
        return self._pe_encoding(coords.float() / image_size)


class PromptEncoder(nn.Module):
    """Embeds [B, N, 2] points (model pixels) with [B, N] labels into [B, N, C] tokens."""

    def __init__(self, embed_dim: int, image_embedding_size: int, input_image_size: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.invalid_points = nn.Embedding(1, embed_dim)
        self.point_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_top_left_embeddings = nn.Embedding(1, embed_dim)
        self.bbox_bottom_right_embeddings = nn.Embedding(1, embed_dim)

    def get_dense_pe(self, grid_size: int | None = None) -> torch.Tensor:
        """Position encoding of the image-embedding grid: [1, C, h, w]."""
        side = grid_size or self.image_embedding_size
        return self.pe_layer(side, side).unsqueeze(0)

    def forward(self, coords: torch.Tensor, labels: torch.Tensor, input_image_size: int | None = None) -> torch.Tensor:
        size = input_image_size or self.input_image_size
        embedding = self.pe_layer.forward_with_coords(coords + 0.5, size)  # +0.5: pixel centres
        labels = labels[..., None]
        for label, table in (
            (-1, self.invalid_points),
            (1, self.point_embeddings),
            (2, self.bbox_top_left_embeddings),
            (3, self.bbox_bottom_right_embeddings),
        ):
            embedding = embedding + table.weight * (labels == label)
        return embedding
