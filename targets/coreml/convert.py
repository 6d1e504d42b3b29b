"""PyTorch deploy-form graphs -> Core ML ML programs (.mlpackage), at each precision.

- fp32 / fp16: ``ct.convert`` of the ``torch.export`` program (decomposed) with
  ``compute_precision`` FLOAT32 or FLOAT16; inputs and outputs stay float32 so every caller
  feeds and reads the same arrays.
- int8, weight-only recipes (:mod:`edge_sam.quantize.weight_only`): the fp16 program with
  coremltools' ``linear_quantize_weights`` (int8, per output channel, symmetric) or
  ``palettize_weights`` (k-means, n bits) pass on the conv and linear weights of the
  components the recipe names. Both are data-free and run on Linux.
- int8, static recipes (W8A8): PT2E quantization with ExecuTorch's ``CoreMLQuantizer``
  (torchao-based) on the conv and linear modules the recipe names, calibrated on images, then
  ``ct.convert`` of the quantized program, which turns the quantize/dequantize pairs into
  Core ML ``quantize``/``dequantize`` ops and int8 weights. coremltools' own activation
  calibration (``linear_quantize_activations``) calls ``MLModel.predict`` and so needs macOS;
  the PT2E route does not.

Every int8 artifact computes in fp16 between the quantized ops, as it would on a device.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edge_sam.deploy import EncoderGraph
from edge_sam.errors import EdgeSamError
from edge_sam.quantize.pt2e import quantize_pt2e
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError
from edge_sam.quantize.weight_only import WeightOnlyRecipe
from edge_sam.transforms import IMAGENET_MEAN, IMAGENET_STD, image_to_tensor, preprocess

from edge_sam.targets.coreml.program import import_coremltools, quiet_toolchain

DEPLOYMENT_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")
DEFAULT_DEPLOYMENT_TARGET = "iOS17"
# Core ML op types each recipe op class covers (weights of these ops are compressed).
COREML_OP_TYPES = {OpClass.CONV: ("conv", "conv_transpose"), OpClass.LINEAR: ("linear",)}
# Observers the CoreMLQuantizer offers for a recipe's calibration method.
_OBSERVERS = {"minmax": "min_max"}
# An image-input encoder takes 0..255 RGB; the program scales it to [0, 1] before mean/std.
IMAGE_SCALE = 1.0 / 255.0


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
        self.register_buffer("mean", _channels(IMAGENET_MEAN))
        self.register_buffer("std", _channels(IMAGENET_STD))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder((image * IMAGE_SCALE - self.mean) / self.std)

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor]:
        return (torch.rand(batch, 3, self.encoder.img_size, self.encoder.img_size) * 255.0,)


def _channels(values: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(values).reshape(1, 3, 1, 1)


def image_input_pixels(normalized: torch.Tensor) -> torch.Tensor:
    """A normalized model input -> the 0..255 RGB an image-input encoder takes, rounded to 8 bits
    as the pixel buffer a device hands Core ML would be."""
    rgb = (normalized * _channels(IMAGENET_STD) + _channels(IMAGENET_MEAN)) / IMAGE_SCALE
    return torch.clamp(torch.round(rgb), 0, 255)


def deployment_target(name: str):
    ct = import_coremltools()
    if name not in DEPLOYMENT_TARGETS:
        raise EdgeSamError(f"unknown Core ML deployment target '{name}' (choose from {', '.join(DEPLOYMENT_TARGETS)})")
    return getattr(ct.target, name)


def weight_compression(recipe: WeightOnlyRecipe) -> tuple[str, object]:
    """(coremltools compression pass, its OptimizationConfig) for a weight-only recipe: the
    conv/linear weights of the recipe's op classes, int8 per output channel (symmetric) or
    k-means palettized with one n-bit table per tensor."""
    import_coremltools()
    import coremltools.optimize as cto

    if recipe.codec == "linear":
        if recipe.weight_bits != 8:
            raise RecipeError(f"recipe '{recipe.name}': Core ML linear weight quantization here is int8 only")
        op_config = cto.coreml.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        pass_name = "compression::linear_quantize_weights"
    elif recipe.codec == "palette":
        op_config = cto.coreml.OpPalettizerConfig(mode="kmeans", nbits=recipe.weight_bits, granularity="per_tensor")
        pass_name = "compression::palettize_weights"
    else:
        raise RecipeError(f"recipe '{recipe.name}': unknown weight codec '{recipe.codec}'")
    op_types = [t for op_class in recipe.quantized_ops for t in COREML_OP_TYPES.get(op_class, ())]
    return pass_name, cto.coreml.OptimizationConfig(op_type_configs={op_type: op_config for op_type in op_types})


def convert_module(
    graph: GraphJob,
    compute_precision: str,
    compression: tuple[str, object] | None = None,
    module: torch.nn.Module | None = None,
):
    """A graph -> an in-memory MLModel with our I/O names, computing in ``compute_precision``.

    ``module`` replaces ``graph.module`` (a PT2E-quantized GraphModule of it). ``compression``
    (from :func:`weight_compression`) runs as the last pass of the conversion pipeline:
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


# CoreMLQuantizer pattern names (its annotation registry) for the recipe op classes it can quantize.
_QUANTIZER_PATTERNS = {OpClass.CONV: "conv", OpClass.LINEAR: "linear"}


def coreml_quantizer(recipe: QuantRecipe):
    """ExecuTorch's CoreMLQuantizer, annotating only the patterns of the recipe's op classes.

    The stock ``annotate`` tries every pattern it knows (adds, muls, matmuls, pools, each with
    every activation) and can only narrow them by module type or name; on torch 2.13 its type
    filter never matches (export records module types as strings) and one pass per module name
    re-traces every pattern per module, minutes for a tiny model. Running just the conv/linear
    annotators over the whole graph (one component per graph) is what the recipe asks for.
    """
    from coremltools.optimize.torch.quantization.quantization_config import (
        LinearQuantizerConfig,
        ModuleLinearQuantizerConfig,
    )
    from executorch.backends.apple.coreml.quantizer import CoreMLQuantizer
    from executorch.backends.apple.coreml.quantizer._annotation_config import AnnotationConfig
    from executorch.backends.apple.coreml.quantizer._coreml_quantizer import _AnnotationPatternRegistry

    unsupported = sorted(op.value for op in recipe.quantized_ops if op not in _QUANTIZER_PATTERNS)
    if unsupported:
        raise RecipeError(f"recipe '{recipe.name}': the Core ML W8A8 path quantizes conv and linear only, not {', '.join(unsupported)}")
    if recipe.calibration_method not in _OBSERVERS:
        raise RecipeError(f"recipe '{recipe.name}': the Core ML quantizer has no '{recipe.calibration_method}' calibration "
                          f"(it has: {', '.join(_OBSERVERS)})")
    symmetric = recipe.symmetric_activations
    module_config = ModuleLinearQuantizerConfig(
        quantization_scheme="symmetric" if symmetric else "affine",
        activation_dtype=torch.qint8 if symmetric else torch.quint8,
        weight_dtype=torch.qint8,
        weight_per_channel=recipe.per_channel_weights,
        activation_observer=_OBSERVERS[recipe.calibration_method],
    )
    patterns = [_QUANTIZER_PATTERNS[op] for op in sorted(recipe.quantized_ops, key=lambda o: o.value)]

    class RecipeCoreMLQuantizer(CoreMLQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            annotation = AnnotationConfig.from_quantization_config(module_config)
            annotators = _AnnotationPatternRegistry.get_annotators()
            for pattern in patterns:
                annotators[pattern](model, annotation, None)
            return model

    return RecipeCoreMLQuantizer(LinearQuantizerConfig(global_config=module_config))


def quantize_activations(
    graph: GraphJob, recipe: QuantRecipe, batches: Iterable[tuple[torch.Tensor, ...]], total: int
) -> torch.fx.GraphModule:
    """The PT2E W8A8 GraphModule of the graph's module, calibrated on ``batches``."""
    with quiet_toolchain():
        quantizer = coreml_quantizer(recipe)
    return quantize_pt2e(graph.module, graph.example_inputs, quantizer, batches, total=total,
                         description=f"calibrating {graph.role}")


def encoder_batches(images: Iterable[np.ndarray], img_size: int) -> Iterator[tuple[torch.Tensor]]:
    """Calibration images as the encoder graph takes them (resized, normalized)."""
    for image in images:
        yield (preprocess(image_to_tensor(image), img_size),)


def save_package(mlmodel, path: Path) -> None:
    with quiet_toolchain():
        mlmodel.save(str(path))
