"""Per-layer drift of a PT2E-quantized graph against its float export: which ops lose SQNR.

Target-neutral: any target whose INT8 path goes through :func:`~edge_sam.quantize.pt2e.quantize_pt2e`
(ExecuTorch, LiteRT) can rank its layers here, before any lowering. ``torch.export`` names the
nodes of one module the same way every time and ``prepare_pt2e``/``convert_pt2e`` keep those
names (they only insert observer and quantize/dequantize nodes), so the converted graph's
compute nodes are matched to the float graph's by name.

For each compared op we report the SQNR of its output against float (the error accumulated up
to there) and the *drop*: how many dB worse its output is than the worst of its inputs. At an
int8 op (one the quantizer annotated; its op_type says "(int8)") a large drop is error the op's
own quantized weights or activations add. At a float op it is amplification: a sharp softmax
turns a small absolute error in its logits into a large relative one in the attention weights.
Both graphs run in PyTorch (the converted one as simulated quantization), so this ranks layers;
the artifact's own end-to-end numbers come from running it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from tqdm import tqdm

# ops worth a row: weight layers, the attention matmuls, norms, activations, residual adds
COMPARED_TARGETS = frozenset(
    {
        "aten.conv2d.default", "aten.conv_transpose2d.input", "aten.linear.default", "aten.matmul.default",
        "aten.layer_norm.default", "aten.group_norm.default", "aten.gelu.default", "aten.softmax.int",
        "aten.add.Tensor", "aten.mul.Tensor",
    }
)
# Larger outputs are skipped: at 1024 an attention map is 3 x 4096 x 4096 (200 MB); its effect
# shows in the SQNR of the matmul that consumes it.
MAX_ELEMENTS = 1 << 22
_QUANTIZE = "quantized_decomposed.quantize_per_tensor.default"
_DEQUANTIZE = "quantized_decomposed.dequantize_per_tensor.default"


def _compared(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and str(node.target) in COMPARED_TARGETS


def _annotated(node: torch.fx.Node) -> bool:
    """Did the quantizer give this op quantized inputs (PT2E keeps its annotation in the meta)?"""
    annotation = node.meta.get("quantization_annotation")
    return annotation is not None and bool(annotation.input_qspec_map)


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / noise) if signal else -math.inf


class _Recorder(torch.fx.Interpreter):
    """Runs a graph and hands ``sink(name, tensor)`` the output of each node in ``taps``
    (recorded node name -> the compared op's name)."""

    def __init__(self, module: torch.fx.GraphModule, taps: dict[str, str], sink) -> None:
        super().__init__(module)
        self.taps, self.sink = taps, sink

    def run_node(self, node: torch.fx.Node):
        result = super().run_node(node)
        if node.name in self.taps:
            self.sink(self.taps[node.name], result)
        return result


def _output_taps(quantized: torch.fx.GraphModule, names: set[str]) -> dict[str, str]:
    """Where to read each compared op in the converted graph: after its own output
    quantize/dequantize pair when it has one, so an int8 op is charged its output rounding."""
    taps = {}
    for node in quantized.graph.nodes:
        if node.name not in names:
            continue
        tap = node
        users = list(node.users)
        if len(users) == 1 and str(users[0].target) == _QUANTIZE:
            dequantized = [u for u in users[0].users if str(u.target) == _DEQUANTIZE]
            tap = dequantized[0] if dequantized else node
        taps[tap.name] = node.name
    return taps


def compare_layers(
    reference: torch.fx.GraphModule,
    quantized: torch.fx.GraphModule,
    batches: Iterable[tuple[torch.Tensor, ...]],
    total: int | None = None,
) -> list[dict]:
    """Per-op SQNR (dB) and SQNR drop of ``quantized`` vs ``reference``, in graph order.

    ``reference`` is ``torch.export.export(module, ...).module()`` of the float module that
    ``quantized`` was converted from; rows have the keys the drift report prints
    (node, op_type, output, sqnr_db, input_sqnr_db, drop_db) plus ``quantized``.
    """
    quantized_names = {n.name for n in quantized.graph.nodes if _compared(n)}
    int8_names = {n.name for n in quantized.graph.nodes if _annotated(n)}
    nodes = [
        n for n in reference.graph.nodes
        if _compared(n) and n.name in quantized_names and n.meta["val"].numel() <= MAX_ELEMENTS
    ]
    names = {n.name for n in nodes}
    taps = _output_taps(quantized, names)
    signal = dict.fromkeys(names, 0.0)
    noise = dict.fromkeys(names, 0.0)
    with torch.no_grad():
        for batch in tqdm(batches, total=total, desc="per-layer drift", unit="img", leave=False):
            float_outputs: dict[str, torch.Tensor] = {}
            _Recorder(reference, {name: name for name in names}, float_outputs.__setitem__).run(*batch)

            def accumulate(name: str, value: torch.Tensor) -> None:
                ref = float_outputs.pop(name).double()
                signal[name] += float(torch.sum(ref * ref))
                noise[name] += float(torch.sum((ref - value.double()) ** 2))

            _Recorder(quantized, taps, accumulate).run(*batch)
    sqnr = {name: _sqnr_db(signal[name], noise[name]) for name in names}
    upstream = _upstream_sqnr(sqnr)
    rows = []
    for node in nodes:
        out = sqnr[node.name]
        worst_input = min((upstream(i) for i in node.all_input_nodes), default=math.inf)
        drop = 0.0 if math.isinf(out) and math.isinf(worst_input) else worst_input - out
        int8 = node.name in int8_names
        rows.append({"node": _source_name(node), "op_type": f"{str(node.target).split('.')[1]} ({'int8' if int8 else 'float'})",
                     "quantized": int8, "output": node.name, "sqnr_db": out, "input_sqnr_db": worst_input, "drop_db": drop})
    return rows


def _source_name(node: torch.fx.Node) -> str:
    """The module path the op came from (``encoder.blocks.3.mlp.fc2``), else the node name."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return node.name
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self__.", "") or node.name


def _upstream_sqnr(sqnr: dict[str, float]):
    """SQNR of a node's output, or of the nearest compared nodes upstream of it (through views,
    permutes and other uncompared ops); placeholders and constants are exact."""
    memo: dict[str, float] = {}

    def upstream(node: torch.fx.Node) -> float:
        if node.name in sqnr:
            return sqnr[node.name]
        if node.name not in memo:
            memo[node.name] = math.inf  # guards against revisits
            memo[node.name] = min((upstream(i) for i in node.all_input_nodes), default=math.inf)
        return memo[node.name]

    return upstream
