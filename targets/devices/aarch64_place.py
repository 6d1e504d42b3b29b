"""``edge-sam device create aarch64 DIR``: make (or bring up to date) an emulated aarch64 place.

DIR/rootfs is an arm64 Debian 12 userland (mmdebstrap from Debian's packages, run through
qemu-user-static); DIR/wheels the aarch64 wheels of the runtimes, at the versions this host has
(the same artifact then runs on the same runtime version on both sides), installed into the
userland's venv from here with pip's --platform/--target (nothing is built or downloaded under
emulation; the wheels are deleted once installed); DIR/cpu-CPU the ARM /proc/cpuinfo and /sys/devices/system/cpu each emulated CPU gets; DIR/place.json what was
made: versions, each emulated CPU and the ARM features it reports, and how long each step took.
Every step is skipped when its result is already there, so a second run takes seconds.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.targets.devices.emulated import (CPUS, NATIVE_RUNNER, PYTHON, RECORD, SITE, VENV, EmulatedCpu, check_host, cpu_files_dir,
                                               write_cpu_files, install_project, run_in_userland)

CROSS_COMPILER = "aarch64-linux-gnu-g++"
SUITE = "bookworm"  # Debian 12: Python 3.11, as on the hosts this project runs on
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36  # bookworm's glibc 2.36: the newest manylinux tag its wheels may carry
# The runtimes (and what the device program imports besides edge_sam): distribution -> module to import.
RUNTIMES = {
    "numpy": "numpy",
    "opencv-python-headless": "cv2",
    "onnxruntime": "onnxruntime",
    "ai-edge-litert": "ai_edge_litert.interpreter",
    "torch": "torch",
    "executorch": "executorch.runtime",
    "safetensors": "safetensors",
    "tqdm": "tqdm",
}
# Installed without their dependencies: ExecuTorch's are its export toolchain (coremltools, pandas,
# scikit-learn...); its runtime imports only these of them (any version):
WITHOUT_DEPENDENCIES = ("executorch",)
EXECUTORCH_RUNTIME_IMPORTS = ("ruamel.yaml", "pyyaml", "tabulate")

# getauxval(AT_HWCAP) and (AT_HWCAP2) bits as Linux's arm64 uapi hwcap.h names them (the Features line).
HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
         "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
          "i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme sme_i16i64 sme_f64f64 sme_i8i32 sme_f16f32 sme_b16f32 "
          "sme_f32f32 sme_fa64 wfxt ebf16 sve_ebf16").split()
_PROBE_FEATURES = """
import ctypes, json
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
print(json.dumps([libc.getauxval(16), libc.getauxval(26)]))  # AT_HWCAP, AT_HWCAP2
"""
_PROBE_RUNTIMES = """
import importlib, importlib.metadata, json, platform, sys
modules = json.loads(sys.argv[1])
for module in modules.values():
    importlib.import_module(module)
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "packages": {dist: importlib.metadata.version(dist) for dist in modules}}))
"""


def create_place(place: str | os.PathLike, log=print) -> dict[str, Any]:
    """Make DIR's userland, wheels, venv and record, each step only if missing; the record."""
    place = Path(place).resolve()
    qemu = check_host(enable_binfmt=True)
    place.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}

    def step(name: str, done: bool, action) -> None:
        if done:
            return
        log(f"{name}...")
        start = time.perf_counter()
        action()
        seconds[name] = round(time.perf_counter() - start, 1)
        log(f"{name}: {seconds[name]:.0f} s")

    rootfs = place / "rootfs"
    wheels = place / "wheels"
    requirements = pinned_requirements()
    installed = place / "wheels-installed.json"
    step("userland (mmdebstrap)", (rootfs / "etc/debian_version").is_file(), lambda: make_rootfs(rootfs))
    cpus = {}
    for cpu in CPUS.values():
        features = probe_features(place, cpu)
        write_cpu_files(cpu_files_dir(place, cpu), cpu, features, os.cpu_count() or 1)
        cpus[cpu.name] = {"qemu_cpu": cpu.qemu_cpu, "stands_for": cpu.stands_for, "why": cpu.why, "features": features}
    step("venv", (rootfs / PYTHON.lstrip("/")).exists(), lambda: make_venv(place))
    wanted = json.dumps(requirements, sort_keys=True)
    fresh = installed.is_file() and installed.read_text() == wanted
    step("aarch64 wheels (download)", fresh, lambda: download_wheels(wheels, requirements))
    step("aarch64 wheels (install)", fresh, lambda: (install_wheels(rootfs, wheels, requirements), installed.write_text(wanted)))
    shutil.rmtree(wheels, ignore_errors=True)  # installed: 3 GB that only a change of versions would need again
    install_project(rootfs)
    step("native runner (cross-compiled)", False, lambda: build_native_runner(place))
    previous = json.loads((place / RECORD).read_text()) if (place / RECORD).is_file() else {}
    runtimes = {key: previous[key] for key in ("machine", "python", "packages") if key in previous}
    if len(runtimes) < 3 or "aarch64 wheels (install)" in seconds:  # imported once per installation (torch: ~1 min emulated)
        start = time.perf_counter()
        runtimes = probe_runtimes(place, CPUS["phone"])
        seconds["runtime import check (emulated)"] = round(time.perf_counter() - start, 1)
    record = {
        "debian": f"{SUITE} ({(rootfs / 'etc/debian_version').read_text().strip()})",
        "qemu": qemu, "cpus": cpus, **runtimes,
        "disk_mb": round(_size(rootfs) / 1e6),
        "created": previous.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps_s": {**previous.get("steps_s", {}), **seconds},
    }
    (place / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


def pinned_requirements() -> dict[str, str]:
    """distribution -> version for each runtime: the version installed here (its local tag, e.g.
    torch's +cpu, dropped), so the device runs what the host runs."""
    pins = {}
    for dist in RUNTIMES:
        try:
            pins[dist] = importlib.metadata.version(dist).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            raise EdgeSamError(f"{dist} is not installed here, and the emulated place installs the version this host has: "
                               "pip install 'edge-sam[all]'") from None
    return pins


def make_rootfs(rootfs: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise EdgeSamError("mmdebstrap not found: apt-get install mmdebstrap arch-test")
    partial = rootfs.with_name(rootfs.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(["mmdebstrap", "--arch=arm64", "--variant=minbase", "--mode=root",
                           f"--include=python{PYTHON_VERSION},python{PYTHON_VERSION}-venv,ca-certificates", SUITE, str(partial)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise EdgeSamError(f"mmdebstrap failed making the arm64 userland: {_last_line(done.stderr, done.returncode)}")
    partial.rename(rootfs)


def make_venv(place: Path) -> None:
    done = run_in_userland(place, CPUS["orin"], f"python{PYTHON_VERSION} -m venv --without-pip {VENV}", 600, str(place))
    if done.returncode != 0:
        raise EdgeSamError(f"could not make the userland's venv: {done.last_error_line()}")


def _pip_platform_args() -> list[str]:
    platforms = ["manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(17, GLIBC_MINOR + 1))]
    return [*(arg for p in platforms for arg in ("--platform", p)), "--python-version", PYTHON_VERSION,
            "--implementation", "cp", "--only-binary=:all:"]


def _specs(requirements: dict[str, str], with_dependencies: bool) -> list[str]:
    pinned = [f"{dist}=={version}" for dist, version in requirements.items() if (dist in WITHOUT_DEPENDENCIES) != with_dependencies]
    return pinned + list(EXECUTORCH_RUNTIME_IMPORTS) if with_dependencies else pinned


def download_wheels(wheels: Path, requirements: dict[str, str]) -> None:
    """The aarch64 wheels (and their dependencies') into ``wheels``, by pip on this host."""
    wheels.mkdir(parents=True, exist_ok=True)
    for with_dependencies in (True, False):
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(wheels), *_pip_platform_args(),
                   *([] if with_dependencies else ["--no-deps"]), *_specs(requirements, with_dependencies)]
        _pip(command)


def install_wheels(rootfs: Path, wheels: Path, requirements: dict[str, str]) -> None:
    """The downloaded wheels installed into the userland's venv by pip on this host (--target)."""
    site = rootfs / SITE.lstrip("/")
    for with_dependencies in (True, False):
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
                   "--target", str(site), "--upgrade", "--no-compile", *_pip_platform_args(),
                   *([] if with_dependencies else ["--no-deps"]), *_specs(requirements, with_dependencies)]
        _pip(command)


def _pip(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode == 0:
        return
    missing = re.search(r"No matching distribution found for (\S+)", done.stderr)
    if missing:
        raise EdgeSamError(f"{missing.group(1)} has no aarch64 wheel for CPython {PYTHON_VERSION} "
                           f"(manylinux, glibc <= 2.{GLIBC_MINOR}) in the package index")
    raise EdgeSamError(f"pip failed for the aarch64 userland: {_last_line(done.stderr, done.returncode)}")


def build_native_runner(place: Path) -> Path:
    """apps/cpp's runner cross-compiled with Debian's aarch64 toolchain against the userland's
    ExecuTorch wheel (its libraries found in the userland through the runner's RPATH); incremental."""
    from edge_sam.targets.executorch.native import build_runner

    compiler = shutil.which(CROSS_COMPILER)
    if compiler is None:
        raise EdgeSamError(f"{CROSS_COMPILER} not found: apt-get install g++-aarch64-linux-gnu (the native runner for aarch64)")
    executorch = Path(SITE) / "executorch"
    binary = build_runner(place / "native-build", prefix=place / "rootfs" / str(executorch).lstrip("/"), cmake_args=(
        "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64", f"-DCMAKE_CXX_COMPILER={compiler}",
        f"-DCMAKE_EXE_LINKER_FLAGS=-Wl,-rpath,{executorch / 'lib'}"))
    shutil.copy2(binary, place / NATIVE_RUNNER)
    return place / NATIVE_RUNNER


def probe_features(place: Path, cpu: EmulatedCpu) -> list[str]:
    """The ARM features ``cpu`` reports to programs (getauxval), by name."""
    if not (cpu_files_dir(place, cpu) / "cpuinfo").is_file():  # the probe reads none, but the userland mounts them
        write_cpu_files(cpu_files_dir(place, cpu), cpu, [], 1)
    out = _run_python(place, cpu, f"python{PYTHON_VERSION}", _PROBE_FEATURES, [],
                      f"the emulated {cpu.qemu_cpu} CPU could not run Python")
    hwcap, hwcap2 = json.loads(out)
    return [name for bits, names in ((hwcap, HWCAP), (hwcap2, HWCAP2)) for i, name in enumerate(names) if bits >> i & 1]


def probe_runtimes(place: Path, cpu: EmulatedCpu) -> dict[str, Any]:
    """Every runtime imported in the userland's venv: its machine, Python and package versions."""
    return json.loads(_run_python(place, cpu, PYTHON, _PROBE_RUNTIMES, [json.dumps(RUNTIMES)],
                                  "the userland's venv cannot import every runtime"))


def _run_python(place: Path, cpu: EmulatedCpu, python: str, code: str, args: list[str], failure: str) -> str:
    """``code`` run by the userland's ``python`` with ``args``; its last stdout line."""
    script = place / "rootfs/opt/edge-sam/probe.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(code)
    done = run_in_userland(place, cpu, shlex.join([python, "/opt/edge-sam/probe.py", *args]), 1800, str(place))
    if done.returncode != 0:
        raise EdgeSamError(f"{failure}: {done.last_error_line()}")
    return done.stdout.strip().splitlines()[-1]


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) if path.exists() else 0


def _last_line(text: str, returncode: int) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {returncode}"
