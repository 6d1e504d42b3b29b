"""The EfficientSAM image encoder: a plain ViT (global attention in every block) and a conv neck."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d, attention, merge_heads, split_heads
from .config import EfficientSamConfig


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: [B, 3, S, S] -> [B, dim, S/p, S/p]."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (the checkpoint's layout)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.explicit_softmax = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # qkv's output is laid out (3, heads, head_dim): chunking keeps every tensor at rank <= 4.
        q, k, v = (split_heads(t, self.num_heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(merge_heads(attention(q, k, v, self.explicit_softmax)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ImageEncoderViT(nn.Module):
    """ViT encoder: patches + learned position table + blocks + neck -> [B, neck_dim, S/16, S/16]."""

    def __init__(self, config: EfficientSamConfig) -> None:
        super().__init__()
        self.img_size = config.img_size
        self.patch_size = config.patch_size
        self.patch_embed = PatchEmbed(config.patch_size, 3, config.encoder_dim)
        # A 14x14 table from 224-pixel pretraining plus a cls slot that is never used.
        self.pos_embed = nn.Parameter(torch.zeros(1, config.pretrain_grid**2 + 1, config.encoder_dim))
        self.blocks = nn.ModuleList(
            Block(config.encoder_dim, config.encoder_heads, config.mlp_ratio) for _ in range(config.encoder_depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(config.encoder_dim, config.neck_dim, kernel_size=1, bias=False),
            LayerNorm2d(config.neck_dim),
            nn.Conv2d(config.neck_dim, config.neck_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(config.neck_dim),
        )

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The position table resized (bicubic) to the token grid: [1, h, w, dim].

        It depends only on the weights and the grid, so deploy graphs compute it once and store
        it as a constant (bicubic resize is not convertible to every runtime).
        """
        table = self.pos_embed[:, 1:]
        side = int(table.shape[1] ** 0.5)
        grid = table.reshape(1, side, side, -1)
        if (side, side) == (grid_h, grid_w):
            return grid
        resized = F.interpolate(grid.permute(0, 3, 1, 2), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
        return resized.permute(0, 2, 3, 1)

    def forward_with_position(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Encode a normalized [B, 3, S, S] image given the already-resized position grid."""
        x = self.patch_embed(x).permute(0, 2, 3, 1) + position
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        for block in self.blocks:
            x = block(x)
        return self.neck(x.reshape(b, h, w, c).permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"image encoder expects {self.img_size}x{self.img_size} input, got {tuple(x.shape[-2:])}")
        grid = self.img_size // self.patch_size
        return self.forward_with_position(x, self.position_embedding(grid, grid))
