"""Prompted-segmentation evaluation (EfficientSAM Table 4 protocol) for models and exported runners."""

from edge_sam.eval.evaluator import MODES, EvalError, EvalResult, evaluate
from edge_sam.eval.metrics import mask_iou, size_bucket

__all__ = ["MODES", "EvalError", "EvalResult", "evaluate", "mask_iou", "size_bucket"]
