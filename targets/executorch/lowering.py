"""From a deploy-form graph to ExecuTorch program bytes (.pte), for one delegate.

What this adds to a plain ``to_edge_transform_and_lower`` call, and why:

- Constants arrive contiguous (:func:`edge_sam.graph_contract.deploy_graph`). In
  ExecuTorch 1.5.1 a constant buffer with permuted strides (the decoder's dense position
  encoding comes out of ``permute`` channels-last) gives wrong results with no error, portable
  kernels and XNNPACK alike: on a tiny model the decoder logits were off by 0.03 where their
  largest magnitude was 0.18, and match to 1e-7 with contiguous constants (the same class of bug
  as pytorch/executorch#14644).
- Two edge-dialect rewrites keep more of the graph in XNNPACK: the no-op ``expand_copy`` that
  ``torch.matmul`` decomposes into (on a 3 x 4096 x 4096 attention map at 1024 it is a 200 MB
  copy per block in a portable kernel) is dropped, and ``split_with_sizes_copy`` (the qkv
  chunk, which XNNPACK does not take) becomes slices (which it does). The fp32 encoder at 1024
  goes from 63 partitions to 27 and from 2.97 s to 2.40 s (same machine, interleaved runs).
- Float graphs get their constants folded before lowering (``constant_prop_pass``): the
  decoder's upscaling layers are linear layers whose weight is a permute/reshape of the
  transposed-convolution kernel and whose bias is a repeat, computed in the graph; XNNPACK only
  takes a fully connected layer with constant weights, so without folding both ran as portable
  ``addmm`` kernels, 93% of a prompt's time (271 ms of 275 at 1024 in an ETDump profile).
  Quantized graphs are left as they are (folding must not touch their quantize/dequantize pairs).
- Lowering the full encoder takes about a minute; :class:`StageBar` keeps a live line per stage.

LayerNorm stays outside XNNPACK (its partitioner has no LayerNorm in 1.5.1) and runs on
ExecuTorch's optimized CPU kernel: 2% of the encoder's time at 1024 in an ETDump profile.
"""

from __future__ import annotations

import contextlib
import operator
import threading
from collections.abc import Iterator

import torch
from torch.fx.passes.infra.pass_base import PassResult
from tqdm import tqdm

from edge_sam.targets.core.toolchain_log import capture
from edge_sam.targets.executorch.runtime import XNNPACK, Delegate


class StageBar:
    """A tqdm bar over named stages whose elapsed time keeps ticking during a long stage."""

    def __init__(self, stages: int, description: str) -> None:
        self.bar = tqdm(total=stages, desc=description, unit="stage", bar_format="{desc}: {n}/{total} stages [{elapsed}]")
        self.description = description

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.bar.set_description(f"{self.description}: {name}")
        stop = threading.Event()
        ticker = threading.Thread(target=self._tick, args=(stop,), daemon=True)
        ticker.start()
        try:
            yield
        finally:
            stop.set()
            ticker.join()
            self.bar.update(1)

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(1.0):
            self.bar.refresh()

    def close(self) -> None:
        self.bar.set_description(self.description)
        self.bar.close()


# -- edge-dialect rewrites for XNNPACK ---------------------------------------------------------------
def _edge_ops():
    from executorch.exir.dialects._ops import ops as exir_ops

    return exir_ops.edge.aten


def drop_noop_expands(graph_module: torch.fx.GraphModule) -> PassResult:
    """Remove ``expand_copy`` nodes whose output shape equals their input's (a pure copy)."""
    expand = _edge_ops().expand_copy.default
    changed = False
    for node in list(graph_module.graph.nodes):
        if node.op == "call_function" and node.target == expand:
            source = node.args[0]
            if tuple(source.meta["val"].shape) == tuple(node.meta["val"].shape):
                node.replace_all_uses_with(source)
                graph_module.graph.erase_node(node)
                changed = True
    if changed:
        graph_module.recompile()
    return PassResult(graph_module, changed)


def split_to_slices(graph_module: torch.fx.GraphModule) -> PassResult:
    """``split_with_sizes_copy`` + getitems -> one ``slice_copy`` per piece."""
    ops = _edge_ops()
    graph = graph_module.graph
    changed = False
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != ops.split_with_sizes_copy.default:
            continue
        if not all(user.target == operator.getitem for user in node.users):
            continue
        source, sizes = node.args[0], list(node.args[1])
        dim = (node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)) % source.meta["val"].dim()
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        for user in list(node.users):
            index = user.args[1]
            with graph.inserting_before(user):
                piece = graph.call_function(ops.slice_copy.Tensor, (source, dim, starts[index], starts[index] + sizes[index], 1))
            piece.meta = dict(user.meta)
            user.replace_all_uses_with(piece)
            graph.erase_node(user)
        graph.erase_node(node)
        changed = True
    if changed:
        graph_module.recompile()
    return PassResult(graph_module, changed)


# -- lowering -------------------------------------------------------------------------------------
def _partitioner(delegate: Delegate, precision: str):
    if delegate is XNNPACK:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLBackend.generate_compile_specs(
        compute_unit=ct.ComputeUnit.ALL,
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        model_type=CoreMLBackend.MODEL_TYPE.MODEL,  # a compiled .mlmodelc can only be built on macOS
    )
    return CoreMLPartitioner(compile_specs=specs)


def quiet_toolchain() -> contextlib.AbstractContextManager[None]:
    """The lowering stack prints per-pass progress and warnings: into the export's toolchain log
    (:func:`~edge_sam.targets.core.toolchain_log.capture`), keeping the terminal for our stages."""
    return capture("executorch lowering")


def lower_to_pte(
    module: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], delegate: Delegate, precision: str, bar: StageBar,
    quantized: bool = False,
) -> bytes:
    """torch.export ``module`` (float, or PT2E-converted: ``quantized``), lower it to ``delegate``, serialize.

    Uses two stages of ``bar``: "export" and "lower to <backend>".
    """
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    with quiet_toolchain():
        with bar.stage("export"):
            program = torch.export.export(module, example_inputs)
            if not quantized:
                program = constant_prop_pass(program)
        with bar.stage(f"lower to {delegate.backend_id}"):
            passes = [drop_noop_expands, split_to_slices] if delegate is XNNPACK else None
            edge = to_edge_transform_and_lower(program, transform_passes=passes, partitioner=[_partitioner(delegate, precision)])
            return edge.to_executorch().buffer
