"""Per-layer drift, once for every runtime: which layers of a quantized or fp16 graph lose SQNR.

A runtime adapter (``onnx/layers.py``, ``tflite/layers.py``, ``core/pt2e_layer_drift.py``) runs
the reference and the test graph on the same inputs, hands each compared layer's two outputs to
:class:`SqnrSums`, and describes the graph: the :class:`Layer` rows to report and, for every
value of the graph, the values its producer consumed. :func:`layer_rows` does the rest.

Per layer the row holds the SQNR of its output against the reference (the error accumulated up
to there) and the *drop*: how many dB worse that output is than the worst of what enters the
layer. What enters is measured where it is compared, else at the nearest compared values
upstream (through reshapes, transposes and other layers not compared); graph inputs and
constants are exact. A large drop marks a layer whose own arithmetic adds error (int8 weights or
activations: candidates to keep float) or that amplifies the error it receives: a sharp softmax
turns a small absolute error in its logits into a large relative one, so read softmax rows as
"where the error shows".
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from edge_sam.eval.metrics import energy_ratio_db, signal_and_noise


class _RowRequired(TypedDict):
    node: str  # the layer: a node name, a module path, or a file
    op_type: str  # the op as the graph names it ("Conv", "FULLY_CONNECTED", "linear (int8)", "program")
    output: str  # the tensor compared
    sqnr_db: float  # its SQNR against the reference
    input_sqnr_db: float  # the worst SQNR of what enters the layer
    drop_db: float  # input_sqnr_db - sqnr_db


class LayerRow(_RowRequired, total=False):
    """One row of the per-layer table (JSON as it is: the report writes it into report.json)."""

    quantized: bool  # whether the layer runs int8 (where the adapter knows)
    module: str  # the PyTorch module the node came from (where the graph records it)


@dataclass(frozen=True)
class Layer:
    """A layer to report: its compared output value and the values that enter it."""

    node: str
    op_type: str
    output: Hashable
    inputs: tuple[Hashable, ...]
    quantized: bool | None = None  # None: the adapter cannot tell
    module: str | None = None


class SqnrSums:
    """Signal and noise energy per compared value, summed over every input the graphs ran on
    (one SQNR over all images, not a mean of per-image dB)."""

    def __init__(self) -> None:
        self.signal: dict[Hashable, float] = {}
        self.noise: dict[Hashable, float] = {}
        self.incomparable: set[Hashable] = set()

    def add(self, value: Hashable, reference: np.ndarray, test: np.ndarray) -> None:
        """One input's reference and test tensor of ``value``. Tensors of different sizes are two
        different functions (the converters ended the layer differently): the value is dropped."""
        if value in self.incomparable:
            return
        if np.size(reference) != np.size(test):
            self.incomparable.add(value)
            return
        signal, noise = signal_and_noise(np.ravel(reference), np.ravel(test))
        self.signal[value] = self.signal.get(value, 0.0) + signal
        self.noise[value] = self.noise.get(value, 0.0) + noise

    def sqnr_db(self) -> dict[Hashable, float]:
        return {
            value: energy_ratio_db(self.signal[value], self.noise[value])
            for value in self.signal
            if value not in self.incomparable
        }


def upstream_sqnr(sqnr: Mapping[Hashable, float], producer_inputs: Mapping[Hashable, Iterable[Hashable]]):
    """``upstream(value)``: the SQNR of a value where it is compared, else the worst SQNR of the
    nearest compared values upstream of it; values no op produces (inputs, constants) are exact.

    ``producer_inputs`` maps a value to the values its producing op consumed.
    """
    memo: dict[Hashable, float] = {}

    def upstream(value: Hashable) -> float:
        if value in sqnr:
            return sqnr[value]
        if value not in memo:
            memo[value] = math.inf  # guards against revisits (a valid graph has no cycle)
            memo[value] = min((upstream(i) for i in producer_inputs.get(value, ())), default=math.inf)
        return memo[value]

    return upstream


def layer_rows(
    layers: Iterable[Layer], sqnr: Mapping[Hashable, float], producer_inputs: Mapping[Hashable, Iterable[Hashable]]
) -> list[LayerRow]:
    """The table rows of ``layers`` (in their order) whose output was compared."""
    upstream = upstream_sqnr(sqnr, producer_inputs)
    rows = []
    for layer in layers:
        if layer.output not in sqnr:
            continue
        out = sqnr[layer.output]
        worst_input = min((upstream(value) for value in layer.inputs), default=math.inf)
        drop = 0.0 if math.isinf(out) and math.isinf(worst_input) else worst_input - out
        row = LayerRow(node=layer.node, op_type=layer.op_type, output=str(layer.output), sqnr_db=out,
                       input_sqnr_db=worst_input, drop_db=drop)
        if layer.quantized is not None:
            row["quantized"] = layer.quantized
        if layer.module is not None:
            row["module"] = layer.module
        rows.append(row)
    return rows


# A group of compared tensors fetched in one run: 64 M elements (256 MB of float32). Adapters
# that must make every compared tensor a graph output (ONNX, LiteRT) run their graphs once per
# group, so the runtime's arena holds one group's tensors beside its own, not all of them (at
# 1024 px all of them took LiteRT's per-layer drift to 4.3 GB).
GROUP_ELEMENTS = 1 << 26


def element_groups(values: Sequence[Hashable], elements: Mapping[Hashable, int],
                   limit: int = GROUP_ELEMENTS) -> list[list[Hashable]]:
    """``values`` in order, cut into groups of at most ``limit`` elements (one value at least)."""
    groups: list[list[Hashable]] = [[]]
    size = 0
    for value in values:
        if groups[-1] and size + elements[value] > limit:
            groups.append([])
            size = 0
        groups[-1].append(value)
        size += elements[value]
    return groups
