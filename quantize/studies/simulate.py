"""INT8 encoders simulated in PyTorch, with any set of layers kept float, for ranking layers fast.

Each target's own PT2E quantizer (the one its export uses, or for ONNX one that places
quantize/dequantize where onnxruntime's QDQ does, :func:`edge_sam.targets.onnx.quantize.simulation_quantizer`)
annotates every layer of the recipe; the deploy-form encoder is calibrated once and converted
once. A variant with some layers float is that converted graph with those layers'
quantize/dequantize pairs bypassed (their inputs, weights and outputs then flow in float).

Why that equals quantizing without those layers: PT2E observers only watch values during
calibration, so the ranges of the other layers are the same either way, and in a conv/linear
recipe no two layers share an observer (each layer's input is produced by a float op: LayerNorm,
GELU, the attention product, the image). ``tests/test_quantize_mixed.py`` checks the equality
against the target's per-layer quantizer. The ranking this gives is then verified at export,
on each runtime, by ``edge-sam quantize compare`` / ``edge-sam validate``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from collections.abc import Iterable

import torch

from edge_sam.modeling import EfficientSam
from edge_sam.quantize.layers import layers_of_scopes, node_scopes, quantizable_layers
from edge_sam.quantize.pt2e import quantize_pt2e
from edge_sam.quantize.recipes import OpClass, QuantRecipe, RecipeError, check_schemes

from edge_sam.image_sources import ImageSource
from edge_sam.graph_contract import calibration_batches, deploy_graph
from edge_sam.targets.core.registry import get_target

# The PT2E quantizer factory (recipe -> quantizer) whose placement each target's INT8 export follows.
SIMULATION_QUANTIZERS = {
    "onnx": "edge_sam.targets.onnx.quantize:simulation_quantizer",
    "executorch": "edge_sam.targets.executorch.quantize:recipe_quantizer",
    "tflite": "edge_sam.targets.tflite.quantize:recipe_quantizer",
    "coreml": "edge_sam.targets.coreml.quantize:coreml_quantizer",
}
DEFAULT_TARGET = "executorch"
_LAYER_OPS = frozenset({OpClass.CONV, OpClass.LINEAR})
_COMPUTE = ("aten.linear.default", "aten.conv2d.default")
_QUANTIZE = ("quantized_decomposed.quantize_per_tensor.default", "quantized_decomposed.quantize_per_channel.default")
# Ops that move values without computing new ones: a quantizer may give them their input's
# quantization (XNNPACK's and LiteRT's propagate_annotation).
_PASS_THROUGH = frozenset(
    f"aten.{op}" for op in (
        "permute.default", "transpose.int", "view.default", "reshape.default", "squeeze.dim", "unsqueeze.default",
        "slice.Tensor", "flatten.using_ints", "select.int", "split.Tensor", "chunk.default", "clone.default",
        "contiguous.default", "mean.dim", "mean.default", "relu.default", "hardtanh.default", "max_pool2d.default",
        "adaptive_avg_pool2d.default", "dropout.default",
    )
) | {"<built-in function getitem>"}
_DEQUANTIZE = ("quantized_decomposed.dequantize_per_tensor.default", "quantized_decomposed.dequantize_per_channel.default")


def target_quantizer(target: str, recipe: QuantRecipe):
    """The PT2E quantizer that quantizes what ``target``'s INT8 export of ``recipe`` quantizes."""
    if target not in SIMULATION_QUANTIZERS:
        raise RecipeError(f"no INT8 simulation for target '{target}' (choose from {', '.join(sorted(SIMULATION_QUANTIZERS))})")
    runtime = get_target(target)
    check_schemes(recipe, target, runtime.schemes, runtime.activation_bits)
    module, name = SIMULATION_QUANTIZERS[target].split(":")
    return getattr(importlib.import_module(module), name)(recipe)


def check_simulated(recipe: QuantRecipe) -> None:
    """Per-layer simulation covers static recipes whose INT8 ops all lie in the named layers."""
    if recipe.scheme != "static":
        raise RecipeError(f"per-layer sensitivity and mixed precision work on static recipes; '{recipe.name}' is {recipe.scheme}")
    beyond = sorted(op.value for op in recipe.quantized_ops - _LAYER_OPS)
    if beyond or not recipe.quantizes("encoder"):
        raise RecipeError(f"recipe '{recipe.name}' quantizes {', '.join(beyond) or 'no encoder op'}; per-layer choices "
                          f"cover the encoder's conv and linear layers only (use static-conv-linear)")


def _target_name(node: torch.fx.Node) -> str:
    return str(node.target) if node.op == "call_function" else ""


class SimulatedEncoder:
    """The deploy-form encoder, PT2E-quantized once by ``target``'s quantizer; :meth:`variant`
    gives it with any layers float."""

    def __init__(self, model: EfficientSam, img_size: int, recipe: QuantRecipe, target: str, calibration: ImageSource) -> None:
        check_simulated(recipe)
        self.target = target
        self.layers = quantizable_layers(model.config)
        graph = deploy_graph(model, img_size, "encoder")
        batches, total = calibration_batches(model, calibration, img_size, "encoder")
        every_layer = dataclasses.replace(recipe, layers=())
        self.quantized = quantize_pt2e(graph, graph.example_inputs(), target_quantizer(target, every_layer), batches,
                                       fold_quantize=False, total=total, description=f"calibrating ({target})")
        self.float = graph
        self._compute = self._compute_nodes()

    def _compute_nodes(self) -> dict[str, list[str]]:
        """Per layer, the names of its quantized conv/linear nodes (an unquantized layer is an error:
        the simulation would claim INT8 drift for a layer the target leaves float)."""
        found: dict[str, list[str]] = {layer: [] for layer in self.layers}
        for node in self.quantized.graph.nodes:
            if _target_name(node) not in _COMPUTE or not _is_quantized(node):
                continue
            for layer in layers_of_scopes(node_scopes(node), self.layers):
                found[layer].append(node.name)
        missing = [layer for layer, nodes in found.items() if not nodes]
        if missing:
            raise RecipeError(f"the {self.target} quantizer left these layers float: {', '.join(missing)}")
        return found

    def variant(self, float_layers: Iterable[str] = (), a16_layers: Iterable[str] = ()) -> torch.nn.Module:
        """The INT8 encoder with ``float_layers`` float (all layers float = the fp32 graph) and
        ``a16_layers`` with 16-bit activations (the int8 ranges, on a symmetric int16 grid)."""
        float_layers, a16_layers = set(float_layers), set(a16_layers)
        unknown = (float_layers | a16_layers) - set(self.layers)
        if unknown:
            raise RecipeError(f"unknown layers: {', '.join(sorted(unknown))}")
        if float_layers == set(self.layers):
            return self.float
        module = copy.deepcopy(self.quantized)
        nodes = {node.name: node for node in module.graph.nodes}
        for layer in float_layers:
            for name in self._compute[layer]:
                _bypass(nodes[name])
        for layer in a16_layers - float_layers:
            for name in self._compute[layer]:
                _widen(nodes[name])
        module.graph.eliminate_dead_code()
        module.recompile()
        return module


def _is_quantized(node: torch.fx.Node) -> bool:
    return any(_target_name(arg) in _DEQUANTIZE for arg in node.all_input_nodes)


def _qparams(node: torch.fx.Node) -> tuple:
    return tuple(node.args[1:])


def _input_pairs(node: torch.fx.Node) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """(quantize, dequantize) of every input of ``node`` that is dequantize(quantize(x))."""
    return [(arg.args[0], arg) for arg in node.all_input_nodes
            if _target_name(arg) in _DEQUANTIZE and _target_name(arg.args[0]) in _QUANTIZE]


def _output_pairs(node: torch.fx.Node) -> list[tuple[torch.fx.Node, torch.fx.Node]]:
    """(quantize, dequantize) pairs that round ``node``'s output, including those a quantizer
    propagated from its output through views (XNNPACK and LiteRT share the output's
    quantization with the permutes and reshapes after it)."""
    output_params = None
    pairs: list[tuple[torch.fx.Node, torch.fx.Node]] = []
    stack = [node]
    while stack:
        current = stack.pop()
        for user in current.users:
            if _target_name(user) in _QUANTIZE and output_params in (None, _qparams(user)):
                output_params = _qparams(user)
                for dequantize in user.users:
                    if _target_name(dequantize) in _DEQUANTIZE:
                        pairs.append((user, dequantize))
                        stack.append(dequantize)
            elif current is not node and _target_name(user) in _PASS_THROUGH:
                stack.append(user)
    return pairs


def _bypass(node: torch.fx.Node) -> None:
    """Feed ``node`` its float inputs and weights and hand its float output on: every
    dequantize(quantize(x)) around it becomes x."""
    for quantize, dequantize in _input_pairs(node):
        node.replace_input_with(dequantize, quantize.args[0])
    for quantize, dequantize in _output_pairs(node):
        dequantize.replace_all_uses_with(quantize.args[0])


def _widen(node: torch.fx.Node) -> None:
    """Round ``node``'s activations (per-tensor inputs, and its output where quantized) on a
    symmetric int16 grid over the calibrated int8 range; per-channel weights stay int8."""
    for quantize, dequantize in [*_input_pairs(node), *_output_pairs(node)]:
        if _target_name(quantize) != _QUANTIZE[0]:
            continue  # a per-channel weight
        scale, zero_point, quant_min, quant_max = quantize.args[1:5]
        bound = max(abs((quant_min - zero_point) * scale), abs((quant_max - zero_point) * scale))
        wide = (bound / (2**15 - 1), 0, -(2**15 - 1), 2**15 - 1, torch.int16)
        quantize.args = (quantize.args[0], *wide)
        dequantize.args = (dequantize.args[0], *wide)
