"""PyTorch deploy-form graphs -> Core ML ML programs (.mlpackage), at each precision.

- fp32 / fp16: ``ct.convert`` of the ``torch.export`` program (decomposed) with
  ``compute_precision`` FLOAT32 or FLOAT16; inputs and outputs stay float32 so every caller
  feeds and reads the same arrays.
- int8, weight-only recipes (:class:`edge_sam.quantize.recipes.WeightOnlyRecipe`): the fp16 program with
  the compression pass :func:`.quantize.weight_compression` configures (``linear_quantize_weights``
  or ``palettize_weights``) on the conv and linear weights of the components the recipe names.
  Both are data-free and run on Linux.
- int8, static recipes (W8A8): the PT2E program :func:`.quantize.quantize_activations` makes
  with ExecuTorch's ``CoreMLQuantizer``, calibrated on images, then ``ct.convert`` of it, which
  turns the quantize/dequantize pairs into Core ML ``quantize``/``dequantize`` ops and int8 weights. coremltools' own activation
  calibration (``linear_quantize_activations``) calls ``MLModel.predict`` and so needs macOS;
  the PT2E route does not.

Every int8 artifact computes in fp16 between the quantized ops, as it would on a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_sam.deploy_form import EncoderGraph
from edge_sam.errors import EdgeSamError
from edge_sam.transforms import IMAGENET_MEAN, IMAGENET_STD

from edge_sam.targets.coreml.program import import_coremltools, quiet_toolchain
from edge_sam.targets.coreml.runtime import IMAGE_SCALE, channel_tensor

DEPLOYMENT_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")
DEFAULT_DEPLOYMENT_TARGET = "iOS17"


@dataclass(frozen=True)
class GraphJob:
    """One deploy-form graph to convert: which, the module (eval mode), and how Core ML sees it."""

    role: str
    module: torch.nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    io_names: tuple[tuple[str, ...], tuple[str, ...]]
    deployment_target: str
    image_input: bool = False


class ImageInputEncoder(torch.nn.Module):
    """The encoder graph behind 0..255 -> ImageNet normalization, for a Core ML image input.

    Core ML's own image preprocessing has one scale for all channels and a bias per channel,
    which cannot express a per-channel std, so the program takes the pixel values as they are
    and normalizes them itself: the host executor and calibration feed the same 0..255 values.
    """

    def __init__(self, encoder: EncoderGraph) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("mean", channel_tensor(IMAGENET_MEAN))
        self.register_buffer("std", channel_tensor(IMAGENET_STD))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder((image * IMAGE_SCALE - self.mean) / self.std)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor]:
        return (torch.rand(batch, 3, self.encoder.img_size, self.encoder.img_size) * 255.0,)


def deployment_target(name: str):
    ct = import_coremltools()
    if name not in DEPLOYMENT_TARGETS:
        raise EdgeSamError(f"unknown Core ML deployment target '{name}' (choose from {', '.join(DEPLOYMENT_TARGETS)})")
    return getattr(ct.target, name)


def convert_module(
    graph: GraphJob,
    compute_precision: str,
    compression: tuple[str, object] | None = None,
    module: torch.nn.Module | None = None,
):
    """A graph -> an in-memory MLModel with our I/O names, computing in ``compute_precision``.

    ``module`` replaces ``graph.module`` (a PT2E-quantized GraphModule of it). ``compression``
    (from :func:`.quantize.weight_compression`) runs as the last pass of the conversion pipeline:
    compressing the converted model afterwards (``linear_quantize_weights(mlmodel)``) re-runs
    the pipeline on constexpr weights, and coremltools 9.0's ``fuse_conv_bias`` pass then fails
    on the patch embedding (conv -> transpose -> add of the position table).
    """
    ct = import_coremltools()
    input_names, output_names = graph.io_names
    pipeline = ct.PassPipeline.DEFAULT
    if compression is not None:
        pass_name, config = compression
        pipeline.append_pass(pass_name)
        pipeline.set_options(pass_name, {"config": config})
    with quiet_toolchain():
        program = torch.export.export(module or graph.module, graph.example_inputs).run_decompositions({})
        inputs = None
        if graph.image_input:
            shape = tuple(graph.example_inputs[0].shape)
            inputs = [ct.ImageType(name=input_names[0], shape=shape, color_layout=ct.colorlayout.RGB)]
        mlmodel = ct.convert(
            program,
            inputs=inputs,
            outputs=[ct.TensorType(name=name, dtype=np.float32) for name in output_names],
            convert_to="mlprogram",
            minimum_deployment_target=deployment_target(graph.deployment_target),
            compute_precision=ct.precision.FLOAT16 if compute_precision == "fp16" else ct.precision.FLOAT32,
            pass_pipeline=pipeline,
            skip_model_load=True,
        )
    actual = [i.name for i in mlmodel.get_spec().description.input]
    if actual != list(input_names):
        raise EdgeSamError(f"Core ML conversion named the inputs {actual}, expected {list(input_names)}")
    return mlmodel


def save_package(mlmodel, path: Path) -> None:
    with quiet_toolchain():
        mlmodel.save(str(path))
