"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Part of the decoder's work depends on the image alone: the image tokens and their position
encoding, and in the first layer the image-side projections (token-to-image keys and values,
image-to-token queries). :meth:`TwoWayTransformer.image_context` computes those once;
the forward pass takes that context for any number of prompts, and a runner keeps it per image
(``edge_sam.flops.decoder_image_flops`` counts what that saves: ~0.8 of ~3.7 GFLOP at 1024).
A context of batch 1 serves a batch of prompts (broadcast), so a batch pays for the shared
part once.

After the first layer the image tokens depend on the prompt, and every cross-attention projects
all N image tokens (4,096 at 1024) through a [C, C/2] or [C/2, C] matrix, for a handful of prompt
tokens T (11: IoU, 4 mask tokens, 6 prompt slots). With ``factored=True`` (the deploy form's
per-prompt decoder) the cross-attentions fold those projections into the token side instead
(:meth:`TwoWayAttention.tokens_to_image`, :meth:`TwoWayAttention.image_to_tokens`): the same
arithmetic reassociated, whose image-side products have H*T = 88 columns where the projections
had C/2 = 128 (``edge_sam.flops.decoder_flops(..., factored=True)``: 2.22 instead of 2.88 GFLOP
per prompt at 1024).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .common import MLPBlock, attention, merge_heads, split_heads


@dataclass(frozen=True)
class ImageContext:
    """What the two-way transformer computes from the image embedding alone.

    ``grid`` (h, w) of the embedding; ``keys`` [B, N, C] (image tokens, N = h * w) and
    ``key_pe`` [1 or B, N, C] (their position encoding); ``first_k``, ``first_v`` [B, N, C'] the
    first layer's token-to-image key and value projections, ``first_q`` [B, N, C'] its
    image-to-token query projection (C' = C / 2). B is 1 when the context serves every prompt
    of one image.
    """

    grid: tuple[int, int]
    keys: torch.Tensor
    key_pe: torch.Tensor
    first_k: torch.Tensor
    first_v: torch.Tensor
    first_q: torch.Tensor


def _fold(weight: torch.Tensor, heads: int, tokens: torch.Tensor) -> torch.Tensor:
    """A projection's weight [H*d, C] times each head's token matrix [Q, H, d, T], laid out
    [Q, C, H*T]: the image side's right-hand operand as it is, so no runtime sees a transposed
    operand (LiteRT lowers ``x @ w.T`` with a computed ``w`` to a FULLY_CONNECTED with dynamic
    weights, which XNNPACK does not take)."""
    rows, _, width, tokens_n = tokens.shape
    per_head = weight.reshape(heads, width, -1).transpose(1, 2) @ tokens  # [Q, H, C, T]
    return per_head.permute(0, 2, 1, 3).reshape(rows, -1, heads * tokens_n)


class TwoWayAttention(nn.Module):
    """Attention with separate q/k/v projections that may downsample the internal width."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        internal_dim = embedding_dim // downsample_rate
        if internal_dim % num_heads:
            raise ValueError(f"internal width {internal_dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, internal_dim)
        self.k_proj = nn.Linear(embedding_dim, internal_dim)
        self.v_proj = nn.Linear(embedding_dim, internal_dim)
        self.out_proj = nn.Linear(internal_dim, embedding_dim)
        self.explicit_softmax = False

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention over already projected [B, tokens, C'] tensors, then the output projection.
        Batch axes broadcast (a batch-1 side serves every row of the other)."""
        # SDPA's fast CPU kernel takes equal batches only; matmul broadcasts, which keeps a graph
        # exported with a symbolic prompt batch free of shape guards.
        if not self.explicit_softmax and q.shape[0] != k.shape[0]:
            rows = max(q.shape[0], k.shape[0])
            q, k, v = (t.expand(rows, -1, -1) for t in (q, k, v))
        q, k, v = (split_heads(t, self.num_heads) for t in (q, k, v))
        return self.out_proj(merge_heads(attention(q, k, v, self.explicit_softmax)))

    @property
    def head_width(self) -> int:
        """Each head's share of the internal width (every projection's, q, k and v alike)."""
        return self.q_proj.out_features // self.num_heads

    def tokens_to_image(self, tokens: torch.Tensor, image_keys: torch.Tensor, image_values: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` for T query tokens [Q, T, C] against N image tokens [Q, N, C] (keys with
        their position encoding, values without), with the image-side projections folded into
        the queries: scores = (q_h W_k,h) X^T (the key bias adds a constant per query row, which
        softmax ignores), and A_h (X W_v,h + b_v,h) = (A_h X) W_v,h + b_v,h (A's rows sum to 1).
        The image side meets [H*T, C] matrices instead of the [C/2, C] projections."""
        rows, tokens_n, channels = tokens.shape
        heads, width = self.num_heads, self.head_width
        q = self.q_proj(tokens).reshape(rows, tokens_n, heads, width).permute(0, 2, 3, 1)  # [Q, H, d, T]
        folded_q = _fold(self.k_proj.weight, heads, q * width**-0.5)  # [Q, C, H*T]
        weights = (image_keys @ folded_q).transpose(1, 2).softmax(dim=-1)  # [Q, H*T, N]
        attended = (weights @ image_values).reshape(rows, heads, tokens_n, channels)  # [Q, H, T, C]
        values = attended @ self.v_proj.weight.reshape(heads, width, channels).transpose(1, 2)
        values = values + self.v_proj.bias.reshape(heads, 1, width)  # [Q, H, T, d]
        return self.out_proj(values.transpose(1, 2).reshape(rows, tokens_n, heads * width))

    def image_to_tokens(
        self, image_queries: torch.Tensor, token_keys: torch.Tensor, token_values: torch.Tensor, projected: bool = False
    ) -> torch.Tensor:
        """:meth:`forward` for N image tokens [B, N, C] (B = Q, or 1 for every prompt) querying T
        tokens [Q, T, C], with the projections folded into the token side: scores = X (W_q,h^T
        k_h^T) + b_q,h k_h^T, and the output projection applied to the values before the weights,
        sum_h A_h (v_h W_o,h^T). ``projected``: ``image_queries`` is already this layer's query
        projection [B, N, C/2] (the first layer's, from the image context)."""
        rows, tokens_n, channels = token_keys.shape
        heads, width = self.num_heads, self.head_width
        k = self.k_proj(token_keys).reshape(rows, tokens_n, heads, width).permute(0, 2, 3, 1) * width**-0.5  # [Q, H, d, T]
        n = image_queries.shape[1]
        if projected:
            q = image_queries.reshape(image_queries.shape[0], n, heads, width).transpose(1, 2)  # [B, H, N, d]
            weights = (q @ k).softmax(dim=-1).transpose(1, 2)  # [Q, N, H, T]
        else:
            bias = (self.q_proj.bias.reshape(heads, 1, width) @ k).reshape(rows, 1, heads * tokens_n)
            scores = image_queries @ _fold(self.q_proj.weight, heads, k) + bias  # [Q, N, H*T]
            weights = scores.reshape(rows, n, heads, tokens_n).softmax(dim=-1)  # [Q, N, H, T]
        v = self.v_proj(token_values).reshape(rows, tokens_n, heads, width).transpose(1, 2)  # [Q, H, T, d]
        folded_v = v @ self.out_proj.weight.reshape(channels, heads, width).permute(1, 2, 0)  # [Q, H, T, C]
        return weights.reshape(rows, n, heads * tokens_n) @ folded_v.reshape(rows, heads * tokens_n, channels) + self.out_proj.bias

    def attend_shared_keys(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries [Q, T, C] against batch-1 keys/values [1, N, C']: each query token attends
        to the keys alone, so the Q prompts' tokens go through as one sequence of Q*T tokens."""
        rows, tokens, _ = q.shape
        out = self.attend(self.q_proj(q).reshape(1, rows * tokens, -1), k, v)
        return out.reshape(rows, tokens, -1)


class TwoWayAttentionBlock(nn.Module):
    """Self-attention of tokens, tokens->image, MLP on tokens, image->tokens."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool) -> None:
        super().__init__()
        self.self_attn = TwoWayAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TwoWayAttention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, dim, num_layers=1)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TwoWayAttention(dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_projections(self, keys: torch.Tensor, key_pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The projections of the image tokens this block makes before any token reaches them:
        token-to-image keys and values, image-to-token queries."""
        k = keys + key_pe
        return (self.cross_attn_token_to_image.k_proj(k), self.cross_attn_token_to_image.v_proj(keys),
                self.cross_attn_image_to_token.q_proj(k))

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
        projections: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        factored: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``projections``: this block's :meth:`image_projections` of ``keys`` when already known.
        ``factored``: the cross-attentions fold the image-side projections into the tokens
        (:meth:`TwoWayAttention.tokens_to_image`, :meth:`TwoWayAttention.image_to_tokens`)."""
        # EfficientSAM differs from SAM here: the position encoding is added to the values and
        # the residual too, and the first layer keeps its residual connection.
        if not self.skip_first_layer_pe:
            queries = queries + query_pe
        queries = self.norm1(queries + self.self_attn(queries, queries, queries))

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        if factored and projections is None:
            queries = self.norm2(queries + t2i.tokens_to_image(queries + query_pe, keys + key_pe, keys))
        else:
            image_k, image_v, image_q = projections or self.image_projections(keys, key_pe)
            if image_k.shape[0] == 1:  # (for one prompt the same arithmetic as the other branch)
                attended = t2i.attend_shared_keys(queries + query_pe, image_k, image_v)
            else:
                attended = t2i.attend(t2i.q_proj(queries + query_pe), image_k, image_v)
            queries = self.norm2(queries + attended)
        queries = self.norm3(queries + self.mlp(queries))
        if factored:
            image_queries = keys + key_pe if projections is None else projections[2]
            attended = i2t.image_to_tokens(image_queries, queries + query_pe, queries, projected=projections is not None)
        else:
            attended = i2t.attend(image_q, i2t.k_proj(queries + query_pe), i2t.v_proj(queries))
        return queries, self.norm4(keys + attended)


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(dim, num_heads, mlp_dim, downsample_rate, skip_first_layer_pe=(i == 0))
            for i in range(depth)
        )
        self.final_attn_token_to_image = TwoWayAttention(dim, num_heads, downsample_rate)
        self.norm_final_attn = nn.LayerNorm(dim)

    def image_context(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> ImageContext:
        """image_embedding [B, C, h, w], image_pe [1 or B, C, h, w] -> the prompt-independent part."""
        # Contiguous once per image, so no prompt's linear layer copies them again.
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        grid = (image_embedding.shape[2], image_embedding.shape[3])
        if not self.layers:
            return ImageContext(grid, keys, key_pe, keys, keys, keys)
        return ImageContext(grid, keys, key_pe, *self.layers[0].image_projections(keys, key_pe))

    def forward(
        self,
        image_embedding: torch.Tensor | None,
        image_pe: torch.Tensor | None,
        point_embedding: torch.Tensor,
        context: ImageContext | None = None,
        factored: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding [B, C, h, w], image_pe [1 or B, C, h, w], point_embedding [Q, T, C].

        With ``context`` (from :meth:`image_context`) the image arguments are not read. Q equals
        B, or B is 1 and serves all Q prompts. ``factored``: the cross-attentions' image-side
        projections folded into the tokens (module docstring). Returns tokens [Q, T, C] and image
        tokens [Q, N, C].
        """
        if context is None:
            context = self.image_context(image_embedding, image_pe)
        keys, key_pe = context.keys, context.key_pe
        queries = point_embedding
        for index, layer in enumerate(self.layers):
            projections = (context.first_k, context.first_v, context.first_q) if index == 0 else None
            queries, keys = layer(queries, keys, point_embedding, key_pe, projections, factored)
        if keys.shape[0] != queries.shape[0]:  # no layer ran: the image tokens are still shared
            keys = keys.expand(queries.shape[0], -1, -1)
        final = self.final_attn_token_to_image
        if factored:
            attn_out = final.tokens_to_image(queries + point_embedding, keys + key_pe, keys)
        else:
            attn_out = final(queries + point_embedding, keys + key_pe, keys)
        return self.norm_final_attn(queries + attn_out), keys
