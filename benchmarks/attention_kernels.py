"""One encoder block's attention at 1024 px (3 heads x 4096 tokens x 64) in every kernel form
on hand, each runtime in its own process, interleaved rounds (min over rounds):

- ONNX Runtime: MatMul + Softmax + MatMul (what the deploy graph exports), the fused
  com.microsoft.MultiHeadAttention contrib op (``--attention fused``), and INT8 attention
  matmuls: dynamic (DynamicQuantizeLinear + MatMulInteger on QK^T and on softmax @ V, the
  softmax output re-quantized at run time) and static (QLinearMatMul with fixed scales, the
  softmax output on a 1/255 grid);
- PyTorch: SDPA (flash kernel), materialized matmul + softmax, SDPA under bf16 autocast, and
  torchao's fused INT8 attention (``torchao::qscaled_dot_product``: uint8 q, k, v, probabilities
  and output with fixed scales), where torchao has a CPU kernel for it;
- ExecuTorch: matmul + softmax lowered to XNNPACK (what the ExecuTorch target exports) and the
  ``llama::custom_sdpa`` kernel the executorch wheel ships (libcustom_ops_aot_lib), non-causal.

    python benchmarks/attention_kernels.py [--rounds 5] [--threads 2] [--tokens 4096]

It prints ms per attention and the error of each form against fp32 (max abs, and cosine of the
output), so "is INT8 attention worth it on this CPU" is one command. A form the installed
toolchain cannot run here is listed under the table with the toolchain's reason.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADS, HEAD_DIM = 3, 64
RUNTIMES = ("onnx", "torch", "executorch")  # one process each
UNAVAILABLE: dict[str, str] = {}  # form -> why this machine's toolchain cannot run it (filled by the workers)


def _inputs(tokens: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """q, k, v [1, tokens, heads * head_dim] with the spread of real activations (unit normal)."""
    rng = np.random.default_rng(seed)
    return tuple(rng.standard_normal((1, tokens, HEADS * HEAD_DIM)).astype(np.float32) for _ in range(3))


def _reference(q, k, v) -> np.ndarray:
    def heads(x):
        return x.reshape(1, -1, HEADS, HEAD_DIM).transpose(0, 2, 1, 3).astype(np.float64)

    scores = heads(q) @ heads(k).transpose(0, 1, 3, 2) / np.sqrt(HEAD_DIM)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    out = (scores / scores.sum(-1, keepdims=True)) @ heads(v)
    return out.transpose(0, 2, 1, 3).reshape(1, -1, HEADS * HEAD_DIM)


# -- ONNX Runtime forms ----------------------------------------------------------------------------

def _onnx_models(tokens: int) -> dict[str, bytes]:
    from onnx import TensorProto, helper

    c = HEADS * HEAD_DIM
    f32 = TensorProto.FLOAT
    io = [helper.make_tensor_value_info(n, f32, [1, tokens, c]) for n in ("q", "k", "v")]
    out = [helper.make_tensor_value_info("out", f32, [1, tokens, c])]
    consts = [helper.make_tensor("shape4", TensorProto.INT64, [4], [1, tokens, HEADS, HEAD_DIM]),
              helper.make_tensor("shape3", TensorProto.INT64, [3], [1, tokens, c]),
              helper.make_tensor("scale", f32, [], [HEAD_DIM**-0.5])]

    def split(name: str, perm: list[int]) -> list:
        return [helper.make_node("Reshape", [name, "shape4"], [f"{name}4"]),
                helper.make_node("Transpose", [f"{name}4"], [f"{name}h"], perm=perm)]

    head = split("q", [0, 2, 1, 3]) + split("k", [0, 2, 3, 1]) + split("v", [0, 2, 1, 3])
    merge = [helper.make_node("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
             helper.make_node("Reshape", ["ot", "shape3"], ["out"])]
    ranges = _calibrated_ranges(tokens)
    forms = {
        "ort matmul+softmax (fp32)": head + [
            helper.make_node("Mul", ["qh", "scale"], ["qs"]), helper.make_node("MatMul", ["qs", "kh"], ["s"]),
            helper.make_node("Softmax", ["s"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "vh"], ["o"])] + merge,
        "ort MultiHeadAttention (fp32, fused)": [
            helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["out"], domain="com.microsoft", num_heads=HEADS)],
        "ort int8 dynamic QK^T and PV (MatMulInteger)": head + [
            helper.make_node("Mul", ["qh", "scale"], ["qs"]),
            *_dynamic_matmul("qs", "kh", "s"), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
            *_dynamic_matmul("p", "vh", "o")] + merge,
        "ort int8 static QK^T and PV (QLinearMatMul)": head + [
            helper.make_node("Mul", ["qh", "scale"], ["qs"]),
            *_static_matmul("qs", "kh", "s", ranges["qs"] / 127, ranges["k"] / 127, ranges["s"] / 127),
            helper.make_node("Softmax", ["s"], ["p"], axis=-1),
            *_static_matmul("p", "vh", "o", ranges["p"] / 255, ranges["v"] / 127, ranges["o"] / 127, a_unsigned=True)] + merge,
    }
    models = {}
    for name, nodes in forms.items():
        graph = helper.make_graph(nodes, name, io, out, initializer=consts)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
        models[name] = model.SerializeToString()
    return models


def _calibrated_ranges(tokens: int) -> dict[str, float]:
    """Max |x| of every tensor the static form quantizes, on the benchmark's own inputs (min-max
    calibration on the data it runs: the static form's best case)."""
    q, k, v = (x.reshape(1, -1, HEADS, HEAD_DIM).transpose(0, 2, 1, 3).astype(np.float64) for x in _inputs(tokens))
    qs = q * HEAD_DIM**-0.5
    scores = qs @ k.transpose(0, 1, 3, 2)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return {"qs": np.abs(qs).max(), "k": np.abs(k).max(), "s": np.abs(scores).max(), "p": p.max(),
            "v": np.abs(v).max(), "o": np.abs(p @ v).max()}


def _dynamic_matmul(a: str, b: str, out: str) -> list:
    """a @ b with both operands quantized per tensor at run time (uint8, MLAS's integer GEMM)."""
    from onnx import TensorProto, helper

    return [
        helper.make_node("DynamicQuantizeLinear", [a], [f"{a}_q", f"{a}_s", f"{a}_z"]),
        helper.make_node("DynamicQuantizeLinear", [b], [f"{b}_q", f"{b}_s", f"{b}_z"]),
        helper.make_node("MatMulInteger", [f"{a}_q", f"{b}_q", f"{a}_z", f"{b}_z"], [f"{out}_i"]),
        helper.make_node("Cast", [f"{out}_i"], [f"{out}_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", [f"{a}_s", f"{b}_s"], [f"{out}_scale"]),
        helper.make_node("Mul", [f"{out}_f", f"{out}_scale"], [out]),
    ]


def _static_matmul(a: str, b: str, out: str, sa: float, sb: float, so: float, a_unsigned: bool = False) -> list:
    """a @ b on fixed (calibrated) scales: QuantizeLinear, QLinearMatMul, DequantizeLinear."""
    from onnx import TensorProto, helper

    def q(name: str, scale: float, unsigned: bool) -> list:
        dtype = TensorProto.UINT8 if unsigned else TensorProto.INT8
        return [helper.make_node("Constant", [], [f"{name}_s"], value=helper.make_tensor("s", TensorProto.FLOAT, [], [scale])),
                helper.make_node("Constant", [], [f"{name}_z"], value=helper.make_tensor("z", dtype, [], [0])),
                helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"])]

    return [*q(a, sa, a_unsigned), *q(b, sb, False), *q(out, so, a_unsigned)[:2],
            helper.make_node("QLinearMatMul", [f"{a}_q", f"{a}_s", f"{a}_z", f"{b}_q", f"{b}_s", f"{b}_z",
                                               f"{out}_s", f"{out}_z"], [f"{out}_q8"]),
            helper.make_node("DequantizeLinear", [f"{out}_q8", f"{out}_s", f"{out}_z"], [out])]


def _onnx_worker(tokens: int, threads: int):
    import onnxruntime as ort

    q, k, v = _inputs(tokens)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    sessions = {name: ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
                for name, model in _onnx_models(tokens).items()}
    feeds = {"q": q, "k": k, "v": v}
    return {name: (lambda s=s: s.run(None, feeds)[0]) for name, s in sessions.items()}


# -- PyTorch forms ---------------------------------------------------------------------------------

def _torch_worker(tokens: int, threads: int):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    q, k, v = (torch.from_numpy(x).reshape(1, tokens, HEADS, HEAD_DIM).transpose(1, 2) for x in _inputs(tokens))

    def merge(o):
        return o.transpose(1, 2).reshape(1, tokens, HEADS * HEAD_DIM).float().numpy()

    def materialized():
        return merge(((q * HEAD_DIM**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v)

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return merge(F.scaled_dot_product_attention(q, k, v))

    with torch.inference_mode():
        forms = {"torch SDPA (fp32, flash)": lambda: merge(F.scaled_dot_product_attention(q, k, v)),
                 "torch matmul+softmax (fp32)": materialized, "torch SDPA (bf16 autocast)": bf16}
        int8 = _torchao_int8_sdpa(q, k, v, merge)
        if int8 is not None:
            forms["torchao qscaled_dot_product (int8 q, k, v, probabilities)"] = int8
    return {name: (lambda f=f: _no_grad(f)) for name, f in forms.items()}


def _torchao_int8_sdpa(q, k, v, merge):
    """torchao's fused INT8 attention, quantizing q, k, v per tensor (asymmetric uint8 over
    their ranges), the probabilities on [0, their max] and the output over its fp32 range; None
    (and the reason in UNAVAILABLE) where torchao has no kernel for this CPU."""
    import torch
    import torch.nn.functional as F
    import torchao.ops  # noqa: F401 - registers torchao::qscaled_dot_product

    name = "torchao qscaled_dot_product (int8 q, k, v, probabilities)"

    def grid(x):
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = (hi - lo) / 255
        return scale, int(round(-lo / scale))

    def to_u8(x, scale, zero):
        return torch.clamp(torch.round(x / scale) + zero, 0, 255).to(torch.uint8)

    (qs, qz), (ks, kz), (vs, vz) = grid(q), grid(k), grid(v)
    probs_max = float(((q * HEAD_DIM**-0.5) @ k.transpose(-2, -1)).softmax(-1).max())
    out_scale, out_zero = grid(F.scaled_dot_product_attention(q, k, v))

    def call():
        out = torch.ops.torchao.qscaled_dot_product(
            to_u8(q, qs, qz), to_u8(k, ks, kz), to_u8(v, vs, vz), None, 0.0, False, None,
            qs, qz, ks, kz, vs, vz, probs_max / 255, 0, out_scale, out_zero)
        return merge((out.float() - out_zero) * out_scale)

    try:
        call()
    except (NotImplementedError, RuntimeError) as error:
        amx = torch.cpu._is_amx_tile_supported() if hasattr(torch.cpu, "_is_amx_tile_supported") else False
        UNAVAILABLE[name] = (f"{str(error).splitlines()[0].split('. ')[0]} (torchao's inductor template for it needs AMX tiles: "
                             f"{'present' if amx else 'absent'} on this CPU)")
        return None
    return call


def _executorch_worker(tokens: int, threads: int):
    import tempfile

    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401 - registers llama::custom_sdpa
    from executorch.runtime import Runtime

    torch.set_num_threads(threads)

    class CustomSdpa(torch.nn.Module):
        def forward(self, q, k, v):  # [1, tokens, heads, head_dim], non-causal over every key
            return torch.ops.llama.custom_sdpa(q, k, v, 0, None, 0, False)

    class MatmulSoftmax(torch.nn.Module):
        def forward(self, q, k, v):
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            return (((q * HEAD_DIM**-0.5) @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2)

    inputs = [torch.from_numpy(x).reshape(1, tokens, HEADS, HEAD_DIM) for x in _inputs(tokens)]
    folder = Path(tempfile.mkdtemp(prefix="attention-kernels-"))
    forms = {}
    for name, module in (("executorch xnnpack matmul+softmax (fp32)", MatmulSoftmax()),
                         ("executorch llama::custom_sdpa (fp32, portable kernel)", CustomSdpa())):
        program = torch.export.export(module, tuple(inputs))
        path = folder / f"{len(forms)}.pte"
        path.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
        method = Runtime.get().load_program(str(path)).load_method("forward")
        forms[name] = lambda m=method: m.execute(inputs)[0].reshape(1, tokens, HEADS * HEAD_DIM).numpy()
    return forms


def _no_grad(call):
    import torch

    with torch.inference_mode():
        return call()


def worker_main(runtime: str, tokens: int, threads: int) -> None:
    """Serve timing commands for one runtime's forms on stdin/stdout (JSON lines); what the
    toolchains print goes to stderr."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    forms = {"onnx": _onnx_worker, "torch": _torch_worker, "executorch": _executorch_worker}[runtime](tokens, threads)
    reference = _reference(*_inputs(tokens))
    errors = {}
    for name, call in forms.items():
        out = call().astype(np.float64)
        cos = float((out.ravel() @ reference.ravel()) / (np.linalg.norm(out) * np.linalg.norm(reference)))
        errors[name] = {"max_abs": float(np.abs(out - reference).max()), "cosine": cos}
    protocol.write(json.dumps({"forms": list(forms), "errors": errors, "unavailable": UNAVAILABLE}) + "\n")
    for line in sys.stdin:
        name = json.loads(line)["form"]
        start = time.perf_counter()
        forms[name]()
        protocol.write(json.dumps({"seconds": time.perf_counter() - start}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=4096, help="4096 = a 1024 px input (64 x 64 patches)")
    parser.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.tokens, args.threads)
        return
    workers = {}
    for runtime in RUNTIMES:
        process = subprocess.Popen([sys.executable, __file__, "--worker", runtime, "--tokens", str(args.tokens),
                                    "--threads", str(args.threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        workers[runtime] = (process, json.loads(process.stdout.readline()))
    times: dict[str, list[float]] = {}
    loads = []
    for _ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for runtime, (process, ready) in workers.items():
            time.sleep(0.2)
            for form in ready["forms"]:
                process.stdin.write(json.dumps({"form": form}) + "\n")
                process.stdin.flush()
                times.setdefault(form, []).append(json.loads(process.stdout.readline())["seconds"])
    for process, _ in workers.values():
        process.stdin.close()
        process.wait()
    errors = {name: e for _, ready in workers.values() for name, e in ready["errors"].items()}
    base = min(times["ort matmul+softmax (fp32)"])
    print(f"# one attention, 1 x {HEADS} heads x {args.tokens} tokens x {HEAD_DIM}; {args.threads} threads; "
          f"{args.rounds} interleaved rounds (min); load average {min(loads):.1f}-{max(loads):.1f}")
    print("| form | ms (min) | vs ORT matmul+softmax | max abs err | cosine vs fp64 |\n| --- | ---: | ---: | ---: | ---: |")
    for name, values in times.items():
        print(f"| {name} | {min(values) * 1e3:.1f} | {base / min(values):.2f}x | {errors[name]['max_abs']:.2e} | "
              f"{errors[name]['cosine']:.6f} |")
    for _, ready in workers.values():
        for name, reason in ready.get("unavailable", {}).items():
            print(f"not available here: {name}: {reason}")


if __name__ == "__main__":
    main()
