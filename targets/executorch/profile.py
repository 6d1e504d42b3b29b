"""Per-operator times of an ExecuTorch program from its ETDump (``executorch.devtools.Inspector``).

The XNNPACK backend in the executorch wheel records one event per XNNPACK operator inside a
delegate call ("Fully Connected (NC, F32) GEMM #7", "Batch Matrix Multiply ..."), and the
portable/optimized kernels record one per op outside it ("native_call_native_layer_norm.out"),
so the table says where an encoder's time goes. Events are grouped by kind (the "#N" instance
suffix dropped) and averaged over the runs recorded.

Per layer (the mixed search's prune order): XNNPACK names no node, and its "#N" counts restart in
every delegate call, but its events come in execution order and every conv or linear module runs as
exactly one GEMM operator ("Fully Connected" or "Convolution": a 1x1 conv may run as either), so the
Nth GEMM of the encoder is the Nth conv/linear module in data-flow order
(:func:`edge_sam.quantize.layers.weighted_modules_per_layer`); a count that differs is refused, not
guessed. A "Convert" (XNNPACK's quantize or dequantize) exists only because of INT8 and is charged to
the nearest GEMM in its delegate call, the one it feeds on a tie. Time outside the GEMMs (attention,
norms, transposes) is left out: it is the same whichever layers are INT8.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.targets.core.profiling import PROFILED_RUNS

_DELEGATE_CALL = "DELEGATE_CALL"  # wraps, and closes, the operator events of one delegate call
# Events that wrap others (their time is already in the operators they contain).
_WRAPPERS = frozenset({"Method::execute", _DELEGATE_CALL, "OPERATOR_CALL", "Program::load_method", "Method::init"})
_INSTANCE = re.compile(r"\s+#\d+$")
_GEMMS = ("Fully Connected", "Convolution")  # XNNPACK's operator for one conv or linear module
_CONVERT = "Convert"


def _etdump_frame(program):
    """The Inspector's event table (one row per event, in execution order; ``raw``: ms per run)."""
    from executorch.devtools import Inspector

    with tempfile.TemporaryDirectory(prefix="edge-sam-etdump-") as work:
        etdump = Path(work) / "run.etdp"
        program.write_etdump_result_to_file(str(etdump), str(Path(work) / "debug.bin"))
        if not etdump.stat().st_size:
            raise EdgeSamError("the ETDump is empty: this ExecuTorch runtime was built without its event tracer")
        return Inspector(etdump_path=str(etdump)).to_dataframe()


def operator_table(program) -> list[dict]:
    """Rows {op, calls, ms, share, delegated} per operator kind, slowest first, after a total row
    (``delegated`` None); ``ms`` is the mean
    time per run and ``share`` its fraction of ``Method::execute``. ``program`` is an
    ``executorch.runtime.Program`` loaded with ``enable_etdump=True`` and run at least once."""
    frame = _etdump_frame(program)
    execute_ms = float(frame.loc[frame.event_name == "Method::execute", "avg (ms)"].sum())
    frame = frame[~frame.event_name.isin(_WRAPPERS)].copy()
    frame["op"] = frame.event_name.str.replace(_INSTANCE, "", regex=True)
    rows = []
    for op, group in frame.groupby("op"):
        ms = float(group["avg (ms)"].sum())
        rows.append({"op": op, "calls": len(group), "ms": ms, "share": ms / execute_ms if execute_ms else None,
                     "delegated": bool(group["is_delegated_op"].any())})
    rows.sort(key=lambda r: -r["ms"])
    return [{"op": "Method::execute (total)", "calls": 1, "ms": execute_ms, "share": 1.0, "delegated": None}, *rows]


def format_table(rows: list[dict], limit: int = 15) -> str:
    """The slowest ``limit`` operator kinds as an aligned text table."""
    lines = [f"{'operator':<44} {'calls':>5} {'ms/run':>10} {'share':>7}  where"]
    for row in rows[: limit + 1]:
        share = f"{100 * row['share']:.1f}%" if row["share"] is not None else "-"
        where = {True: "delegate", False: "kernel", None: ""}[row["delegated"]]
        lines.append(f"{row['op'][:44]:<44} {row['calls']:>5} {row['ms']:>10.2f} {share:>7}  {where}")
    return "\n".join(lines)


def delegate_calls(program, skip_runs: int = 1) -> list[list[tuple[str, float]]]:
    """The XNNPACK operators of each delegate call, in execution order: (event name, median ms
    per run over the runs after the first ``skip_runs``)."""
    calls: list[list[tuple[str, float]]] = [[]]
    for name, delegated, raw in _etdump_frame(program)[["event_name", "is_delegated_op", "raw"]].itertuples(index=False):
        if name == _DELEGATE_CALL:
            calls.append([])
        elif delegated:
            calls[-1].append((name, float(np.median(list(raw)[skip_runs:] or list(raw)))))
    return [call for call in calls if call]


def layer_ms(calls: Sequence[Sequence[tuple[str, float]]], modules: Mapping[str, int]) -> dict[str, float]:
    """Milliseconds per run of each layer's GEMMs (and Converts) in ``calls``; ``modules``: conv and
    linear modules per layer, in data-flow order (see the module docstring)."""
    gemms = [(c, i) for c, call in enumerate(calls) for i, (name, _) in enumerate(call) if name.startswith(_GEMMS)]
    if len(gemms) != sum(modules.values()):
        raise EdgeSamError(f"the ETDump has {len(gemms)} GEMM operators for the encoder's {sum(modules.values())} "
                           f"conv and linear modules: its operators cannot be read back to layers")
    owners = iter(layer for layer, count in modules.items() for _ in range(count))
    owner = {gemm: next(owners) for gemm in gemms}
    totals: dict[str, float] = defaultdict(float)
    for c, call in enumerate(calls):
        anchors = [i for cc, i in gemms if cc == c]
        for i, (name, ms) in enumerate(call):
            if (c, i) in owner:
                totals[owner[c, i]] += ms
            elif name.startswith(_CONVERT) and anchors:
                nearest = min(anchors, key=lambda a: (abs(a - i), a < i))
                totals[owner[c, nearest]] += ms
    return dict(totals)


def encoder_layer_ms(runner, modules: Mapping[str, int], image: np.ndarray) -> dict[str, float]:
    """Milliseconds per run of each layer in the encoder of ``runner`` (an ExecuTorchRunner loaded
    with ``profile=True``) on ``image``, from its ETDump."""
    for _ in range(1 + PROFILED_RUNS):
        runner.encode(image)
    return layer_ms(delegate_calls(runner.encoder.program), modules)
