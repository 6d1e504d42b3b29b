"""Small building blocks shared by the encoder and the decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, explicit_softmax: bool) -> torch.Tensor:
    """Scaled dot-product attention over [B, heads, tokens, head_dim] tensors.

    The default path is ``F.scaled_dot_product_attention``: on the CPU it runs a blocked kernel,
    so the 4096x4096 score matrix of a 1024 input is never materialized. Some delegates
    (ExecuTorch's XNNPACK) do not take the SDPA op and fall back to slow kernels; deploy graphs
    for them set ``explicit_softmax`` to lower the same math as matmul + softmax + matmul.
    """
    if explicit_softmax:
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        return scores.softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, C] -> [B, heads, N, C / heads] (rank 4, which every mobile runtime takes)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, D] -> [B, N, heads * D]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW map.

    Written as channels-last ``F.layer_norm`` rather than hand-rolled mean/var: the same
    numbers, and converters (LiteRT static INT8 in particular) handle the fused op where the
    hand-written broadcast failed.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class MLPBlock(nn.Module):
    """``num_layers`` Linear+GELU layers of width ``hidden_dim``, then a Linear to ``output_dim``.

    The module names (``layers.N.0``, ``fc``) are the official checkpoint's keys.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        in_dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden_dim), nn.GELU()) for d in in_dims)
        self.fc = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.fc(x)
