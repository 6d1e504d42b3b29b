"""The layers a per-layer recipe can choose for, and how each target finds them in its graph.

A layer is a module of the image encoder named as in the model (``model.named_modules()``):
``image_encoder.patch_embed``, per block ``image_encoder.blocks.N.attn.qkv``, ``.attn.proj``,
``.mlp.fc1``, ``.mlp.fc2``, and ``image_encoder.neck`` (both neck convs). Together they hold
every conv and linear op of the encoder, so a static conv/linear recipe with all of them float
is the fp32 encoder.

Exported graphs wrap the encoder (the deploy graph's ``encoder``, the official ONNX
interface's ``deploy_encoder.encoder``, Core ML's image-input wrapper), so a graph op belongs to
a layer when one of the module paths it was traced under ends with the layer's path inside the
encoder (``...blocks.3.attn.qkv``). PT2E graphs record those paths in ``nn_module_stack``, the
ONNX dynamo exporter in each node's ``pkg.torch.onnx.name_scopes``; both are read here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch

from edge_sam.modeling import EfficientSam, EfficientSamConfig
from edge_sam.quantize.recipes import QuantRecipe, RecipeError

ENCODER = "image_encoder"
BLOCK_LAYERS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")


def quantizable_layers(config: EfficientSamConfig) -> tuple[str, ...]:
    """Every layer a recipe can name, in the order data flows through them."""
    blocks = [f"{ENCODER}.blocks.{i}.{part}" for i in range(config.encoder_depth) for part in BLOCK_LAYERS]
    return (f"{ENCODER}.patch_embed", *blocks, f"{ENCODER}.neck")


def weighted_modules_per_layer(config: EfficientSamConfig) -> dict[str, int]:
    """Conv and linear modules in each layer, in data-flow order (the neck has two). A runtime that
    profiles one GEMM operator per such module (XNNPACK) is read back to layers by counting them."""
    with torch.device("meta"):
        encoder = EfficientSam(config).image_encoder
    weighted = (torch.nn.Linear, torch.nn.Conv2d)
    return {layer: sum(isinstance(m, weighted) for m in encoder.get_submodule(_relative(layer)).modules())
            for layer in quantizable_layers(config)}


def check_layers(recipe: QuantRecipe, model: EfficientSam) -> None:
    """One RecipeError naming every layer the recipe chooses for that the model does not have."""
    known = set(quantizable_layers(model.config))
    unknown = [layer for layer, _ in recipe.layers if layer not in known]
    if unknown:
        depth = model.config.encoder_depth
        raise RecipeError(
            f"recipe '{recipe.name}' names layers this model does not have: {', '.join(unknown)} (it has "
            f"{ENCODER}.patch_embed, {ENCODER}.blocks.0..{depth - 1}.{{{','.join(BLOCK_LAYERS)}}}, {ENCODER}.neck)"
        )


def _relative(layer: str) -> str:
    if not layer.startswith(f"{ENCODER}."):
        raise RecipeError(f"layer '{layer}' is not in the image encoder ({ENCODER}.*)")
    return layer[len(ENCODER) + 1:]


def scope_in_layer(scope: str, layer: str) -> bool:
    """Is ``scope`` (a module path in some graph that wraps the encoder) inside ``layer``?
    ``encoder.blocks.1.attn.qkv`` is in ``image_encoder.blocks.1.attn.qkv``; ``...blocks.11...`` is not."""
    return f".{_relative(layer)}." in f".{scope}."


def layers_of_scopes(scopes: Iterable[str], layers: Iterable[str]) -> set[str]:
    """The layers any of ``scopes`` (the module paths one op was traced under) lies in."""
    scopes = list(scopes)
    return {layer for layer in layers if any(scope_in_layer(scope, layer) for scope in scopes)}


def node_scopes(node: torch.fx.Node) -> list[str]:
    """The module paths a PT2E graph node was traced under (``encoder.blocks.0.attn.qkv``, ...)."""
    stack = node.meta.get("nn_module_stack") or {}
    return [path.replace("L['self'].", "").replace("L__self__.", "") for path, _ in stack.values()]


def float_layer_filter(recipe: QuantRecipe | None) -> Callable[[torch.fx.Node], bool] | None:
    """A PT2E quantizer node filter that refuses the ops of the recipe's float layers (None when
    it keeps none float). XNNPACK's ``set_filter_function``, LiteRT's and Core ML's annotators
    take it alike."""
    floats = recipe.float_layers if recipe is not None else ()
    if not floats:
        return None
    in_float_layer = layer_filter(floats)
    return lambda node: not in_float_layer(node)


def layer_filter(layers: tuple[str, ...]) -> Callable[[torch.fx.Node], bool]:
    """A PT2E node filter that accepts exactly the ops traced inside ``layers``."""
    return lambda node: bool(layers_of_scopes(node_scopes(node), layers))


def per_width_quantizer(recipe: QuantRecipe, make: Callable[[QuantRecipe, Callable[[torch.fx.Node], bool] | None], Any]):
    """A target's PT2E quantizer for ``recipe``, its ``a16`` layers with 16-bit activations.

    ``make(recipe, keep)`` builds the target's quantizer for one activation width, annotating
    only the nodes ``keep`` accepts (None: all). Without a16 layers that is the whole answer; with
    them, one quantizer for the int8 layers and one for the a16 layers are composed. The nodes of a
    pattern that lie outside every module (the graph input the patch embedding reads) pass both
    filters, or the layer reading them would be left unannotated.
    """
    if not recipe.a16_layers:
        return make(recipe, float_layer_filter(recipe))
    from torchao.quantization.pt2e.quantizer import ComposableQuantizer

    in_a16_layer = layer_filter(recipe.a16_layers)

    def wide(node: torch.fx.Node) -> bool:
        return in_a16_layer(node) or not node_scopes(node)

    narrow = combine_filters(float_layer_filter(recipe), lambda node: not in_a16_layer(node))
    return ComposableQuantizer([make(recipe, narrow), make(dataclasses.replace(recipe, activation_bits=16), wide)])


def combine_filters(*filters: Callable[[torch.fx.Node], bool] | None) -> Callable[[torch.fx.Node], bool] | None:
    """True only where every given filter is (None filters are left out; None if all are)."""
    given = [f for f in filters if f is not None]
    if not given:
        return None
    return lambda node: all(f(node) for f in given)


def layer_flops(model: EfficientSam, img_size: int) -> tuple[dict[str, int], int]:
    """Multiply-add FLOPs of each layer in the deploy-form encoder and of the whole encoder
    (attention matmuls included), counted by ``torch.utils.flop_counter`` on one forward pass.

    A layer's share of the total is what INT8 on it can act on; it is not a timing.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from edge_sam.graph_contract import deploy_graph

    graph = deploy_graph(model, img_size, "encoder")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        graph(*graph.example_inputs())
    counts = counter.get_flop_counts()
    per_layer = {}
    for layer in quantizable_layers(model.config):
        modules = [name for name in counts if scope_in_layer(name, layer)]
        outermost = min(modules, key=len) if modules else None
        per_layer[layer] = int(sum(counts[outermost].values())) if outermost else 0
    return per_layer, int(counter.get_total_flops())
