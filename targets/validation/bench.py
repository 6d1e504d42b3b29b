"""One benchmark table over every way of running the model: the reference eager PyTorch model,
our PyTorch model, and exported artifacts of any target, precision and recipe.

How it times (the rules that made earlier numbers misleading are built in):

- **One process per runtime** (:mod:`.bench_worker`): ONNX Runtime, XNNPACK and PyTorch thread
  pools in one process slowed each other and inflated every ratio by ~25%.
- **Interleaved rounds**: round r times every path once (starting from a different path each
  round), so a change in machine load hits all paths alike; ratios use the minimum over
  rounds, the run least disturbed by other work. The load average is recorded per round.
- **The reference** is the reference implementation's eager PyTorch encoder: attention with the
  4096 x 4096 score matrices materialized (``set_attention(model, "matmul")``), at the
  checkpoint's size.
- **The machine's rates** are measured in the same run: torch fp32 matmul and int8
  ``torch._int_mm`` on 2048^3, so achieved GFLOP/s (:mod:`edge_sam.flops` over the time) can be
  read against what this CPU does at best.

Decoder times are per prompt: one prompt per call, and a batch (``decode_batch``) divided by its
size. PyTorch rows reuse the decoder's per-image context (prompt-independent work done once
per image); exported decoders recompute it per call, and the FLOP counts say which.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edge_sam.errors import EdgeSamError
from edge_sam.flops import decoder_flops, encoder_flops
from edge_sam.modeling.config import EfficientSamConfig

REFERENCE_LABEL = "reference eager (materialized attention)"
PYTORCH_GROUP = "pytorch"
_SETTLE_S = 0.2  # pause before switching process: the last one's spinning threads go idle
_WORKER_TIMEOUT_S = 3600


# -- what to time -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchPath:
    """One row: ``kind`` "reference" (eager, materialized attention), "pytorch" (TorchRunner with
    ``torch_options``) or "artifact" (an exported folder, loaded with ``runtime_options``)."""

    label: str
    kind: str
    group: str  # the worker process: "pytorch" or the artifact's target
    artifact: str | None = None
    torch_options: dict[str, Any] = field(default_factory=dict)
    runtime_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def reference(cls) -> "BenchPath":
        return cls(REFERENCE_LABEL, "reference", PYTORCH_GROUP)

    @classmethod
    def pytorch(cls, precision: str = "fp32", compile: bool | str = False) -> "BenchPath":
        label = f"pytorch {precision}" + (f" compiled ({'inductor' if compile is True else compile})" if compile else "")
        return cls(label, "pytorch", PYTORCH_GROUP, torch_options={"precision": precision, "compile": compile})

    @classmethod
    def for_artifact(cls, artifact: str | os.PathLike, threads: int | None = None) -> "BenchPath":
        """An artifact folder; ``threads`` is passed where the target declares a threads option."""
        from edge_sam.targets.core.manifest import read_manifest
        from edge_sam.targets.core.registry import threads_option

        manifest = read_manifest(artifact)
        options = threads_option(manifest.target, threads)
        parts = [manifest.target, manifest.precision] + ([manifest.recipe["name"]] if manifest.recipe else [])
        parts += [f"{k}={v}" for k, v in sorted(manifest.export_options.items())]
        if manifest.img_size != manifest.model_config.get("img_size"):
            parts.append(f"@{manifest.img_size}")
        return cls(" ".join(parts) + f" ({Path(artifact).name})", "artifact", manifest.target, str(artifact),
                   runtime_options=options)


@dataclass(frozen=True)
class ExportSpec:
    """``TARGET:PRECISION[:RECIPE][:KEY=VALUE...]``, e.g. ``onnx:int8:dynamic-linear:attention=fused``
    or ``tflite:fp32:img_size=512``: an artifact the bench exports before timing it."""

    target: str
    precision: str
    recipe: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> "ExportSpec":
        parts = [p for p in text.split(":") if p]
        options = tuple(tuple(p.split("=", 1)) for p in parts[2:] if "=" in p)
        plain = [p for p in parts if "=" not in p]
        if len(plain) not in (2, 3) or len(plain) + len(options) != len(parts):
            raise EdgeSamError(f"bad --export {text!r}: expected TARGET:PRECISION[:RECIPE][:KEY=VALUE...], "
                               "e.g. onnx:int8:dynamic-linear or onnx:fp32:attention=fused")
        return cls(plain[0], plain[1], plain[2] if len(plain) == 3 else None, options)  # type: ignore[arg-type]

    @property
    def folder(self) -> str:
        return "-".join([self.target, self.precision] + ([self.recipe] if self.recipe else [])
                        + [f"{k}-{v}" for k, v in self.options])

    def cli_args(self) -> list[str]:
        """The ``edge-sam export`` flags of this spec: ``img_size=N`` is ``--img-size N``, other
        options go through the target's declared flags."""
        from edge_sam.targets.core.registry import get_target

        declared = {option.name: option for option in get_target(self.target).export_options}
        args = ["--target", self.target, "--precision", self.precision] + (["--recipe", self.recipe] if self.recipe else [])
        for key, value in self.options:
            if key.replace("-", "_") == "img_size":
                args += ["--img-size", value]
                continue
            option = declared.get(key.replace("-", "_"))
            if option is None:
                raise EdgeSamError(f"target {self.target} has no export option {key!r} "
                                   f"(its options: {', '.join(declared) or 'none'})")
            if option.kind is bool:
                if value.lower() in ("1", "true", "yes"):
                    args.append(option.flag)
            else:
                args += [option.flag, value]
        return args


def export_artifacts(specs: list[ExportSpec], checkpoint: str, folder: Path, img_size: int | None,
                     calibration: str | None, reuse: bool) -> list[Path]:
    """Export each spec with ``edge-sam export`` in its own process (no toolchain stays loaded
    here), into ``folder``/<spec>; with ``reuse`` an existing artifact folder is kept."""
    from edge_sam.targets.core.target import verify_artifact

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for spec in specs:
        target_dir = folder / (spec.folder + (f"-{img_size}" if img_size else ""))
        if reuse and (target_dir / "manifest.json").is_file():
            verify_artifact(target_dir, expected_target=spec.target)
            out.append(target_dir)
            continue
        command = [sys.executable, "-m", "edge_sam.apps.cli", "export", *spec.cli_args(), "--checkpoint", checkpoint,
                   "--out", str(target_dir), "--overwrite"]
        command += ["--img-size", str(img_size)] if img_size else []
        command += ["--calibration", calibration] if calibration else []
        print(f"exporting {spec.folder} ...", file=sys.stderr, flush=True)
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise EdgeSamError(f"export {spec.folder} failed: {last}")
        out.append(target_dir)
    return out


# -- timing ---------------------------------------------------------------------------------------

class _WorkerProcess:
    """A bench_worker subprocess: send a command line, read one answer line."""

    def __init__(self, job: dict[str, Any], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "edge_sam.targets.validation.bench_worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                        bufsize=1)
        self.ready = self._exchange(job)

    def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=_WORKER_TIMEOUT_S)
            tail = [l for l in self.log_path.read_text().strip().splitlines() if l.strip()][-1:] or ["no output"]
            raise EdgeSamError(f"bench worker exited ({self.process.returncode}): {tail[0]} (log: {self.log_path})")
        answer = json.loads(line)
        if "error" in answer:
            raise EdgeSamError(f"bench worker: {answer['error']} (log: {self.log_path})")
        return answer

    def command(self, **message: Any) -> dict[str, Any]:
        return self._exchange(message)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
        self._log.close()


@dataclass
class BenchResult:
    """Everything one bench run measured; :func:`table_rows` turns it into the table."""

    paths: list[dict[str, Any]]  # per path: label, kind, group, artifact, describe(), config, flops
    timings: list[dict[str, list]]  # per path: encoder / encoder_cpu / decoder / batch (seconds)
    matmul: dict[str, list[float]]  # fp32_gflops, int8_gops per round
    drift: list[dict[str, Any] | None]
    rounds: list[dict[str, Any]]  # per round: start time, load average
    settings: dict[str, Any]
    machine: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _config_of(path: BenchPath, checkpoint_config: EfficientSamConfig | None) -> EfficientSamConfig:
    if path.artifact is None:
        return checkpoint_config
    from edge_sam.targets.core.manifest import read_manifest

    manifest = read_manifest(path.artifact)
    return EfficientSamConfig.from_dict({**manifest.model_config, "img_size": manifest.img_size})


def _export_options(path: BenchPath) -> dict[str, Any]:
    if path.artifact is None:
        return {}
    from edge_sam.targets.core.manifest import read_manifest

    return dict(read_manifest(path.artifact).export_options)


def run_bench(
    paths: list[BenchPath],
    checkpoint: str,
    image: str | os.PathLike,
    rounds: int = 5,
    threads: int = 2,
    batch: int = 16,
    decoder_runs: int = 5,
    drift_images: str | None = None,
    drift_limit: int | None = None,
    log_dir: str | os.PathLike | None = None,
) -> BenchResult:
    """Time every path in interleaved rounds, each runtime in its own worker process."""
    import edge_sam
    from edge_sam.targets.validation.drift import machine_info

    if rounds < 1 or decoder_runs < 1 or batch < 1:
        raise EdgeSamError("--rounds, --decoder-runs and --batch must be at least 1")
    model_config = edge_sam.load_model(checkpoint).config
    groups: dict[str, list[int]] = {}
    for index, path in enumerate(paths):
        groups.setdefault(path.group, []).append(index)
    groups.setdefault(PYTORCH_GROUP, [])  # it also measures the matmul rates
    drift = {"images": str(drift_images), "limit": drift_limit} if drift_images else None
    with ExitStack() as stack:
        logs = Path(log_dir) if log_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edge-sam-bench-")))
        logs.mkdir(parents=True, exist_ok=True)
        workers: dict[str, _WorkerProcess] = {}
        local: dict[int, tuple[str, int]] = {}  # path index -> (group, index in its worker)
        described: dict[int, dict[str, Any]] = {}
        drifts: dict[int, dict[str, Any] | None] = {}
        for group, indices in tqdm(groups.items(), desc="loading runtimes", unit="process"):
            job = {"checkpoint": str(checkpoint), "threads": threads, "image": str(image), "batch": batch,
                   "drift": drift, "paths": [asdict(paths[i]) for i in indices]}
            worker = _WorkerProcess(job, logs / f"worker-{group}.log")
            stack.callback(worker.close)
            workers[group] = worker
            for position, index in enumerate(indices):
                local[index] = (group, position)
                described[index] = worker.ready["paths"][position]
                drifts[index] = (worker.ready["drift"] or [None] * len(indices))[position]

        timings = [{"encoder": [], "encoder_cpu": [], "decoder": [], "decoder_cpu": [], "batch": [], "batch_cpu": []}
                   for _ in paths]
        matmul: dict[str, list[float]] = {"fp32_gflops": [], "int8_gops": []}
        round_info = []
        last_group = [None]

        def ask(group: str, **command: Any) -> dict[str, Any]:
            if last_group[0] not in (None, group):
                time.sleep(_SETTLE_S)
            last_group[0] = group
            return workers[group].command(**command)

        with tqdm(total=rounds * (3 * len(paths) + 1), desc="timing", unit="call") as bar:
            for r in range(rounds):
                round_info.append({"round": r, "time": time.time(), "loadavg": list(os.getloadavg())})
                order = [(r + i) % len(paths) for i in range(len(paths))] if paths else []
                for stage in ("encoder", "decoder", "batch"):
                    for index in order:
                        group, position = local[index]
                        if stage == "encoder":
                            answer = ask(group, op="encoder", path=position)
                            timings[index]["encoder"].append(answer["wall"])
                            timings[index]["encoder_cpu"].append(answer["cpu"])
                        elif stage == "decoder":
                            runs = ask(group, op="decoder", path=position, count=decoder_runs)["runs"]
                            timings[index]["decoder"].extend(run["wall"] for run in runs)
                            timings[index]["decoder_cpu"].extend(run["cpu"] for run in runs)
                        else:
                            answer = ask(group, op="batch", path=position)
                            timings[index]["batch"].append(answer["wall"] / batch)
                            timings[index]["batch_cpu"].append(answer["cpu"] / batch)
                        bar.update()
                rates = ask(PYTORCH_GROUP, op="matmul")
                for key in matmul:
                    matmul[key].append(rates[key])
                bar.update()
        round_info.append({"round": "end", "time": time.time(), "loadavg": list(os.getloadavg())})

    path_records = []
    for index, path in enumerate(paths):
        config = _config_of(path, model_config)
        cached = path.kind != "artifact"  # TorchRunner keeps the decoder's per-image context
        path_records.append({
            **asdict(path), "info": described[index], "img_size": config.img_size,
            "export_options": _export_options(path),
            "encoder_flops": encoder_flops(config).total,
            "decoder_flops": decoder_flops(config, cached=cached).total, "decoder_context_cached": cached,
        })
    settings = {"checkpoint": str(checkpoint), "image": str(image), "rounds": rounds, "threads": threads, "batch": batch,
                "decoder_runs": decoder_runs, "drift_images": str(drift_images) if drift_images else None}
    return BenchResult(path_records, timings, matmul, [drifts[i] for i in range(len(paths))], round_info, settings,
                       {**machine_info(), "cpu_flags": cpu_flags()})


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_flags() -> str:
    """The SIMD features that decide which kernels run (AVX-512, VNNI, bf16, AMX; Arm's dot
    product and i8mm)."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith(("flags", "Features"))), [])
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
              "asimddp", "i8mm")
    return " ".join(f for f in wanted if f in flags)


def cpu_model() -> str:
    """The CPU's model name where the kernel reports one, else the architecture."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return name or platform.processor() or platform.machine()


def load_average_text() -> str:
    """The 1 / 5 / 15 minute load averages, for a benchmark's header."""
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


# -- the table -----------------------------------------------------------------------------------

COLUMNS = (
    ("path", "label"),
    ("target", "target"),
    ("precision", "precision"),
    ("recipe", "recipe"),
    ("px", "img_size"),
    ("size MB", "size_mb"),
    ("enc p50 ms", "encoder_p50_ms"),
    ("enc p90 ms", "encoder_p90_ms"),
    ("enc min ms", "encoder_min_ms"),
    ("x ref eager", "vs_reference"),
    ("x ref, CPU time", "cpu_vs_reference"),
    ("x own fp32", "vs_fp32"),
    ("enc GFLOP/s", "encoder_gflops"),
    ("dec p50 ms/prompt", "decoder_p50_ms"),
    ("dec GFLOP/prompt", "decoder_gflop"),
    ("dec / FLOP floor", "decoder_vs_floor"),
    ("batch ms/prompt", "batch_ms"),
    ("batch / single", "batch_vs_single"),
    ("mask IoU mean", "mask_iou_mean"),
    ("mask IoU p5", "mask_iou_p5"),
)
_TEXT_COLUMNS = 4
_DIGITS = {"encoder_p50_ms": 0, "encoder_p90_ms": 0, "encoder_min_ms": 0, "vs_reference": 2, "vs_fp32": 2,
           "cpu_vs_reference": 2,
           "encoder_gflops": 0, "decoder_p50_ms": 1, "decoder_gflop": 2, "decoder_vs_floor": 2, "batch_ms": 1,
           "batch_vs_single": 2, "mask_iou_mean": 4, "mask_iou_p5": 4, "size_mb": 1}


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _fp32_twin(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The same target's fp32 row at the same size: the plain one (no export options, eager)
    when there is one, else the first fp32 row of that target."""
    if row["kind"] == "reference":
        return None
    candidates = [r for r in rows if r["kind"] != "reference" and r["target"] == row["target"]
                  and r["precision"] == "fp32" and r["img_size"] == row["img_size"]]
    plain = [r for r in candidates if not r["export_options"] and not r.get("compiled")]
    return (plain or candidates or [None])[0]


def table_rows(result: BenchResult | dict[str, Any]) -> list[dict[str, Any]]:
    """Each path's row of computed columns (seconds -> ms; ratios from the minimum over rounds)."""
    data = result.to_dict() if isinstance(result, BenchResult) else result
    fp32_rate = max(data["matmul"]["fp32_gflops"], default=None)
    rows = []
    for path, timing, drift in zip(data["paths"], data["timings"], data["drift"]):
        info = path["info"]
        encoder, decoder, batch = timing["encoder"], timing["decoder"], timing["batch"]
        compiled = bool(path.get("torch_options", {}).get("compile"))
        row = {
            "label": path["label"], "kind": path["kind"], "target": info.get("target", path["group"]),
            "precision": info.get("precision"), "recipe": info.get("recipe"), "img_size": path["img_size"],
            "export_options": path.get("export_options") or {}, "compiled": compiled,
            "size_mb": info["bytes"] / 1e6 if info.get("bytes") else None,
            "encoder_p50_ms": _ms(statistics.median(encoder)) if encoder else None,
            "encoder_p90_ms": _ms(_percentile(encoder, 90)),
            "encoder_min_ms": _ms(min(encoder, default=None)),
            "encoder_cpu_p50_s": statistics.median(timing["encoder_cpu"]) if timing["encoder_cpu"] else None,
            "encoder_cpu_min_s": min(timing["encoder_cpu"], default=None),
            "encoder_gflops": path["encoder_flops"] / min(encoder) / 1e9 if encoder else None,
            "decoder_p50_ms": _ms(statistics.median(decoder)) if decoder else None,
            "decoder_min_ms": _ms(min(decoder, default=None)),
            "decoder_gflop": path["decoder_flops"] / 1e9,
            "decoder_context_cached": path["decoder_context_cached"],
            "batch_ms": _ms(statistics.median(batch)) if batch else None,
            "batch_min_ms": _ms(min(batch, default=None)),
            "mask_iou_mean": drift.get("mask_iou_mean") if drift else None,
            "mask_iou_p5": drift.get("mask_iou_p5") if drift else None,
        }
        floor_ms = path["decoder_flops"] / (fp32_rate * 1e9) * 1e3 if fp32_rate else None
        row["decoder_floor_ms"] = floor_ms
        row["decoder_vs_floor"] = row["decoder_min_ms"] / floor_ms if floor_ms and row["decoder_min_ms"] else None
        row["batch_vs_single"] = (row["batch_min_ms"] / row["decoder_min_ms"]
                                  if row["batch_min_ms"] and row["decoder_min_ms"] else None)
        rows.append(row)
    reference = next((r for r in rows if r["kind"] == "reference"), None)
    for row in rows:
        row["vs_reference"] = (reference["encoder_min_ms"] / row["encoder_min_ms"]
                               if reference and row["encoder_min_ms"] else None)
        row["cpu_vs_reference"] = (reference["encoder_cpu_min_s"] / row["encoder_cpu_min_s"]
                                   if reference and row["encoder_cpu_min_s"] else None)
        twin = _fp32_twin(rows, row)
        row["vs_fp32"] = twin["encoder_min_ms"] / row["encoder_min_ms"] if twin and row["encoder_min_ms"] else None
    return rows


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _format(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{_DIGITS.get(key, 3)}f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = "| " + " | ".join(title for title, _ in COLUMNS) + " |"
    rule = "| " + " | ".join("---" if i < _TEXT_COLUMNS else "---:" for i in range(len(COLUMNS))) + " |"
    body = ["| " + " | ".join(_format(key, row.get(key)) for _, key in COLUMNS) + " |" for row in rows]
    return "\n".join([header, rule, *body])


def summary_lines(result: BenchResult | dict[str, Any]) -> list[str]:
    """The run's conditions, printed above the table: what a reader needs to trust the numbers."""
    data = result.to_dict() if isinstance(result, BenchResult) else result
    loads = [r["loadavg"][0] for r in data["rounds"]]
    machine, settings = data["machine"], data["settings"]
    fp32 = max(data["matmul"]["fp32_gflops"], default=float("nan"))
    int8 = max(data["matmul"]["int8_gops"], default=float("nan"))
    return [
        f"Machine: {machine.get('processor')}, {machine.get('cpu_count')} CPUs ({machine.get('cpu_flags')}), "
        f"torch {machine.get('torch')}; {settings['threads']} threads per runtime, each runtime in its own process.",
        f"{settings['rounds']} interleaved rounds; ratios from the minimum over rounds; decoder: {settings['decoder_runs']} "
        f"single-prompt calls per round, batch of {settings['batch']} once per round. Checkpoint {settings['checkpoint']}.",
        f"Load average (1 min) during the rounds: {min(loads):.1f} to {max(loads):.1f}"
        + (" (the CPU was shared: absolute times are inflated, ratios less so)" if max(loads) > 1.5 * (machine.get('cpu_count') or 1) / 2 else "")
        + ".",
        f"Machine rates measured in the same run (best round): fp32 matmul {fp32:.0f} GFLOP/s (torch.mm 2048^3), "
        f"int8 {int8:.0f} GOP/s (torch._int_mm 2048^3).",
    ]


def markdown_report(result: BenchResult) -> str:
    rows = table_rows(result)
    notes = ("`x ref eager`: speed-up of the encoder over the reference eager PyTorch encoder (materialized attention); "
             "`x ref, CPU time`: the same from the processes' CPU time (all threads), steadier than wall time on a "
             "shared CPU but it also counts threads that spin while waiting; "
             "`x own fp32`: over the same target's fp32 artifact. `dec / FLOP floor`: decoder time per prompt over "
             "(its FLOPs / the fp32 matmul rate); PyTorch rows reuse the decoder's per-image context, so their FLOPs "
             "per prompt are lower. `batch / single`: per-prompt time in a batch over one prompt alone. Mask IoU is "
             "against the fp32 PyTorch model at the path's input size (the validate command's measure).")
    return "\n".join(["# Benchmark", "", *summary_lines(result), "", markdown_table(rows), "", notes]) + "\n"


def html_report(result: BenchResult) -> str:
    import html

    from edge_sam.targets.validation.report import latency_scatter

    rows = table_rows(result)
    reference = next((r for r in rows if r["kind"] == "reference"), None)
    ref_s = reference["encoder_p50_ms"] / 1e3 if reference and reference["encoder_p50_ms"] else None
    with_drift = any(r["mask_iou_mean"] is not None for r in rows)
    if with_drift:
        points = [(r["encoder_p50_ms"] / 1e3 if r["encoder_p50_ms"] else None, r["mask_iou_mean"], r["label"]) for r in rows
                  if r["kind"] != "reference"]
        plot = latency_scatter(points, ref_s, reference_label="reference eager")
    else:
        points = [(r["encoder_p50_ms"] / 1e3 if r["encoder_p50_ms"] else None, r["vs_reference"], r["label"]) for r in rows]
        top = max([p[1] for p in points if p[1]] or [1.0]) * 1.1
        plot = latency_scatter(points, ref_s, reference_label="reference eager", y_label="encoder speed-up vs reference",
                               y_range=(0.0, top))
    head = "".join(f"<th>{html.escape(t)}</th>" for t, _ in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(k, r.get(k)))}</td>" for _, k in COLUMNS) + "</tr>"
                   for r in rows)
    lines = "".join(f"<p>{html.escape(line)}</p>" for line in summary_lines(result))
    style = ("body{font-family:sans-serif;margin:24px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>edge_sam benchmark</title><style>{style}</style>"
            f"</head><body><h1>Benchmark</h1>{lines}<table><tr>{head}</tr>{body}</table>"
            f"<h2>{'Drift' if with_drift else 'Speed-up'} vs latency</h2>{plot}</body></html>\n")


BENCH_FILES = ("bench.json", "bench.md", "bench.html")


def write_bench(result: BenchResult, out_dir: str | os.PathLike) -> list[Path]:
    """bench.json (raw timings and the computed rows), bench.md and bench.html in ``out_dir``;
    each file appears whole or not at all, and other files there (the exported artifacts, the
    workers' logs) are left alone."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {**result.to_dict(), "rows": table_rows(result)}
    contents = (json.dumps(payload, indent=2, default=str) + "\n", markdown_report(result), html_report(result))
    written = []
    for name, text in zip(BENCH_FILES, contents):
        partial = out_dir / f".{name}.partial"
        partial.write_text(text)
        os.replace(partial, out_dir / name)
        written.append(out_dir / name)
    return written
