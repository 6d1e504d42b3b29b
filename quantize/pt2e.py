"""PT2E post-training quantization, shared by every target whose toolchain takes a PT2E graph
(ExecuTorch's XNNPACKQuantizer, litert-torch's PT2EQuantizer, ...).

The flow is the same for all of them: ``torch.export`` the module, insert the quantizer's
observers (``prepare_pt2e``), run calibration batches through it, replace observers by
quantize/dequantize pairs (``convert_pt2e``). Only the quantizer and ``fold_quantize`` differ
per target (litert-torch needs the weights' quantize ops kept, ``fold_quantize=False``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from tqdm import tqdm


def quantize_pt2e(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    quantizer,
    calibration_batches: Iterable[tuple[torch.Tensor, ...]],
    fold_quantize: bool = True,
    total: int | None = None,
    description: str = "calibrating",
) -> torch.fx.GraphModule:
    """The quantized GraphModule of ``module`` (in eval mode), calibrated on ``calibration_batches``.

    Each batch is a tuple of positional inputs shaped like ``example_inputs``. Dynamic schemes
    still need one batch: weight observers record their ranges during a forward pass.
    """
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    exported = torch.export.export(module.eval(), example_inputs).module()
    prepared = prepare_pt2e(exported, quantizer)
    seen = 0
    with torch.no_grad():
        for batch in tqdm(calibration_batches, total=total, desc=description, unit="batch", leave=False):
            prepared(*batch)
            seen += 1
    if seen == 0:
        raise ValueError("PT2E quantization needs at least one calibration batch")
    converted = convert_pt2e(prepared, fold_quantize=fold_quantize)
    move_exported_model_to_eval(converted)
    return converted


def with_recipe_activations(config, recipe):
    """A PT2E ``QuantizationConfig`` with the recipe's activation observer, symmetry and width.

    minmax is the recipes' default; moving-average averages each batch's range; percentile and
    entropy both map to the histogram observer (its L2-optimal range search: PT2E has no separate
    percentile or entropy observer). Shared by every target whose quantizer takes such a config.
    """
    import dataclasses

    from torchao.quantization.pt2e.observer import HistogramObserver, MinMaxObserver, MovingAverageMinMaxObserver

    observer = {"minmax": MinMaxObserver, "moving-average": MovingAverageMinMaxObserver}.get(
        recipe.calibration_method, HistogramObserver)
    wide = recipe.activation_bits == 16
    activation = dataclasses.replace(
        config.input_activation,
        qscheme=torch.per_tensor_symmetric if recipe.symmetric_activations or wide else torch.per_tensor_affine,
        # the smallest scale: 2^-12 is XNNPACK's floor for int8; an int16 grid needs 256 times finer
        observer_or_fake_quant_ctr=observer.with_args(eps=2**-20 if wide else 2**-12),
    )
    if wide:  # symmetric int16: LiteRT's 16x8 kernels take zero point 0 only
        activation = dataclasses.replace(activation, dtype=torch.int16, quant_min=-(2**15 - 1), quant_max=2**15 - 1)
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


def calibrated_pt2e(model, graph: torch.nn.Module, quantizer, needs_calibration: bool, calibration, img_size: int,
                    role: str) -> torch.fx.GraphModule:
    """``graph`` (one deploy-form role of ``model``) PT2E-quantized by ``quantizer``: calibrated on
    ``calibration`` when the recipe's activations are static, else one pass so the weight
    observers see the weights. Every target whose INT8 goes through PT2E quantizes so."""
    from edge_sam.graph_contract import calibration_batches

    if needs_calibration:
        batches, total = calibration_batches(model, calibration, img_size, role)
    else:
        batches, total = [graph.example_inputs()], 1
    return quantize_pt2e(graph, graph.example_inputs(), quantizer, batches, total=total, description=f"calibrating {role}")
