"""An aarch64 device that is not the host: an arm64 Debian userland run under QEMU user-mode
emulation (``aarch64:DIR``, made by ``edge-sam device create aarch64 DIR``).

The runtimes' ARM builds run there with their ARM kernels (XNNPACK's NEON / dot-product / i8mm
paths, ONNX Runtime's ARM MLAS), so the masks are the ARM kernels' masks; the emulator's speed
says nothing about a device's, so its timings are marked emulated and ``bench`` refuses it.

Each command runs in a private mount namespace (``unshare --mount``, so nothing stays mounted on
the host): /proc, /dev and /sys are mounted into the userland, with an ARM /proc/cpuinfo and
/sys/devices/system/cpu written from the features the emulated CPU reports (Debian 12's QEMU shows
the host's x86 cpuinfo, and onnxruntime crashes reading it); then ``chroot`` runs the command, its aarch64
binaries through the kernel's binfmt_misc entry for qemu-aarch64 (with QEMU_CPU set).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sam.errors import EdgeSamError
from edge_sam.targets.devices.transport import Completed, Transport, TransportError, copy_into

VENV = "/opt/edge-sam/venv"  # the userland's Python environment (the runtimes and edge_sam)
PYTHON = f"{VENV}/bin/python"
SITE = f"{VENV}/lib/python3.11/site-packages"
RECORD = "place.json"  # what `device create` made, beside the userland
NATIVE_RUNNER = "edge_sam_runner"  # apps/cpp cross-compiled for aarch64, beside the userland
BINFMT_ENTRY = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
QEMU = "qemu-aarch64-static"
_CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class EmulatedCpu:
    """A QEMU CPU model chosen to stand for a class of device, and why."""

    name: str
    qemu_cpu: str
    stands_for: str
    why: str
    midr: tuple[int, int, int]  # CPU implementer, architecture, part: the /proc/cpuinfo identity lines


# Debian 12's QEMU (7.2) names no CPU with i8mm; its `max` does, but with SME (XNNPACK then returns
# wrong results) and SVE (onnxruntime then does not finish): both switched off.
CPUS = {
    "phone": EmulatedCpu(
        "phone", "max,sve=off,sme=off", "a recent phone's big core (Cortex-A7xx / X class, ARMv9)",
        "dot product, i8mm and bf16, the ISA extensions XNNPACK and MLAS pick their int8 kernels by; "
        "SVE and SME off (phones' runtimes do not use them for these kernels, and QEMU 7.2 emulates them wrongly or very slowly)",
        (0x00, 0xF, 0x051)),  # QEMU's own MIDR for `max`: implementer 0 (software), part 'Q'
    "orin": EmulatedCpu(
        "orin", "cortex-a76", "Jetson Orin's Cortex-A78AE (ARMv8.2)",
        "dot product and fp16 arithmetic, no i8mm or bf16: the A78AE's feature set, which QEMU's cortex-a76 has",
        (0x41, 0x8, 0xD0B)),
}
DEFAULT_CPU = "phone"


def emulated_cpu(name: str) -> EmulatedCpu:
    if name not in CPUS:
        raise EdgeSamError(f"unknown emulated CPU '{name}' (choose from {', '.join(CPUS)})")
    return CPUS[name]


# -- the host's side: qemu, binfmt_misc, root ---------------------------------------------------------

def check_host(enable_binfmt: bool = False) -> str:
    """The qemu-aarch64 version, once the host can run aarch64 programs in a chroot; else one line
    saying what is missing (``enable_binfmt``: mount binfmt_misc and enable Debian's qemu-aarch64 entry)."""
    if os.geteuid() != 0:
        raise EdgeSamError("an emulated aarch64 place needs root (chroot and mounts in a private namespace)")
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise EdgeSamError(f"{QEMU} not found: apt-get install qemu-user-static binfmt-support")
    if not _binfmt_ready() and enable_binfmt:
        _enable_binfmt()
    if not _binfmt_ready():
        raise EdgeSamError("binfmt_misc has no enabled qemu-aarch64 entry with the F flag: mount -t binfmt_misc binfmt_misc "
                           "/proc/sys/fs/binfmt_misc && update-binfmts --enable qemu-aarch64 (Debian's binfmt-support)")
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return version.removeprefix("qemu-aarch64 version ").strip()


def _binfmt_ready() -> bool:
    try:
        entry = BINFMT_ENTRY.read_text()
    except OSError:
        return False
    flags = re.search(r"^flags: *(\S*)", entry, re.M)
    return entry.startswith("enabled") and flags is not None and "F" in flags.group(1)


def _enable_binfmt() -> None:
    if shutil.which("update-binfmts") is None:
        raise EdgeSamError("update-binfmts not found: apt-get install binfmt-support qemu-user-static")
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], capture_output=True)
    done = subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, text=True)
    if done.returncode != 0:
        line = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise EdgeSamError(f"could not enable binfmt_misc for qemu-aarch64: {line}")


# -- running in the userland ---------------------------------------------------------------------------

_ENTER = ('mount -t proc proc "$1/proc" && mount --bind "$2/cpuinfo" "$1/proc/cpuinfo" && mount --rbind /dev "$1/dev" '
          '&& mount --bind "$2/sys" "$1/sys" && exec chroot "$1" /bin/sh -c "$3"')


def userland_command(root: Path, cpu_files: Path, shell_command: str) -> list[str]:
    """The host command that runs ``shell_command`` with ``sh`` inside the userland."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", _ENTER, "sh", str(root), str(cpu_files), shell_command]


def userland_env(cpu: EmulatedCpu) -> dict[str, str]:
    """A clean environment for the userland (nothing of the host's Python leaks in) with QEMU's CPU."""
    return {"PATH": _CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TMPDIR": "/tmp", "QEMU_CPU": cpu.qemu_cpu}


def cpu_files_dir(place: Path, cpu: EmulatedCpu) -> Path:
    """Where ``cpu``'s /proc/cpuinfo and /sys/devices/system/cpu live (mounted over the userland's)."""
    return place / f"cpu-{cpu.name}"


def write_cpu_files(folder: Path, cpu: EmulatedCpu, features: list[str], count: int) -> None:
    """An arm64 /proc/cpuinfo and the /sys/devices/system/cpu files CPU-detection libraries read
    (cpuinfo, xbyak_aarch64: possible/present/online, each core's MIDR_EL1), for ``count`` cores."""
    implementer, architecture, part = cpu.midr
    block = (f"BogoMIPS\t: 50.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{implementer:02x}\n"
             f"CPU architecture: {architecture}\nCPU variant\t: 0x0\nCPU part\t: 0x{part:03x}\nCPU revision\t: 0\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpuinfo").write_text("".join(f"processor\t: {i}\n{block}\n" for i in range(count)))
    cpus = folder / "sys/devices/system/cpu"
    shutil.rmtree(cpus, ignore_errors=True)
    cpus.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpus / name).write_text(f"0-{count - 1}\n" if count > 1 else "0\n")
    midr = implementer << 24 | architecture << 16 | part << 4
    for i in range(count):
        (cpus / f"cpu{i}/regs/identification").mkdir(parents=True)
        (cpus / f"cpu{i}/regs/identification/midr_el1").write_text(f"0x{midr:016x}\n")


class EmulatedTransport(Transport):
    """``aarch64[-CPU]:DIR``: the userland under DIR/rootfs, its files reached through the host's file
    system and its commands run by QEMU emulating CPU (default phone). The project's own code is
    copied into the userland when the transport opens, so the device program is this checkout's."""

    emulated = True
    default_python = PYTHON

    def __init__(self, place: str | os.PathLike, cpu: str = DEFAULT_CPU) -> None:
        self.place = Path(place).resolve()
        self.cpu = emulated_cpu(cpu)
        self.label = f"aarch64{'' if cpu == DEFAULT_CPU else '-' + cpu}:{place}"
        record_path = self.place / RECORD
        if not record_path.is_file():
            raise TransportError(f"{self.label}: no emulated place there ({RECORD} missing): edge-sam device create aarch64 {place}")
        self.record = json.loads(record_path.read_text())
        self.root = self.place / "rootfs"
        runner = self.place / NATIVE_RUNNER
        self.native_runner = runner if runner.is_file() else None
        self.setup_command = f"edge-sam device create aarch64 {place}"
        self.qemu_version = check_host()
        install_project(self.root)

    def host_path(self, remote: str) -> Path:
        """Where the userland's absolute path ``remote`` lies on this host (its files are the host's)."""
        if not remote.startswith("/"):
            raise TransportError(f"{self.label}: {remote} is not an absolute path in the userland")
        return self.root / remote.lstrip("/")

    def _execute(self, shell_command: str, timeout: float) -> Completed:
        return run_in_userland(self.place, self.cpu, shell_command, timeout, self.label)

    def push(self, local: Path, remote_dir: str) -> None:
        copy_into(Path(local), self.host_path(remote_dir))

    def pull(self, remote_path: str, local_dir: Path) -> Path:
        source = self.host_path(remote_path)
        if not source.exists():
            raise TransportError(f"{self.label}: {remote_path} does not exist")
        return copy_into(source, Path(local_dir))

    def machine(self) -> dict[str, Any]:
        machine = super().machine()
        cpu = self.record["cpus"][self.cpu.name]
        machine.update(cpu=f"QEMU {self.qemu_version} -cpu {self.cpu.qemu_cpu} (emulated; stands for {self.cpu.stands_for})",
                       emulated=True, features=cpu["features"])
        return machine


def run_in_userland(place: Path, cpu: EmulatedCpu, shell_command: str, timeout: float, label: str) -> Completed:
    """``shell_command`` run by ``sh`` in ``place``'s userland on the emulated ``cpu``."""
    files = cpu_files_dir(place, cpu)
    if not (files / "cpuinfo").is_file():
        raise TransportError(f"{label}: {files.name}/cpuinfo missing: run edge-sam device create aarch64 {place} again")
    command = userland_command(place / "rootfs", files, shell_command)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=userland_env(cpu))
    except subprocess.TimeoutExpired:
        raise TransportError(f"{label}: no answer within {timeout:.0f} s") from None
    return Completed(done.returncode, done.stdout, done.stderr)


# -- the project inside the userland ------------------------------------------------------------------

def project_root() -> Path:
    """This checkout (the folder with pyproject.toml above the edge_sam package)."""
    import edge_sam

    root = Path(edge_sam.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise EdgeSamError(f"edge_sam at {root} is not a source checkout: an emulated place copies the project from one")
    return root


def install_project(rootfs: Path) -> None:
    """Copy the project's packages into the userland's site-packages, laid out as pyproject's
    package-dir lays them out when installed (edge_sam, edge_sam.targets from targets/, ...).
    Skipped when the sources are unchanged since the last copy; a new copy is swapped in whole."""
    root = project_root()
    mapping = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    site = rootfs / SITE.lstrip("/")
    if not site.is_dir():
        raise EdgeSamError(f"{rootfs} has no Python environment at {VENV}: run edge-sam device create aarch64 again")
    skip = ("__pycache__", "cpp", "ios", "web")
    digest = hashlib.sha256()
    for folder in sorted(set(mapping.values())):
        for file in sorted((root / folder).rglob("*")):
            if file.is_file() and not set(file.relative_to(root).parts) & set(skip) and file.suffix != ".pyc":
                digest.update(f"{file.relative_to(root)}\0{file.stat().st_size}\0{file.stat().st_mtime_ns}\n".encode())
    stamp = site / "edge_sam.source-digest"
    if stamp.is_file() and stamp.read_text() == digest.hexdigest() and (site / "edge_sam").is_dir():
        return
    fresh = Path(tempfile.mkdtemp(prefix="edge_sam.", dir=site))
    for package, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):  # parents first
        shutil.copytree(root / folder, fresh / Path(*package.split(".")), ignore=shutil.ignore_patterns(*skip, "*.pyc"),
                        dirs_exist_ok=True)
    old = site / "edge_sam.old"
    shutil.rmtree(old, ignore_errors=True)
    if (site / "edge_sam").exists():
        (site / "edge_sam").rename(old)
    (fresh / "edge_sam").rename(site / "edge_sam")
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(fresh, ignore_errors=True)
    stamp.write_text(digest.hexdigest())
