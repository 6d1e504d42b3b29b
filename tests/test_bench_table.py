"""The benchmark table: FLOP counts (by hand on a tiny config, and against torch's own counter),
the computed columns from known timings, the export specs, and one small end-to-end run of the
worker processes. No test here asserts a speed: benchmarks are commands, not unit tests."""

from __future__ import annotations

import platform

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edge_sam.checkpoint import save_model
from edge_sam.deploy_form import ContextDecoderGraph, DecoderGraph, EncoderGraph
from edge_sam.errors import EdgeSamError
from edge_sam.flops import decoder_flops, encoder_flops
from edge_sam.modeling import EfficientSamConfig
from edge_sam import machine
from edge_sam.targets.benchmarking.render import COLUMNS, markdown_report, markdown_table, summary_lines, table_rows
from edge_sam.targets.benchmarking.roofline import RATE_KEYS, compute_dtype, matmul_rates, measured_dtypes
from edge_sam.targets.benchmarking.run import BenchResult, run_bench
from edge_sam.targets.benchmarking.specs import BenchPath, ExportSpec


def test_encoder_flops_match_a_hand_count_on_the_tiny_config():
    # tiny: 64 px, patch 16 -> 4x4 = 16 tokens, dim 32, 2 blocks, mlp 128, neck 32. 2 FLOPs per MAC.
    tokens, dim = 16, 32
    patch = 2 * tokens * (3 * 16 * 16) * dim
    block = (2 * tokens * dim * 3 * dim          # qkv
             + 2 * tokens * dim * tokens         # q @ k^T over all heads
             + 2 * tokens * tokens * dim         # attn @ v
             + 2 * tokens * dim * dim            # proj
             + 2 * 2 * tokens * dim * 128)       # mlp fc1 + fc2
    neck = 2 * tokens * dim * 32 + 2 * tokens * (9 * 32) * 32
    count = encoder_flops(EfficientSamConfig.tiny())
    assert count.total == patch + 2 * block + neck == 1_966_080
    assert count.group("attention.") == 2 * 2 * (2 * tokens * dim * tokens)


def test_decoder_flops_match_a_hand_count_on_the_tiny_config():
    # tiny decoder: dim 32, 11 tokens (iou + 4 mask + 6 slots), 16 image tokens, cross width 16,
    # mlp 64, upscaling 32 -> 16 -> 8 channels on 4 -> 8 -> 16 px, iou head 32 wide.
    t, n, c, x = 11, 16, 32, 16
    layer = (4 * 2 * t * c * c + 2 * (2 * t * c * t)                       # self-attention
             + 2 * t * c * x + 2 * (2 * n * c * x) + 2 * (2 * t * x * n) + 2 * t * x * c  # tokens -> image
             + 2 * (2 * t * c * 64)                                         # mlp
             + 2 * n * c * x + 2 * (2 * t * c * x) + 2 * (2 * n * x * t) + 2 * n * x * c)  # image -> tokens
    final = 2 * t * c * x + 2 * (2 * n * c * x) + 2 * (2 * t * x * n) + 2 * t * x * c
    upscaling = 2 * 16 * 32 * (4 * 16) + 2 * 64 * 16 * (4 * 8)
    heads = 4 * (2 * (2 * c * c) + 2 * c * 8) + 2 * 4 * 8 * 256 + 2 * (32 * 32 + 32 * 32 + 32 * 4)
    prompts = 2 * 6 * 2 * 16
    assert decoder_flops(EfficientSamConfig.tiny()).total == prompts + 2 * layer + final + upscaling + heads == 894_848


@pytest.mark.parametrize("overrides", [{}, {"img_size": 96, "decoder_depth": 1}])
def test_flop_counts_agree_with_torch_flop_counter(make_tiny_model, overrides):
    model = make_tiny_model(**overrides)
    whole = DecoderGraph(model, attention="matmul")
    graphs = [(EncoderGraph(model, attention="matmul"), encoder_flops(model.config).total),
              (whole, decoder_flops(model.config).total)]
    for factored in (False, True):  # the deploy form's per-prompt graph, plain and with folded cross-attention
        graphs.append((ContextDecoderGraph(whole, factored=factored),
                       decoder_flops(model.config, cached=True, factored=factored).total))
    for graph, counted in graphs:
        inputs = graph.example_inputs()  # (outside the counter: a context graph runs to make them)
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            graph(*inputs)
        assert counter.get_total_flops() == counted


def test_full_size_counts_are_the_documented_ones():
    vitt = EfficientSamConfig.vitt()
    assert round(encoder_flops(vitt).total / 1e9) == 205
    assert round(encoder_flops(vitt, 512).total / 1e9, 1) == 22.1  # attention is quadratic in the tokens: 9x fewer
    assert 3.6e9 < decoder_flops(vitt).total < 3.8e9
    assert decoder_flops(vitt, cached=True).total < decoder_flops(vitt).total - 0.7e9


def _result(encoder_s, decoder_s, batch_s, drift=None, matmul=None) -> BenchResult:
    """A bench result with the given per-path timings: reference, pytorch fp32, onnx fp32, onnx int8."""
    config = EfficientSamConfig.tiny()
    kinds = [("reference", "pytorch", "fp32", None, {}), ("pytorch", "pytorch", "fp32", None, {}),
             ("artifact", "onnx", "fp32", None, {}), ("artifact", "onnx", "int8", "dynamic-linear", {"attention": "fused"})]
    paths = []
    for kind, target, precision, recipe, options in kinds:
        cached = kind != "artifact"
        paths.append({"label": f"{kind} {target} {precision}", "kind": kind, "group": target, "artifact": None,
                      "torch_options": {}, "runtime_options": {}, "export_options": options, "img_size": 64,
                      "info": {"target": target, "precision": precision, "recipe": recipe, "bytes": 2_000_000},
                      "encoder_flops": encoder_flops(config).total,
                      "decoder_flops": decoder_flops(config, cached=cached).total, "decoder_context_cached": cached})
    timings = [{"encoder": e, "encoder_cpu": e, "decoder": d, "decoder_cpu": d, "batch": b, "batch_cpu": b}
               for e, d, b in zip(encoder_s, decoder_s, batch_s)]
    return BenchResult(paths, timings, matmul or {"fp32_gflops": [0.5, 1.0], "int8_gops": [3.0, 4.0]},
                       drift or [None] * 4, [{"round": 0, "time": 0.0, "loadavg": [1.0, 1.0, 1.0]}],
                       {"checkpoint": "x", "image": "y", "rounds": 2, "threads": 2, "batch": 16, "decoder_runs": 2,
                        "drift_images": None}, {"processor": "cpu", "cpu_count": 2, "cpu_flags": "avx2", "torch": "2"})


def test_table_columns_are_computed_from_the_minimum_over_rounds():
    result = _result(
        encoder_s=[[4.0, 3.0], [2.0, 1.5], [1.0, 2.0], [0.6, 0.5]],
        decoder_s=[[0.1, 0.2], [0.002, 0.003], [0.004, 0.004], [0.004, 0.005]],
        batch_s=[[0.05], [0.001], [0.004], [0.006]],
        drift=[None, None, {"mask_iou_mean": 0.99, "mask_iou_p5": 0.95}, {"mask_iou_mean": 0.97, "mask_iou_p5": 0.9}],
    )
    reference, torch_fp32, onnx_fp32, onnx_int8 = table_rows(result)
    assert reference["vs_reference"] == 1.0 and reference["vs_fp32"] is None
    assert torch_fp32["vs_reference"] == pytest.approx(3.0 / 1.5) and torch_fp32["vs_fp32"] == 1.0
    assert onnx_fp32["vs_reference"] == pytest.approx(3.0) and onnx_fp32["vs_fp32"] == pytest.approx(1.0)
    assert onnx_int8["vs_reference"] == pytest.approx(6.0) and onnx_int8["vs_fp32"] == pytest.approx(2.0)
    assert onnx_int8["cpu_vs_reference"] == pytest.approx(6.0)  # the CPU times equal the wall times here
    assert onnx_int8["encoder_p50_ms"] == pytest.approx(550.0) and onnx_int8["encoder_min_ms"] == pytest.approx(500.0)
    assert onnx_int8["encoder_gflops"] == pytest.approx(1_966_080 / 0.5 / 1e9)
    # decoder: FLOPs over the best fp32 matmul rate of the run (1 GFLOP/s here) is the floor
    floor_ms = 894_848 / 1e9 * 1e3
    assert onnx_fp32["decoder_floor_ms"] == pytest.approx(floor_ms)
    assert onnx_fp32["decoder_vs_floor"] == pytest.approx(4.0 / floor_ms)
    assert torch_fp32["decoder_gflop"] < onnx_fp32["decoder_gflop"]  # PyTorch reuses the image context
    assert onnx_int8["batch_vs_single"] == pytest.approx(6.0 / 4.0)
    assert onnx_int8["mask_iou_mean"] == 0.97 and onnx_int8["mask_iou_p5"] == 0.9
    assert onnx_int8["size_mb"] == 2.0


def test_markdown_has_every_column_and_states_the_conditions():
    result = _result([[1.0]] * 4, [[0.01]] * 4, [[0.01]] * 4)
    table = markdown_table(table_rows(result))
    header = table.splitlines()[0]
    assert all(title in header for title, _ in COLUMNS)
    assert len(table.splitlines()) == 2 + 4
    report = markdown_report(result)
    assert "Load average" in report and "fp32 1 GFLOP/s" in report and "int8 4 GOP/s" in report


def test_rows_are_held_to_the_roofline_of_the_type_they_compute_in():
    """Real (small) matrix rates of this CPU, one per type it has instructions for; each row's
    fraction is its GFLOP/s over the rate of the type it computes in (a bf16 row against bf16's,
    an INT8 row against int8's), and the header names the CPU and every rate."""
    rates = matmul_rates(threads=1, size=256, rounds=2)
    assert set(rates) == {RATE_KEYS[dtype] for dtype in measured_dtypes(machine.cpu_flags())} >= {"fp32_gflops", "int8_gops"}
    assert all(rate > 0 for rate in rates.values())
    result = _result([[1.0], [0.5], [0.25], [0.2]], [[0.01]] * 4, [[0.01]] * 4,
                     matmul={key: [rate, rate / 2] for key, rate in rates.items()})
    result.paths[1]["info"]["precision"] = "bf16"
    result.paths[3]["info"]["scheme"] = "dynamic"
    result.machine.update(cpu_model=machine.cpu_model(), cpu_flags=machine.cpu_flags())
    reference, torch_bf16, onnx_fp32, onnx_int8 = table_rows(result)
    for row, dtype in ((reference, "fp32"), (onnx_fp32, "fp32"), (onnx_int8, "int8")):
        rate = rates[RATE_KEYS[dtype]]
        assert (row["roofline_dtype"], row["roofline_gflops"]) == (dtype, rate)
        assert row["roofline_fraction"] == pytest.approx(row["encoder_gflops"] / rate)
    assert torch_bf16["roofline_dtype"] == "bf16"
    if "bf16_gflops" in rates:
        assert torch_bf16["roofline_fraction"] == pytest.approx(torch_bf16["encoder_gflops"] / rates["bf16_gflops"])
    else:  # no bf16 instructions: no roofline to hold it to
        assert torch_bf16["roofline_gflops"] is None and torch_bf16["roofline_fraction"] is None
    assert compute_dtype("int8", "weight-only", rates) == "fp32"
    header, rule, *body = markdown_table(table_rows(result)).splitlines()
    assert all(title in header for title in ("computes in", "roofline GFLOP/s", "of roofline"))
    assert "| int8 |" in body[3] and f"{onnx_int8['roofline_fraction']:.3f}" in body[3]
    summary = " ".join(summary_lines(result))
    assert machine.cpu_model() in summary and machine.cpu_flags() in summary
    assert f"fp32 {rates['fp32_gflops']:.0f} GFLOP/s" in summary and f"int8 {rates['int8_gops']:.0f} GOP/s" in summary


def test_only_the_types_a_cpu_has_instructions_for_are_measured():
    assert measured_dtypes("avx2 fma") == ("fp32", "int8")
    assert measured_dtypes("avx512f avx512_vnni avx512_bf16") == ("fp32", "bf16", "int8")
    assert measured_dtypes("amx_bf16 amx_fp16 amx_int8") == ("fp32", "bf16", "fp16", "int8")
    assert measured_dtypes("asimdhp asimddp i8mm bf16") == ("fp32", "bf16", "fp16", "int8")


def test_export_specs_parse_and_map_to_the_targets_declared_flags():
    spec = ExportSpec.parse("onnx:int8:dynamic-linear:attention=fused")
    assert (spec.target, spec.precision, spec.recipe, spec.options) == ("onnx", "int8", "dynamic-linear", (("attention", "fused"),))
    assert spec.folder == "onnx-int8-dynamic-linear-attention-fused"
    assert spec.cli_args() == ["--target", "onnx", "--precision", "int8", "--recipe", "dynamic-linear", "--attention", "fused"]
    assert ExportSpec.parse("tflite:fp32").cli_args() == ["--target", "tflite", "--precision", "fp32"]
    assert ExportSpec.parse("tflite:fp32:img_size=512").cli_args()[-2:] == ["--img-size", "512"]
    with pytest.raises(EdgeSamError, match="TARGET:PRECISION"):
        ExportSpec.parse("onnx")
    with pytest.raises(EdgeSamError, match="no export option 'colour'"):
        ExportSpec.parse("onnx:fp32:colour=red").cli_args()


def test_bench_runs_the_pytorch_paths_in_a_worker_process(make_tiny_model, tmp_path, sample_image_path):
    """End to end on a tiny model: the worker loads the reference and PyTorch rows, every column
    that needs only timings is filled, and the rows keep the paths' order."""
    checkpoint = save_model(make_tiny_model(), tmp_path / "tiny.safetensors")
    paths = [BenchPath.reference(), BenchPath.pytorch("fp32")]
    result = run_bench(paths, str(checkpoint), sample_image_path, rounds=1, threads=1, batch=4, decoder_runs=1,
                       log_dir=tmp_path / "logs")
    rows = table_rows(result)
    assert [row["label"] for row in rows] == [p.label for p in paths]
    for row in rows:
        for key in ("encoder_p50_ms", "encoder_gflops", "decoder_p50_ms", "decoder_vs_floor", "batch_ms", "vs_reference"):
            assert row[key] is not None and row[key] > 0, (row["label"], key)
    assert result.matmul["fp32_gflops"][0] > 0 and result.matmul["int8_gops"][0] > 0
    assert len(result.rounds) == 2 and len(result.rounds[0]["loadavg"]) == 3
    assert (tmp_path / "logs" / "worker-pytorch.log").is_file()


def test_timed_pytorch_decodes_reuse_the_context_of_the_last_encode(make_tiny_model, tmp_path, sample_image_path):
    """The FLOP floor of a PyTorch row counts the decoder with its per-image context cached, so
    every timed decode after a timed encode must decode that encode's embedding (an older one
    would make each decode recompute the context and inflate the row)."""
    from edge_sam.targets.benchmarking.worker import Worker

    checkpoint = save_model(make_tiny_model(), tmp_path / "tiny.safetensors")
    job = {"checkpoint": str(checkpoint), "image": str(sample_image_path), "threads": 1, "batch": 4,
           "paths": [{"kind": "pytorch", "label": "pytorch fp32", "torch_options": {}}]}
    worker = Worker(job)
    runner = worker.runners[0]
    worker.answer({"op": "encoder", "path": 0})
    worker.answer({"op": "decoder", "path": 0, "count": 1})
    last_encoded, _ = runner._embedding_on_device
    assert worker.embeddings[0] is last_encoded
    assert runner._decoder_context is not None


@pytest.mark.parametrize("cpuinfo, flags, model", [
    (["processor : 0", "model name : AMD EPYC 9B45", "flags : fpu sse avx2 fma avx512f avx512_vnni avx512_bf16"],
     "avx2 fma avx512f avx512_vnni avx512_bf16", "AMD EPYC 9B45"),
    (["processor : 0", "Features : fp asimd asimdhp asimddp i8mm bf16", "CPU part : 0xd4f"], "asimdhp asimddp i8mm bf16",
     None),
])
def test_cpu_flags_and_model_read_x86_and_arm_cpuinfo(monkeypatch, cpuinfo, flags, model):
    """Benchmarks record the kernels' SIMD features: x86 "flags" and Arm "Features" lines alike;
    without a "model name" line the architecture names the CPU."""
    monkeypatch.setattr(machine, "_cpuinfo", lambda: cpuinfo)
    assert machine.cpu_flags() == flags
    assert machine.cpu_model() == (model or platform.processor() or platform.machine())
