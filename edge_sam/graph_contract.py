"""The deploy contract, defined once for every target: the deploy-form graphs and their I/O
names, the preprocessing and prompt encoding an artifact expects (as manifest data a runner in
any language can follow), and the calibration inputs each graph sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from edge_sam.deploy_form import ContextDecoderGraph, DecoderContextGraph, DecoderGraph, EncoderGraph, pad_prompts
from edge_sam.modeling import EfficientSam
from edge_sam.transforms import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, preprocess

from edge_sam.image_sources import ImageSource
from edge_sam.fixed_prompts import grid_prompts
from edge_sam.runner import TorchRunner

# The deploy-form graphs, in the order an image goes through them: the encoder, the decoder's
# per-image context (once per image), the per-prompt decoder.
ROLES = ("encoder", "context", "decoder")
CONTEXT_NAMES = ("image_tokens", "token_to_image_keys", "token_to_image_values", "image_to_token_queries")
# Input and output names of the deploy-form graphs, the same in every runtime's files.
IO_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "encoder": (("image",), ("image_embeddings",)),
    "context": (("image_embeddings",), CONTEXT_NAMES),
    "decoder": ((*CONTEXT_NAMES, "point_coords", "point_labels"), ("low_res_masks", "iou_predictions")),
}
# The quantization component (edge_sam.quantize.recipes.Component) each graph belongs to: the
# context is part of the mask decoder.
COMPONENTS = {"encoder": "encoder", "context": "decoder", "decoder": "decoder"}
# matmul + softmax: the attention every runtime has a kernel for (XNNPACK takes no SDPA op, ONNX
# Runtime fuses none here, litert-torch lowers SDPA to the same BATCH_MATMUL + SOFTMAX anyway).
DEPLOY_ATTENTION = "matmul"


def deploy_graph(model: EfficientSam, img_size: int, role: str, attention: str = DEPLOY_ATTENTION) -> torch.nn.Module:
    """The deploy-form graph of one role (:data:`ROLES`), in eval mode with contiguous constants."""
    if role not in ROLES:
        raise ValueError(f"unknown graph role {role!r} (choose from {', '.join(ROLES)})")
    if role == "encoder":
        return _contiguous(EncoderGraph(model, img_size, attention=attention))
    decoder = whole_decoder_graph(model, img_size, attention)
    return DecoderContextGraph(decoder).eval() if role == "context" else ContextDecoderGraph(decoder).eval()


def whole_decoder_graph(model: EfficientSam, img_size: int, attention: str = DEPLOY_ATTENTION) -> DecoderGraph:
    """The decoder in one graph, embedding to masks (the official interface's, and the one the
    deploy form's context and decoder graphs split), in eval mode with contiguous constants."""
    return _contiguous(DecoderGraph(model, img_size, multimask=True, attention=attention))


def _contiguous(graph: torch.nn.Module) -> torch.nn.Module:
    """``graph`` in eval mode with contiguous constants: ExecuTorch 1.5.1 silently miscomputes a
    constant with permuted strides, and no runtime is worse for standard strides."""
    with torch.no_grad():
        for tensor in [*graph.parameters(), *graph.buffers()]:
            if not tensor.is_contiguous():
                tensor.data = tensor.data.contiguous()
    return graph.eval()


def preprocessing_contract(in_graph: bool) -> dict[str, Any]:
    """The preprocessing every artifact expects, as data a runner in any language can follow.

    The numbers come from the same constants :func:`edge_sam.transforms.preprocess` uses, and a
    runner refuses an artifact whose recorded contract differs from this one.
    """
    return {
        "in_graph": in_graph,
        "color": "RGB",
        "layout": "NCHW",
        "input_range": [0.0, 1.0],
        "input_scale": "uint8 / 255",
        "resize": "bilinear, align_corners=False, no antialias, stretched to a square (no aspect padding)",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def prompt_contract(model: EfficientSam, in_graph: bool) -> dict[str, Any]:
    return {
        "coordinates": "image pixels (x, y)" if in_graph else "model pixels: x * img_size / W, y * img_size / H",
        "slots": model.decoder_max_num_input_points,
        "padding": {"point": [-1.0, -1.0], "label": -1},
        "labels": {"0": "background point", "1": "foreground point", "2": "box top-left", "3": "box bottom-right"},
        "multimask_outputs": model.config.num_multimask_outputs,
    }



def decoder_calibration_batches(
    model: EfficientSam, source: ImageSource, img_size: int, role: str = "decoder"
) -> tuple[Iterator[tuple[torch.Tensor, ...]], int]:
    """Calibration inputs of the context or decoder graph and their count, for PT2E quantizers:
    the fp32 embedding of each image (context), or its fp32 context with each of the validation
    grid prompts (decoder) — what they see in the drift report."""
    reference = TorchRunner(model, img_size)
    slots = model.decoder_max_num_input_points
    context_graph = deploy_graph(model, img_size, "context")
    prompts_per_image = 1 if role == "context" else len(grid_prompts((1, 1)))

    def batches() -> Iterator[tuple[torch.Tensor, ...]]:
        for image in source.images():
            embedding = torch.from_numpy(reference.encode(image))
            if role == "context":
                yield (embedding,)
                continue
            with torch.no_grad():
                context = context_graph(embedding)
            for prompt in grid_prompts(image.shape[:2]):
                coords, labels = pad_prompts(prompt.points, prompt.labels, image.shape[:2], img_size, slots)
                yield *context, torch.from_numpy(coords[None]), torch.from_numpy(labels[None])

    return batches(), len(source) * prompts_per_image


def encoder_input(image: np.ndarray, img_size: int) -> torch.Tensor:
    """The deploy-form encoder's input for an HxWx3 uint8 image: [1, 3, S, S] float32, resized
    and normalized as the manifest's preprocessing contract says."""
    return preprocess(image_to_tensor(image), img_size)


def calibration_batches(model: EfficientSam, source: ImageSource, img_size: int, role: str):
    """Calibration inputs for one graph and their count: preprocessed images for the encoder; for
    the context and the decoder, :func:`decoder_calibration_batches`."""
    if role == "encoder":
        return ((encoder_input(image, img_size),) for image in source.images()), len(source)
    return decoder_calibration_batches(model, source, img_size, role)
