"""The native ExecuTorch runner (apps/cpp, built by the top-level CMakeLists.txt) from Python:
build it against the installed executorch wheel, hand it PPM images, read back its PGM masks.

    python -m edge_sam.targets.executorch.native to-ppm photo.jpg photo.ppm   # an image for the runner
    python -m edge_sam.targets.executorch.native prefix                        # CMAKE_PREFIX_PATH for cmake

The runner reads binary PPM/PGM only (no image library on the device); these helpers write and
read those formats with NumPy.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_sam.errors import EdgeSamError, ImageError
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.transforms import check_image, read_image

SOURCE_DIR = Path(__file__).resolve().parents[2]  # the checkout holding CMakeLists.txt (editable install)
RUNNER_NAME = "edge_sam_runner"
_LATENCY = re.compile(r"^(encoder|context|decoder): mean ([\d.]+) ms, min ([\d.]+) ms over (\d+) runs$", re.M)


class NativeRunnerError(EdgeSamError):
    """The native runner cannot be built, or it failed (its own one-line error is the message)."""


def package_prefix() -> Path:
    """The executorch wheel's root: headers, libexecutorch.so and its CMake package live under it."""
    spec = importlib.util.find_spec("executorch")
    if spec is None or not spec.submodule_search_locations:
        raise NativeRunnerError("executorch is not installed: pip install 'edge-sam[executorch]'")
    root = Path(next(iter(spec.submodule_search_locations)))
    if not (root / "share" / "cmake" / "executorch-config.cmake").is_file():
        raise NativeRunnerError(f"the executorch package at {root} ships no CMake package (share/cmake)")
    return root


def write_ppm(path: str | os.PathLike, image: np.ndarray) -> None:
    """HxWx3 uint8 RGB -> binary PPM (P6), written to a temp file and renamed into place."""
    image = np.ascontiguousarray(check_image(image))
    path = Path(path)
    temp = path.with_name(path.name + ".partial")
    temp.write_bytes(f"P6\n{image.shape[1]} {image.shape[0]}\n255\n".encode() + image.tobytes())
    os.replace(temp, path)


def read_pgm(path: str | os.PathLike) -> np.ndarray:
    """A binary PGM (P5, maxval 255) as an HxW uint8 array."""
    data = Path(path).read_bytes()
    header = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
    if header is None or int(header.group(3)) != 255:
        raise ImageError(f"{path} is not an 8-bit binary PGM file")
    width, height = int(header.group(1)), int(header.group(2))
    pixels = np.frombuffer(data, np.uint8, count=width * height, offset=header.end())
    return pixels.reshape(height, width)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise NativeRunnerError(f"{name} not found on PATH: the native runner needs CMake and a C++17 compiler")
    return found


def configured_elsewhere(build_dir: Path, source_dir: Path) -> str:
    """Why CMake would refuse ``build_dir`` (it was configured in another folder, or for another
    source tree: a moved checkout or emulated place), or "" when it is fresh or fits."""
    cache = build_dir / "CMakeCache.txt"
    if not cache.is_file():
        return ""
    entries = dict(line.split("=", 1) for line in cache.read_text(errors="replace").splitlines()
                   if "=" in line and not line.startswith(("#", "//")))
    recorded = {key.split(":", 1)[0]: value for key, value in entries.items()}
    for key, expected, what in (("CMAKE_CACHEFILE_DIR", build_dir, "in"), ("CMAKE_HOME_DIRECTORY", source_dir, "for")):
        if Path(recorded.get(key, "")).resolve() != expected.resolve():
            return f"{what} {recorded.get(key, 'an unknown folder')}"
    return ""


def build_runner(build_dir: str | os.PathLike, source_dir: str | os.PathLike = SOURCE_DIR,
                 cmake_args: tuple[str, ...] = (), prefix: str | os.PathLike | None = None) -> Path:
    """Configure and build ``edge_sam_runner`` against the installed executorch wheel (or the
    ExecuTorch package at ``prefix``, e.g. another architecture's wheel); its path."""
    source_dir, build_dir = Path(source_dir), Path(build_dir)
    if not (source_dir / "CMakeLists.txt").is_file():
        raise NativeRunnerError(f"{source_dir} has no CMakeLists.txt: build the runner from an edge_sam source checkout")
    cmake = _tool("cmake")
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")) and not os.environ.get("CXX"):
        raise NativeRunnerError("no C++ compiler found (c++, g++, clang++ or $CXX): the native runner needs one")
    made_elsewhere = configured_elsewhere(build_dir, source_dir)
    if made_elsewhere:
        print(f"{build_dir} was configured {made_elsewhere}: configuring it afresh", file=sys.stderr)
        shutil.rmtree(build_dir)
    steps = [
        [cmake, "-S", str(source_dir), "-B", str(build_dir), f"-DCMAKE_PREFIX_PATH={prefix or package_prefix()}", *cmake_args],
        [cmake, "--build", str(build_dir), "--parallel"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in (done.stderr + done.stdout).splitlines() if "error" in line.lower()]
            raise NativeRunnerError(f"{' '.join(step[:2])} failed: {(errors or ['no output'])[0].strip()}")
    return build_dir / "apps" / "cpp" / RUNNER_NAME


@dataclass(frozen=True)
class NativeRun:
    mask: np.ndarray  # HxW bool
    encoder_ms: tuple[float, float]  # (mean, min)
    context_ms: tuple[float, float]
    decoder_ms: tuple[float, float]
    output: str


def run_runner(
    binary: str | os.PathLike, artifact_dir: str | os.PathLike, image_ppm: str | os.PathLike, out_pgm: str | os.PathLike,
    points: list[tuple[float, float, float]] = (), box: tuple[float, float, float, float] | None = None, runs: int = 1,
    warmup: int = 0,
) -> NativeRun:
    """Run the native runner on one artifact and image; its mask and latencies (``runs`` timed
    runs of each program after ``warmup`` untimed ones)."""
    artifact_dir = Path(artifact_dir)
    command = [str(binary), *runner_program_flags(artifact_dir), "--image", str(image_ppm), "--out", str(out_pgm), "--runs", str(runs), "--warmup", str(warmup)]
    for x, y, label in points:
        command += ["--point", f"{x},{y},{label}"]
    if box is not None:
        command += ["--box", ",".join(str(v) for v in box)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        message = [line for line in done.stderr.splitlines() if line.startswith(f"{Path(binary).name}: error:")]
        raise NativeRunnerError((message or [done.stderr.strip() or f"exit status {done.returncode}"])[-1])
    latency = parse_latency(done.stdout)
    return NativeRun(read_pgm(out_pgm) > 0, latency["encoder"], latency["context"], latency["decoder"], done.stdout)


def runner_program_flags(artifact_dir: str | os.PathLike, prefix: str | None = None) -> list[str]:
    """``--encoder/--context/--decoder`` for the runner, from the artifact's manifest (paths under
    ``prefix`` instead of ``artifact_dir`` where the runner sees the artifact elsewhere)."""
    from edge_sam.graph_contract import ROLES
    from edge_sam.targets.core.manifest import read_manifest

    manifest = read_manifest(artifact_dir)
    folder = Path(prefix) if prefix is not None else Path(artifact_dir)
    return [arg for role in ROLES for arg in (f"--{role}", (folder / manifest.graph(role).file).as_posix())]


def parse_latency(stdout: str) -> dict[str, tuple[float, float]]:
    """The runner's "encoder: mean X ms, min Y ms over N runs" lines -> {role: (mean, min)} ms."""
    return {name: (float(mean), float(low)) for name, mean, low, _ in _LATENCY.findall(stdout)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge_sam.targets.executorch.native", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    to_ppm = commands.add_parser("to-ppm", help="convert an image file to the binary PPM the runner reads")
    to_ppm.add_argument("image")
    to_ppm.add_argument("out")
    commands.add_parser("prefix", help="print the CMAKE_PREFIX_PATH of the installed executorch wheel")
    args = parser.parse_args(argv)
    try:
        if args.command == "prefix":
            print(package_prefix())
        else:
            write_ppm(args.out, read_image(args.image))
    except EdgeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
