"""Validate an artifact on the device itself: push it with a runner, run the same images and
prompts there, pull embeddings, mask logits and timings back, and replay them into the drift
report as one more row, labelled with the device.

Two programs run on the device:

- ``native``: the C++ ExecuTorch runner (apps/cpp), once per prompt, with ``--dump`` so it
  writes its embedding, low-res logits and IoU predictions as .npy files; its own latency lines
  are the timings. The binary and the ExecuTorch libraries it links are pushed with it.
- ``python``: ``python -m edge_sam.targets.devices.worker`` on a device that has edge_sam
  installed: the artifact's own runner (any target), timed on the device.

Everything lives in a scratch folder on the device, removed afterwards whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_sam.errors import EdgeSamError
from edge_sam.targets.core.manifest import Manifest, artifact_label
from edge_sam.targets.core.artifact_runner import ArtifactRunner
from edge_sam.targets.core.target import verify_artifact
from edge_sam.targets.devices.places import transport_for
from edge_sam.targets.devices.transport import Transport, TransportError

PROGRAMS = ("native", "python")


@dataclass(frozen=True)
class Query:
    """One prompt: points [N, 2] in image pixels and their labels [N] (box corners are 2 and 3)."""

    points: np.ndarray
    labels: np.ndarray

    def key(self) -> bytes:
        return np.asarray(self.points, np.float32).tobytes() + b"|" + np.asarray(self.labels, np.float32).tobytes()


@dataclass
class ImageJob:
    """One image and the prompts to decode on it."""

    image: np.ndarray
    queries: list[Query]


@dataclass(frozen=True)
class RemoteSettings:
    """How to run on the device: ``program`` (native or python; default native for ExecuTorch
    artifacts, python otherwise), ``runner_binary`` (a native runner built for the device; default:
    build one for this machine), ``remote_python`` (the device's interpreter), ``ssh_config`` (an
    ssh_config file for ``ssh -F``), ``runs`` timed runs of each call after ``warmup`` untimed ones."""

    program: str | None = None
    runner_binary: str | os.PathLike | None = None
    remote_python: str = "python3"
    ssh_config: str | os.PathLike | None = None
    runs: int = 1
    warmup: int = 1


@dataclass
class DeviceResults:
    """What came back from the device, per image and per prompt, with its timings."""

    embeddings: list[np.ndarray]
    encoder_s: list[float]
    outputs: list[list[tuple[np.ndarray, np.ndarray]]]
    decoder_s: list[list[float]]
    machine: dict[str, Any]
    memory: dict[str, float] = field(default_factory=dict)
    runner: dict[str, Any] = field(default_factory=dict)  # what the device's runner said of itself


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


# -- running on the device ------------------------------------------------------------------------------

def settings_for(transport: Transport, settings: RemoteSettings) -> RemoteSettings:
    """``settings`` with the device's own interpreter when none was given (``python3``)."""
    if settings.remote_python == "python3" and transport.default_python != "python3":
        return replace(settings, remote_python=transport.default_python)
    return settings


def program_for(manifest: Manifest, settings: RemoteSettings) -> str:
    """The device program: the one asked for, else native for ExecuTorch and python otherwise."""
    program = settings.program or ("native" if manifest.target == "executorch" else "python")
    if program not in PROGRAMS:
        raise EdgeSamError(f"unknown device program '{program}' (choose from {', '.join(PROGRAMS)})")
    return program


def run_on_device(artifact_dir: str | os.PathLike, transport: Transport, jobs: Sequence[ImageJob],
                  settings: RemoteSettings = RemoteSettings(), runtime_options: dict[str, Any] | None = None) -> DeviceResults:
    """Push the artifact and a runner, run every job there, pull the results; the device's
    scratch folder is removed however this ends."""
    artifact_dir = Path(artifact_dir)
    manifest = verify_artifact(artifact_dir)
    program = program_for(manifest, settings)
    if settings.runs < 1 or settings.warmup < 0:
        raise EdgeSamError("runs must be at least 1 and warmup at least 0")
    if program == "native":
        if manifest.target != "executorch":
            raise EdgeSamError(f"the native runner runs ExecuTorch artifacts; {artifact_dir} is '{manifest.target}' "
                               "(use the python program)")
        if runtime_options:
            raise EdgeSamError(f"the native runner takes no runtime options (got {', '.join(sorted(runtime_options))})")
        bundle = _native_bundle(settings.runner_binary, transport)
    machine = transport.machine()
    with tempfile.TemporaryDirectory(prefix="edge-sam-device-") as local, transport.workspace() as remote:
        local = Path(local)
        stage = local / "job"
        stage.mkdir()
        shutil.copytree(artifact_dir, stage / "artifact")
        if program == "native":
            _stage_native(stage, manifest, bundle, jobs, settings)
            command = ["sh", "job/run.sh"]
        else:
            _stage_python(stage, jobs, settings, runtime_options or {})
            command = [settings.remote_python, "-m", "edge_sam.targets.devices.worker", "job"]
        transport.push(stage, remote)
        done = transport.run(command, cwd=remote)
        if done.returncode != 0:
            raise TransportError(f"{transport.label}: {_failure(program, done, settings, transport)}")
        transport.pull(f"{remote}/job/out", local)
        read = _read_native if program == "native" else _read_python
        return read(local / "out", jobs, machine)


def _failure(program: str, done, settings: RemoteSettings, transport: Transport) -> str:
    line = done.last_error_line()
    if transport.setup_command and "is not installed" in line:  # a place edge_sam made: the fix is to make it again
        return f"the device lacks a runtime ({line.split(': ', 1)[-1]}): {transport.setup_command}"
    if done.returncode in (126, 127):
        what = "the native runner" if program == "native" else settings.remote_python
        return f"{what} cannot be run on the device ({line})"
    if program == "python" and "No module named" in line and "edge_sam" in line:
        return f"{settings.remote_python} on the device cannot import edge_sam (pip install edge-sam there): {line}"
    return f"the {program} runner failed: {line}"


def _native_bundle(binary: str | os.PathLike | None, transport: Transport) -> list[Path]:
    """The runner binary and the ExecuTorch shared libraries it links (found with ldd), checked
    before anything is pushed."""
    from edge_sam.targets.executorch.native import RUNNER_NAME, build_runner, package_prefix

    binary = binary or transport.native_runner
    if binary is None:
        binary = build_runner(Path(tempfile.gettempdir()) / f"edge-sam-native-{os.getuid()}")
        device_arch = transport.machine()["arch"]
        if device_arch != platform.machine():
            raise EdgeSamError(
                f"the native runner built here is for {platform.machine()}, {transport.label} is {device_arch}: build "
                f"{RUNNER_NAME} for the device (docs/jetson.md) and pass it as the runner binary"
            )
    binary = Path(binary)
    if not binary.is_file():
        raise EdgeSamError(f"native runner binary not found: {binary}")
    bundle = [binary]
    if shutil.which("ldd"):
        prefix = package_prefix().resolve()
        done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
        for line in done.stdout.splitlines():
            parts = line.split("=>")
            path = Path(parts[1].split("(")[0].strip()) if len(parts) == 2 else None
            if path is not None and path.is_file() and prefix in path.resolve().parents:
                bundle.append(path.resolve())
    return bundle


def _stage_native(stage: Path, manifest: Manifest, bundle: list[Path], jobs: Sequence[ImageJob],
                  settings: RemoteSettings) -> None:
    """bin/ (the runner), lib/ (its libraries), images/*.ppm and run.sh: one runner call per prompt."""
    from edge_sam.graph_contract import ROLES
    from edge_sam.targets.executorch.native import write_ppm

    programs = [arg for role in ROLES for arg in (f"--{role}", f"artifact/{manifest.graph(role).file}")]

    (stage / "bin").mkdir()
    (stage / "lib").mkdir()
    (stage / "images").mkdir()
    binary = stage / "bin" / "edge_sam_runner"
    shutil.copy2(bundle[0], binary)
    binary.chmod(0o755)
    for library in bundle[1:]:
        shutil.copy2(library, stage / "lib" / library.name)
    lines = [
        "#!/bin/sh",
        "# Written by edge_sam: one edge_sam_runner call per prompt; outputs in out/IMAGE_PROMPT/.",
        'cd "$(dirname "$0")" || exit 2',
        'export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"',
        "mkdir -p out",
    ]
    for i, job in enumerate(jobs):
        write_ppm(stage / "images" / f"{i}.ppm", job.image)
        for j, query in enumerate(job.queries):
            out = f"out/{i}_{j}"
            args = ["./bin/edge_sam_runner", *programs, "--image", f"images/{i}.ppm", "--out", f"{out}/mask.pgm", "--dump", out,
                    "--runs", str(settings.runs), "--warmup", str(settings.warmup)]
            for (x, y), label in zip(np.asarray(query.points, np.float64), np.asarray(query.labels, np.float64)):
                args += ["--point", f"{float(x)!r},{float(y)!r},{float(label)!r}"]
            lines.append(f"mkdir -p {out} && {shlex.join(args)} > {out}/stdout.txt || exit $?")
    (stage / "run.sh").write_text("\n".join(lines) + "\n")


def _read_native(out: Path, jobs: Sequence[ImageJob], machine: dict[str, Any]) -> DeviceResults:
    from edge_sam.targets.executorch.native import parse_latency

    results = DeviceResults([], [], [], [], machine)
    for i, job in enumerate(jobs):
        encoder_ms, outputs, decoder_s = [], [], []
        for j in range(len(job.queries)):
            folder = out / f"{i}_{j}"
            latency = parse_latency((folder / "stdout.txt").read_text())
            encoder_ms.append(latency["encoder"][0])
            # The per-image context runs once per image: its time goes to the image's first prompt,
            # as a Python runner's first decode of an embedding computes it.
            context_ms = latency["context"][0] if j == 0 else 0.0
            decoder_s.append((latency["decoder"][0] + context_ms) / 1e3)
            outputs.append((np.load(folder / "low_res.npy"), np.load(folder / "iou.npy")))
        results.embeddings.append(np.load(out / f"{i}_0" / "embedding.npy"))
        results.encoder_s.append(statistics.median(encoder_ms) / 1e3)
        results.outputs.append(outputs)
        results.decoder_s.append(decoder_s)
    return results


def _stage_python(stage: Path, jobs: Sequence[ImageJob], settings: RemoteSettings, runtime_options: dict[str, Any]) -> None:
    arrays = {f"image_{i}": job.image for i, job in enumerate(jobs)}
    for i, job in enumerate(jobs):
        for j, query in enumerate(job.queries):
            arrays[f"points_{i}_{j}"] = np.asarray(query.points, np.float32)
            arrays[f"labels_{i}_{j}"] = np.asarray(query.labels, np.float32)
    np.savez(stage / "inputs.npz", **arrays)
    plan = {"queries": [len(job.queries) for job in jobs], "runs": settings.runs, "warmup": settings.warmup,
            "runtime_options": runtime_options}
    (stage / "job.json").write_text(json.dumps(plan))


def _read_python(out: Path, jobs: Sequence[ImageJob], machine: dict[str, Any]) -> DeviceResults:
    timings = json.loads((out / "timings.json").read_text())
    results = DeviceResults([], timings["encoder_s"], [], timings["decoder_s"], machine, timings.get("memory") or {},
                            timings.get("runner") or {})
    with np.load(out / "outputs.npz") as arrays:
        for i, job in enumerate(jobs):
            results.embeddings.append(arrays[f"embedding_{i}"])
            results.outputs.append([(arrays[f"low_res_{i}_{j}"], arrays[f"iou_{i}_{j}"]) for j in range(len(job.queries))])
    return results


# -- replaying into the drift report --------------------------------------------------------------------

class DeviceRunner(ArtifactRunner):
    """The outputs the device computed, answered for the same images and prompts the report asks
    (anything else is an error); timings are the device's own (:meth:`last_call_seconds`)."""

    def __init__(self, manifest: Manifest, artifact_dir: Path, jobs: Sequence[ImageJob], results: DeviceResults,
                 transport_label: str, program: str, emulated: bool = False) -> None:
        self.manifest = manifest
        self.emulated = emulated
        self.img_size = manifest.img_size
        self.label = f"{artifact_label(artifact_dir, manifest)} @ {transport_label}"
        self.transport_label, self.program, self.results = transport_label, program, results
        self._images = {image_key(job.image): i for i, job in enumerate(jobs)}
        self._queries = [{query.key(): j for j, query in enumerate(job.queries)} for job in jobs]
        self._image: int | None = None
        self._seconds: float | None = None

    def encode(self, image: np.ndarray) -> np.ndarray:
        key = image_key(image)
        if key not in self._images:
            raise EdgeSamError(f"{self.label}: this image was not run on the device")
        self._image = self._images[key]
        self._seconds = self.results.encoder_s[self._image]
        return self.results.embeddings[self._image]

    def decode(self, embedding, points, labels, image_hw):
        query = Query(np.asarray(points, np.float32).reshape(-1, 2), np.asarray(labels, np.float32).reshape(-1))
        index = self._queries[self._image].get(query.key()) if self._image is not None else None
        if index is None:
            raise EdgeSamError(f"{self.label}: this prompt was not run on the device")
        self._seconds = self.results.decoder_s[self._image][index]
        return self.results.outputs[self._image][index]

    def last_call_seconds(self) -> float | None:
        return self._seconds

    def measured_memory(self) -> dict[str, float]:
        return dict(self.results.memory)

    def describe(self) -> dict[str, Any]:
        machine = self.results.machine
        cpus = f", {machine['cpu_count']} CPUs" if machine.get("cpu_count") else ""
        device = f"{self.transport_label}: {machine.get('cpu')}{cpus}, {machine.get('arch')}"
        if self.results.runner.get("device"):  # e.g. the execution providers that ran an ONNX graph there
            device += f"; {self.results.runner['device']}"
        return {**super().describe(), **self.results.runner, "device": device, "device_program": self.program,
                "remote_machine": machine, **({"emulated": True} if self.emulated else {})}


def device_runners(artifacts: Sequence[str | os.PathLike], places: Sequence[str], jobs: Sequence[ImageJob],
                   settings: RemoteSettings = RemoteSettings(),
                   runtime_options: dict[str, dict[str, Any]] | None = None) -> list[DeviceRunner]:
    """One :class:`DeviceRunner` per (artifact, place): each artifact run on each device."""
    runners = []
    for place in places:
        transport = transport_for(place, settings.ssh_config)
        for artifact in artifacts:
            manifest = verify_artifact(artifact)
            program = program_for(manifest, settings)
            options = (runtime_options or {}).get(manifest.target) or None
            results = run_on_device(artifact, transport, jobs, settings_for(transport, settings), options)
            runners.append(DeviceRunner(manifest, Path(artifact), jobs, results, transport.label, program,
                                        transport.emulated))
    return runners


def jobs_for(samples: Iterable, prompts_of: Callable[[Any], Sequence], warm_up: Callable[[tuple[int, int]], Any] | None = None
             ) -> list[ImageJob]:
    """ImageJobs for ``samples``: ``prompts_of(sample)`` gives each image's prompts (objects with
    ``points`` and ``labels``); ``warm_up(image_hw)``, the report's untimed first prompt, is added
    to the first image."""
    jobs = []
    for sample in samples:
        prompts = list(prompts_of(sample))
        if not jobs and warm_up is not None:
            prompts.append(warm_up(sample.image.shape[:2]))
        queries: dict[bytes, Query] = {}
        for prompt in prompts:
            query = Query(np.asarray(prompt.points, np.float32), np.asarray(prompt.labels, np.float32))
            queries.setdefault(query.key(), query)
        jobs.append(ImageJob(sample.image, list(queries.values())))
    return jobs
