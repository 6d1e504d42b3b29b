"""The fake-quantized encoder QAT trains, and its learned quantization parameters as data.

QAT inserts the same quantize/dequantize placement a target's INT8 export uses, but as
fake-quantize modules that let gradients through (PT2E ``prepare_qat_pt2e``). The quantizer is
ExecuTorch's ``XNNPACKQuantizer`` restricted to the recipe (its ``recipe_quantizer`` in QAT
mode): symmetric per-channel int8 weights and per-tensor int8 activations on the recipe's conv
and linear layers, the portable scheme ONNX Runtime's QDQ, LiteRT and Core ML W8A8 also use.
Activation ranges are moving averages of what each fake-quantize module sees during training
(``FusedMovingAvgObsFakeQuantize``); they are the "learned" parameters this module writes out
and reads back.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from edge_sam.errors import EdgeSamError
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.layers import layers_of_scopes, node_scopes, quantizable_layers
from edge_sam.quantize.recipes import QuantRecipe, RecipeError

from edge_sam.graph_contract import deploy_graph

# The deploy graph wraps the image encoder as ``encoder``; the model names it ``image_encoder``.
GRAPH_PREFIX = "encoder."
MODEL_PREFIX = "image_encoder."
_MAX_BATCH = 4096
# The target whose quantizer QAT simulates (its export takes the learned ranges as they are).
QAT_TARGET = "executorch"


class QatPrepareError(EdgeSamError, ValueError):
    """A graph the QAT quantizer cannot prepare (export or annotation failed, or nothing to quantize)."""


def check_qat_recipe(recipe: QuantRecipe) -> None:
    """One RecipeError for a recipe QAT cannot simulate: QAT finetunes the encoder with
    fake-quantized int8 weights (and activations for static recipes)."""
    if recipe.scheme not in ("static", "dynamic"):
        raise RecipeError(f"recipe '{recipe.name}' is {recipe.scheme}: QAT simulates static and dynamic int8 recipes "
                          "(weight-only codecs need no finetuning: export them directly)")
    if recipe.quantizes("decoder"):
        raise RecipeError(f"recipe '{recipe.name}' quantizes the decoder; QAT finetunes the image encoder only "
                          "(use an encoder-only recipe such as static-conv-linear)")
    if not recipe.quantizes("encoder"):
        raise RecipeError(f"recipe '{recipe.name}' leaves the encoder float: there is nothing for QAT to train")


def qat_quantization_config(config, recipe: QuantRecipe):
    """XNNPACK's QAT ``QuantizationConfig`` made to match what an export computes.

    Activation fake quantizers take the recipe's symmetry (their ranges are calibrated, then
    frozen, by :func:`calibrate_activation_ranges`; the recipe's calibration method does not
    apply). Weight fake quantizers track each step's exact per-channel min / max (a moving
    average constant of 1) instead of XNNPACK's slow moving average, because every export
    quantizes the final weights with their exact ranges.
    """
    import dataclasses

    from torchao.quantization.pt2e.fake_quantize import FusedMovingAvgObsFakeQuantize
    from torchao.quantization.pt2e.observer import MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

    activation = dataclasses.replace(
        config.input_activation,
        qscheme=torch.per_tensor_symmetric if recipe.symmetric_activations else torch.per_tensor_affine,
    )
    per_channel = config.weight.qscheme == torch.per_channel_symmetric
    weight = dataclasses.replace(config.weight, observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
        observer=MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver,
        averaging_constant=1, eps=2**-12,
    ))
    return dataclasses.replace(config, input_activation=activation, output_activation=activation, weight=weight)


def qat_quantizer(target, recipe: QuantRecipe):
    """``target``'s PT2E quantizer for ``recipe`` with fake-quantize modules (QAT mode), from
    :meth:`~edge_sam.targets.core.target.Target.qat_quantizer`: the target decides what QAT
    simulates (ExecuTorch's XNNPACK quantizer, :data:`QAT_TARGET`), this library imports no target."""
    check_qat_recipe(recipe)
    try:
        quantizer = target.qat_quantizer(recipe)
    except RecipeError as exc:
        raise RecipeError(f"QAT cannot take this recipe: {exc}") from None
    if quantizer is None:
        raise RecipeError(f"target {target.name} has no QAT quantizer (QAT simulates {QAT_TARGET}'s)")
    return quantizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def prepare_qat_encoder(model: EfficientSam, recipe: QuantRecipe, img_size: int, target) -> torch.fx.GraphModule:
    """The deploy-form encoder of ``model`` with the recipe's fake quantization (``target``'s QAT
    quantizer) inserted, in train mode, for any batch size (a training batch and the batch-1
    export trace the same graph)."""
    from torchao.quantization.pt2e import move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    quantizer = qat_quantizer(target, recipe)
    graph = deploy_graph(model, img_size, "encoder")
    example = (torch.randn(2, 3, img_size, img_size),)
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    try:
        exported = torch.export.export(graph, example, dynamic_shapes=({0: batch},)).module()
        prepared = prepare_qat_pt2e(exported, quantizer)
    except Exception as exc:  # noqa: BLE001 - export/annotation failures of any kind are one user-facing line
        raise QatPrepareError(f"QAT cannot prepare the encoder graph with recipe '{recipe.name}': {_first_line(exc)}") from None
    if not fake_quantizers(prepared):
        raise QatPrepareError(f"recipe '{recipe.name}' annotated nothing in the encoder graph: there is nothing to train")
    move_exported_model_to_train(prepared)
    return prepared


def fake_quantizers(prepared: torch.fx.GraphModule) -> dict[str, torch.nn.Module]:
    """The fake-quantize modules of a QAT-prepared graph, by module name, in graph order."""
    from torchao.quantization.pt2e.fake_quantize import FakeQuantizeBase

    # By name from the graph: a shared quantizer (one module under two names) counts under each.
    order = dict.fromkeys(node.target for node in prepared.graph.nodes if node.op == "call_module")
    modules = {name: prepared.get_submodule(name) for name in order}
    return {name: module for name, module in modules.items() if isinstance(module, FakeQuantizeBase)}


def activation_quantizers(prepared: torch.fx.GraphModule) -> dict[str, torch.nn.Module]:
    """The fake quantizers of activations (not of weights: those read a parameter)."""
    readers = {node.target: node.args[0] for node in prepared.graph.nodes if node.op == "call_module"}
    return {name: module for name, module in fake_quantizers(prepared).items()
            if not (isinstance(readers[name], torch.fx.Node) and readers[name].op == "get_attr")}


def calibrate_activation_ranges(prepared: torch.fx.GraphModule, images: torch.Tensor) -> None:
    """Set every activation range to the min / max over ``images`` (one batch: the first
    observation of a moving-average observer is exact), as a minmax PTQ calibration would."""
    with torch.no_grad():
        prepared(images)


def freeze_activation_ranges(prepared: torch.fx.GraphModule, frozen: bool = True) -> None:
    """Stop (or restart) the activation ranges moving; weight ranges keep following the weights."""
    for module in activation_quantizers(prepared).values():
        module.enable_observer(not frozen)


def fake_quantize_in_fp32(prepared: torch.fx.GraphModule) -> None:
    """Feed every fake quantizer fp32: the fused fake-quantize kernel takes no bf16, which is what
    reaches it under bf16 autocast. A pre-hook changes neither the graph nor the state dict, so the
    recorded parameters and the export see the same graph."""
    for module in fake_quantizers(prepared).values():
        module.register_forward_pre_hook(lambda _module, args: (args[0].float(), *args[1:]))


def encoder_weights(prepared: torch.fx.GraphModule) -> dict[str, torch.Tensor]:
    """The trained encoder parameters under their model names (``image_encoder.*``)."""
    return {
        MODEL_PREFIX + name[len(GRAPH_PREFIX):]: param.detach()
        for name, param in prepared.named_parameters()
        if name.startswith(GRAPH_PREFIX)
    }


def with_encoder_weights(model: EfficientSam, prepared: torch.fx.GraphModule) -> EfficientSam:
    """A copy of ``model`` (on the CPU) whose image encoder holds the QAT graph's weights; every
    other weight (position table, prompt encoder, decoder) is the original's."""
    trained = copy.deepcopy(model).cpu()
    state = trained.state_dict()
    weights = encoder_weights(prepared)
    unknown = sorted(set(weights) - set(state))
    if unknown:
        raise EdgeSamError(f"the QAT graph has weights the model does not: {', '.join(unknown[:5])}")
    state.update({name: value.to("cpu", torch.float32) for name, value in weights.items()})
    trained.load_state_dict(state)
    return trained.eval()


def quantizer_place(prepared: torch.fx.GraphModule, name: str, layers: tuple[str, ...]) -> dict[str, Any]:
    """Where one fake-quantize module sits: what it reads, which ops use it, and their layer."""
    node = next(n for n in prepared.graph.nodes if n.op == "call_module" and n.target == name)
    source = node.args[0]
    users = list(node.users)
    is_weight = isinstance(source, torch.fx.Node) and source.op == "get_attr"
    scopes = [s for user in users for s in node_scopes(user)] + (node_scopes(source) if isinstance(source, torch.fx.Node) else [])
    return {
        "kind": "weight" if is_weight else "activation",
        "input": str(source.target if is_weight else getattr(source, "name", source)),
        "consumers": [user.name for user in users],
        "layers": sorted(layers_of_scopes(scopes, layers)),
    }


def _as_list(tensor: torch.Tensor) -> list[float]:
    return [float(v) for v in tensor.detach().cpu().reshape(-1).tolist()]


def learned_parameters(prepared: torch.fx.GraphModule, model: EfficientSam) -> list[dict[str, Any]]:
    """Per fake-quantize module: its place in the graph, scheme, scale / zero point (per channel
    for weights) and the running min / max its scale was computed from (what a converter needs)."""
    layers = quantizable_layers(model.config)
    records = []
    for name, module in fake_quantizers(prepared).items():
        scale, zero_point = module.calculate_qparams()
        observer = module.activation_post_process
        record = {
            "module": name,
            **quantizer_place(prepared, name, layers),
            "qscheme": str(module.qscheme).replace("torch.", ""),
            "dtype": str(module.dtype).replace("torch.", ""),
            "quant_min": int(module.quant_min),
            "quant_max": int(module.quant_max),
            "ch_axis": int(module.ch_axis) if module.is_per_channel else None,
            "scale": _as_list(scale),
            "zero_point": [int(v) for v in zero_point.reshape(-1).tolist()],
            "min_val": _as_list(observer.min_val),
            "max_val": _as_list(observer.max_val),
        }
        records.append(record)
    return records


def restore_parameters(prepared: torch.fx.GraphModule, records: list[dict[str, Any]], model: EfficientSam) -> None:
    """Put recorded ranges back into a freshly prepared graph of the same encoder and recipe,
    and freeze them; refuses records written for a different graph."""
    modules = fake_quantizers(prepared)
    layers = quantizable_layers(model.config)
    if [r["module"] for r in records] != list(modules):
        raise EdgeSamError(f"the recorded QAT parameters ({len(records)} fake quantizers) do not match this graph "
                           f"({len(modules)}): it was prepared with a different recipe or model")
    for record in records:
        placed = quantizer_place(prepared, record["module"], layers)
        if any(placed[key] != record[key] for key in ("kind", "input", "consumers")):
            raise EdgeSamError(f"QAT parameter {record['module']} was recorded at {record['input']} -> {record['consumers']}, "
                               f"but this graph has it at {placed['input']} -> {placed['consumers']}")
        observer = modules[record["module"]].activation_post_process
        for key in ("min_val", "max_val"):
            values = torch.tensor(record[key], dtype=torch.float32)
            setattr(observer, key, values if record["ch_axis"] is not None else values.reshape(()))
    for module in modules.values():
        module.disable_observer()


def converted_encoder(prepared: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """The QAT graph with its fake quantizers replaced by quantize/dequantize pairs at their
    learned ranges (PT2E ``convert_pt2e``), in eval mode: what a PT2E target lowers."""
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    prepared = copy.deepcopy(prepared).cpu()
    move_exported_model_to_eval(prepared)
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    return converted


def check_recipe_matches(qat_recipe: dict[str, Any], recipe: QuantRecipe) -> bool:
    """Whether an export's recipe quantizes what QAT simulated (same ops, layers, scheme, symmetry)."""
    keys = ("scheme", "quantized_ops", "components", "per_channel_weights", "symmetric_activations", "layers")
    described = recipe.describe()
    return all(qat_recipe.get(key) == described.get(key) for key in keys)


def learned_encoder(model: EfficientSam, qat, recipe: QuantRecipe, img_size: int, target) -> torch.fx.GraphModule:
    """The INT8 encoder with the ranges QAT learned (no calibration): ``model`` (the QAT weights)
    prepared exactly as in training, the recorded ranges put back, then converted. For the
    target whose quantizer QAT simulated (ExecuTorch / XNNPACK)."""
    from edge_sam.checkpoint import state_dict_sha256

    if state_dict_sha256(model) != qat.record["weights"]["state_dict_sha256"]:
        raise EdgeSamError(f"the model is not the one saved in {qat.path}: learned QAT ranges apply to its own weights")
    prepared = prepare_qat_encoder(model, recipe, img_size, target)
    restore_parameters(prepared, qat.parameters, model)
    return converted_encoder(prepared)
