"""EfficientSAM in PyTorch, loading the official checkpoints exactly."""

from .config import EfficientSamConfig
from .efficient_sam import EfficientSam, build_efficient_sam

__all__ = ["EfficientSam", "EfficientSamConfig", "build_efficient_sam"]
