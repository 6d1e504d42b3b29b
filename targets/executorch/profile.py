"""Per-operator times of an ExecuTorch program from its ETDump (``executorch.devtools.Inspector``).

The XNNPACK backend in the executorch wheel records one event per XNNPACK operator inside a
delegate call ("Fully Connected (NC, F32) GEMM #7", "Batch Matrix Multiply ..."), and the
portable/optimized kernels record one per op outside it ("native_call_native_layer_norm.out"),
so the table says where an encoder's time goes. Events are grouped by kind (the "#N" instance
suffix dropped) and averaged over the runs recorded.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from edge_sam.errors import EdgeSamError

# Events that wrap others (their time is already in the operators they contain).
_WRAPPERS = frozenset({"Method::execute", "DELEGATE_CALL", "OPERATOR_CALL", "Program::load_method", "Method::init"})
_INSTANCE = re.compile(r"\s+#\d+$")


def operator_table(program) -> list[dict]:
    """Rows {op, calls, ms, share, delegated} per operator kind, slowest first, after a total row
    (``delegated`` None); ``ms`` is the mean
    time per run and ``share`` its fraction of ``Method::execute``. ``program`` is an
    ``executorch.runtime.Program`` loaded with ``enable_etdump=True`` and run at least once."""
    from executorch.devtools import Inspector

    with tempfile.TemporaryDirectory(prefix="edge-sam-etdump-") as work:
        etdump = Path(work) / "run.etdp"
        program.write_etdump_result_to_file(str(etdump), str(Path(work) / "debug.bin"))
        if not etdump.stat().st_size:
            raise EdgeSamError("the ETDump is empty: this ExecuTorch runtime was built without its event tracer")
        frame = Inspector(etdump_path=str(etdump)).to_dataframe()
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
