"""edge_sam: EfficientSAM on phones, Jetson boards and laptops, with its accuracy checked.

``import edge_sam`` needs only torch, numpy and opencv; deployment toolchains are imported
lazily by the modules that use them.
"""

from .checkpoint import (
    build_efficient_sam_vits,
    build_efficient_sam_vitt,
    load_model,
    resolve_checkpoint,
    save_model,
)
from .errors import EdgeSamError
from .modeling import EfficientSam, EfficientSamConfig, build_efficient_sam

__version__ = "0.1.0"

__all__ = [
    "EdgeSamError",
    "EfficientSam",
    "EfficientSamConfig",
    "build_efficient_sam",
    "build_efficient_sam_vits",
    "build_efficient_sam_vitt",
    "load_model",
    "resolve_checkpoint",
    "save_model",
]
