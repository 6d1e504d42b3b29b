"""Architecture hyper-parameters of EfficientSAM, as one serializable record.

The official checkpoints fix every field but the encoder width and head count (Ti vs S); the
other fields exist so tests can build tiny models and so a model trained at a reduced input
size (the repo's reference model runs at 256) carries its own shape in its checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EfficientSamConfig:
    img_size: int = 1024
    patch_size: int = 16
    encoder_dim: int = 192
    encoder_depth: int = 12
    encoder_heads: int = 3
    mlp_ratio: float = 4.0
    # The pretraining grid of the learned position table (224 / 16 = 14, plus one cls slot).
    pretrain_grid: int = 14
    neck_dim: int = 256
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    upscaling_dims: tuple[int, ...] = field(default=(64, 32))
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    max_prompt_points: int = 6

    def __post_init__(self) -> None:
        object.__setattr__(self, "upscaling_dims", tuple(self.upscaling_dims))
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.encoder_dim % self.encoder_heads:
            raise ValueError(f"encoder_dim {self.encoder_dim} is not divisible by {self.encoder_heads} heads")

    @classmethod
    def vitt(cls, **overrides: Any) -> "EfficientSamConfig":
        """EfficientSAM-Ti: ViT-Tiny encoder (dim 192, 3 heads)."""
        return cls(**{"encoder_dim": 192, "encoder_heads": 3, **overrides})

    @classmethod
    def vits(cls, **overrides: Any) -> "EfficientSamConfig":
        """EfficientSAM-S: ViT-Small encoder (dim 384, 6 heads)."""
        return cls(**{"encoder_dim": 384, "encoder_heads": 6, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "EfficientSamConfig":
        """A few-hundred-kB model for fast tests: same graph, small sizes."""
        base = dict(
            img_size=64, encoder_dim=32, encoder_depth=2, encoder_heads=2, neck_dim=32,
            decoder_heads=4, decoder_mlp_dim=64, upscaling_dims=(16, 8), iou_head_hidden_dim=32,
        )
        return cls(**{**base, **overrides})

    @property
    def embedding_grid(self) -> int:
        """Side of the image-embedding grid (64 at 1024)."""
        return self.img_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the low-res mask logits (256 at 1024)."""
        return self.embedding_grid * 4

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "EfficientSamConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown EfficientSamConfig fields: {unknown}")
        return cls(**values)
