"""Per-layer drift of a PT2E-quantized graph against its float export: the PT2E adapter of
:mod:`edge_sam.targets.core.layer_drift`.

Target-neutral: any target whose INT8 path goes through :func:`~edge_sam.quantize.pt2e.quantize_pt2e`
(ExecuTorch, AOTInductor, LiteRT) can rank its layers here, before any lowering. ``torch.export``
names the nodes of one module the same way every time and ``prepare_pt2e``/``convert_pt2e`` keep
those names (they only insert observer and quantize/dequantize nodes), so the converted graph's
compute nodes are matched to the float graph's by name, and the upstream walk follows the float
graph.

An op is int8 where the quantizer annotated it (its op_type says "(int8)"): there a large drop
is error the op's own quantized weights or activations add; at a float op it is amplification.
Both graphs run in PyTorch (the converted one as simulated quantization), so this ranks layers;
:func:`program_row` puts the artifact itself beside the simulation.

The same comparison serves a float graph computed in a lower precision by autocast (``autocast=``
of :func:`compare_layers`): the test run is the float graph itself under CPU autocast, and an op's
type names the dtype its output came out in ("linear (bf16)").

:func:`requantized_encoder_drift` is the whole per-layer tool of a PT2E INT8 artifact: the encoder
re-quantized exactly as its export did (recipe and calibration images from the manifest, the
target's own quantizer), its rows, and the program row.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge_sam.graph_contract import deploy_graph, encoder_input
from edge_sam.image_sources import ImageSource, recorded_source
from edge_sam.modeling import EfficientSam
from edge_sam.quantize.recipe_file import recipe_from_manifest
from edge_sam.quantize.recipes import QuantRecipe
from edge_sam.targets.core.artifact_runner import DeployFormRunner
from edge_sam.targets.core.layer_drift import Layer, LayerRow, SqnrSums, layer_rows
from edge_sam.targets.core.manifest import Manifest

# A target's PT2E quantizer adapter: (model, deploy graph, recipe, calibration, img_size, role) -> converted graph.
QuantizedGraph = Callable[[EfficientSam, torch.nn.Module, QuantRecipe, ImageSource | None, int, str], torch.fx.GraphModule]

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
_AHEAD = 4  # float outputs the float run may hold ready before the quantized run takes them
_QUANTIZE = "quantized_decomposed.quantize_per_tensor.default"
_DEQUANTIZE = "quantized_decomposed.dequantize_per_tensor.default"


def _compared(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and str(node.target) in COMPARED_TARGETS


def _annotated(node: torch.fx.Node) -> bool:
    """Did the quantizer give this op quantized inputs (PT2E keeps its annotation in the meta)?"""
    annotation = node.meta.get("quantization_annotation")
    return annotation is not None and bool(annotation.input_qspec_map)


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


class _ReferenceStream:
    """The float graph run in a thread beside the quantized one, handing over each compared
    output as it is computed; a bounded queue holds it at most a few ops ahead. Holding every
    compared output of a whole float run instead took 2.6 GB at 1024 px."""

    _END = object()

    def __init__(self, reference: torch.fx.GraphModule, names: set[str], batch: tuple[torch.Tensor, ...]) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=_AHEAD)
        self._waiting: dict[str, torch.Tensor] = {}  # produced before the quantized run asked for it
        self._ended, self._error = False, None
        self._thread = threading.Thread(target=self._run, args=(reference, names, batch), daemon=True)
        self._thread.start()

    def _run(self, reference, names, batch) -> None:
        try:
            with torch.no_grad():  # grad mode is per thread
                _Recorder(reference, {name: name for name in names}, lambda n, v: self._queue.put((n, v))).run(*batch)
            self._queue.put((self._END, None))
        except BaseException as exc:  # re-raised in the caller's thread by finish()
            self._queue.put((self._END, exc))

    def take(self, name: str) -> torch.Tensor:
        """The float output of ``name``, waiting for the float run to reach it."""
        while name not in self._waiting:
            if self._ended:
                raise RuntimeError(f"the float graph produced no output {name!r}")
            self._receive()
        return self._waiting.pop(name)

    def finish(self) -> None:
        """Let the float run end (draining what it still hands over) and raise its error, if any."""
        while not self._ended:
            self._receive()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _receive(self) -> None:
        produced, value = self._queue.get()
        if produced is self._END:
            self._ended, self._error = True, value
        else:
            self._waiting[produced] = value


_DTYPE_NAMES = {torch.float32: "float", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _compare_in_step(reference, test, names: set[str], taps: dict[str, str], batch, sums: SqnrSums,
                     dtypes: dict[str, torch.dtype], autocast: torch.dtype | None) -> None:
    """One input through both graphs at once, each compared output freed as soon as it is summed
    (and the dtype the test run gave it noted in ``dtypes``). Autocast is per thread: the
    reference, in its own thread, stays float32."""

    def add(name: str, value: torch.Tensor) -> None:
        dtypes[name] = value.dtype
        sums.add(name, stream.take(name).numpy(), value.float().numpy())

    stream = _ReferenceStream(reference, names, batch)
    lower = torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext()
    try:
        with lower:
            _Recorder(test, taps, add).run(*batch)
    finally:
        stream.finish()


def compare_layers(
    reference: torch.fx.GraphModule,
    quantized: torch.fx.GraphModule,
    batches: Iterable[tuple[torch.Tensor, ...]],
    total: int | None = None,
    autocast: torch.dtype | None = None,
) -> list[LayerRow]:
    """Per-op SQNR (dB) and SQNR drop of ``quantized`` vs ``reference``, in graph order.

    ``reference`` is ``torch.export.export(module, ...).module()`` of the float module that
    ``quantized`` was converted from; rows carry ``quantized`` (whether the op is int8).
    ``autocast``: ``quantized`` runs under CPU autocast to that dtype (pass the float graph
    itself to rank the layers of a bf16 computation); an op not int8 is labelled with the dtype
    its output came out in.
    """
    quantized_names = {n.name for n in quantized.graph.nodes if _compared(n)}
    int8_names = {n.name for n in quantized.graph.nodes if _annotated(n)}
    nodes = [
        n for n in reference.graph.nodes
        if _compared(n) and n.name in quantized_names and n.meta["val"].numel() <= MAX_ELEMENTS
    ]
    names = {n.name for n in nodes}
    taps = _output_taps(quantized, names)
    sums, dtypes = SqnrSums(), {}
    with torch.no_grad():
        for batch in tqdm(batches, total=total, desc="per-layer drift", unit="img", leave=False):
            _compare_in_step(reference, quantized, names, taps, batch, sums, dtypes, autocast)
    layers = []
    for node in nodes:
        int8 = node.name in int8_names
        op = str(node.target).split(".")[1]
        arithmetic = "int8" if int8 else _DTYPE_NAMES.get(dtypes.get(node.name, torch.float32), "float")
        layers.append(Layer(_source_name(node), f"{op} ({arithmetic})", node.name,
                            tuple(i.name for i in node.all_input_nodes), quantized=int8))
    producer_inputs = {n.name: [i.name for i in n.all_input_nodes] for n in reference.graph.nodes}
    return layer_rows(layers, sums.sqnr_db(), producer_inputs)


def program_row(runner: DeployFormRunner, reference: torch.nn.Module, simulation: Callable[[torch.Tensor], torch.Tensor],
                batches: Iterable[tuple[torch.Tensor, ...]], simulated_by: str) -> LayerRow:
    """How far the artifact's encoder is from fp32, next to the simulation's distance: its input
    is the simulation, so its drop is what the runtime's kernels add to the simulated arithmetic
    (negative where they compute closer to fp32 than the simulation does)."""
    sums = SqnrSums()
    with torch.no_grad():
        for (image,) in batches:
            ref = reference(image).numpy()
            sums.add("simulation", ref, simulation(image).float().numpy())
            sums.add("image_embeddings", ref, runner.run_encoder(image.numpy()))
    program = Layer(f"{runner.manifest.graph('encoder').file} on the runtime (input = {simulated_by})", "program",
                    "image_embeddings", ("simulation",))
    (row,) = layer_rows([program], sums.sqnr_db(), {})
    return row


def requantized_encoder(artifact_dir: Path, manifest: Manifest, model: EfficientSam, quantized_graph: QuantizedGraph
                        ) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule] | None:
    """The fp32 encoder graph and the encoder quantized again by ``quantized_graph`` (the target's
    quantizer adapter, the one its export ran) with the manifest's recipe and calibration images:
    the graph the artifact was lowered or compiled from. None where the encoder is not INT8, or
    its activation ranges cannot be redone (learned in QAT; calibration images gone: a note says so)."""
    recipe = manifest.recipe
    if manifest.precision != "int8" or recipe is None or "encoder" not in recipe["components"]:
        return None
    if recipe.get("qat", {}).get("activation_ranges", "").startswith("learned"):
        print(f"per-layer drift skipped for {artifact_dir}: its activation ranges were learned in QAT, "
              "not calibrated (no PTQ run to redo)", file=sys.stderr)
        return None
    calibration = recorded_source(manifest.calibration)
    if recipe["scheme"] == "static" and calibration is None:
        print(f"per-layer drift skipped for {artifact_dir}: its calibration images "
              f"({manifest.calibration['path']}) are not available as recorded", file=sys.stderr)
        return None
    size = manifest.img_size
    graph = deploy_graph(model, size, "encoder")
    return exported_encoder(graph), quantized_graph(model, graph, recipe_from_manifest(recipe), calibration, size, "encoder")


def exported_encoder(graph: torch.nn.Module) -> torch.fx.GraphModule:
    """The deploy-form encoder ``graph`` as ``torch.export`` gives it: the float graph every row
    is compared with, its nodes named as the quantizer's export names them."""
    return torch.export.export(graph, graph.example_inputs()).module()


def requantized_encoder_drift(artifact_dir: Path, runner: DeployFormRunner, model: EfficientSam,
                              images: list[np.ndarray], quantized_graph: QuantizedGraph) -> list[LayerRow] | None:
    """Per-op rows of a PT2E INT8 encoder (:func:`requantized_encoder`) plus the program row;
    None where there is no INT8 encoder to redo."""
    graphs = requantized_encoder(artifact_dir, runner.manifest, model, quantized_graph)
    if graphs is None:
        return None
    reference, converted = graphs
    batches = [(encoder_input(image, runner.manifest.img_size),) for image in images]
    rows = compare_layers(reference, converted, batches, total=len(batches))
    return [*rows, program_row(runner, reference, converted, batches, "PT2E simulation")]


def _source_name(node: torch.fx.Node) -> str:
    """The module path the op came from (``encoder.blocks.3.mlp.fc2``), else the node name."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return node.name
    path = list(stack.values())[-1][0]
    return path.replace("L['self'].", "").replace("L__self__.", "") or node.name
