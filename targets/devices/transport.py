"""How edge_sam reaches a device: push files to it, run a command there, pull files back.

:class:`Transport` is those three calls plus a scratch folder on the device that is always
removed afterwards (:meth:`Transport.workspace`). Implementations:

- :class:`LocalTransport` (``local``): this machine, through a subprocess and a temp folder:
  the remote protocol without a network (the native runner on the host, tests);
- :class:`SshTransport` (``ssh://user@host[:port]``): OpenSSH's ``ssh`` client, files as tar
  streams over the same connection (the device needs ``sh`` and ``tar``, not scp or sftp);
- :class:`AdbTransport` (``adb:SERIAL``): ``adb push`` / ``adb shell`` / ``adb pull`` for an
  Android device (not run against a phone in this project: tests/test_emulated_aarch64.py drives
  Debian's adb client against a fake adb server whose device is the emulated aarch64 place, and
  tests/test_remote.py a fake ``adb`` client that runs anywhere);
- :class:`~edge_sam.targets.devices.emulated.EmulatedTransport` (``aarch64[-CPU]:DIR``): an arm64
  userland under QEMU user-mode emulation (its own module; timings marked emulated).

A host that refuses, a dropped connection, a command that does not exist on the device: each
is one :class:`TransportError` line naming the device.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_sam.errors import EdgeSamError

DEFAULT_TIMEOUT_S = 3600.0


class TransportError(EdgeSamError):
    """The device cannot be reached, the connection dropped, or a command failed there."""


@dataclass(frozen=True)
class Completed:
    """A command that ran on the device (any exit status; the caller decides what failed)."""

    returncode: int
    stdout: str
    stderr: str

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


class Transport(ABC):
    """Push, run, pull on one device; ``label`` names it in reports and errors."""

    label: str
    temp_root: str = "/tmp"  # where workspace() makes its scratch folder on the device
    emulated: bool = False  # an emulator's timings are not a device's: marked in reports, refused by bench
    default_python: str = "python3"  # the device's interpreter when none is given
    native_runner: Path | None = None  # a native runner built for the device, when the place has one
    setup_command: str | None = None  # what (re)makes the device's software, when edge_sam made it

    @abstractmethod
    def push(self, local: Path, remote_dir: str) -> None:
        """Copy a file or a folder (recursively) into ``remote_dir`` on the device."""

    @abstractmethod
    def pull(self, remote_path: str, local_dir: Path) -> Path:
        """Copy a file or folder from the device into ``local_dir``; the local path."""

    @abstractmethod
    def _execute(self, shell_command: str, timeout: float) -> Completed:
        """Run one ``sh`` command line on the device."""

    def run(self, argv: Sequence[str], cwd: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> Completed:
        """Run ``argv`` on the device (quoted here, once, for its shell), in ``cwd``."""
        command = shlex.join(argv)
        if cwd is not None:
            command = f"cd {shlex.quote(cwd)} && {command}"
        return self._execute(command, timeout)

    def run_checked(self, argv: Sequence[str], cwd: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                    what: str | None = None) -> Completed:
        """:meth:`run`, with a non-zero exit as one TransportError quoting the device's last error line."""
        done = self.run(argv, cwd, timeout)
        if done.returncode != 0:
            if done.returncode == 127:
                raise TransportError(f"{self.label}: {argv[0]} not found on the device ({done.last_error_line()})")
            raise TransportError(f"{self.label}: {what or argv[0]} failed: {done.last_error_line()}")
        return done

    @contextmanager
    def workspace(self) -> Iterator[str]:
        """A fresh scratch folder on the device, removed when the block ends, however it ends."""
        template = f"{self.temp_root.rstrip('/')}/edge-sam.XXXXXX"
        path = self.run_checked(["mktemp", "-d", template], what="making a scratch folder").stdout.strip()
        try:
            yield path
        except BaseException:
            try:
                self.remove(path)
            except TransportError as cleanup:  # the connection is gone: say what was left, keep the cause
                warnings.warn(f"{path} may be left on the device: {cleanup}", stacklevel=3)
            raise
        self.remove(path)

    def remove(self, remote_path: str) -> None:
        done = self.run(["rm", "-rf", remote_path], timeout=120)
        if done.returncode != 0:
            raise TransportError(f"{self.label}: could not remove {remote_path}: {done.last_error_line()}")

    def machine(self) -> dict[str, Any]:
        """The device's architecture, CPU model, core count and OS, read on the device."""
        script = ("uname -m; uname -sr; (nproc || getconf _NPROCESSORS_ONLN) 2>/dev/null; "
                  "(tr -d '\\0' < /proc/device-tree/model; echo) 2>/dev/null || echo; "
                  "grep -m1 -E '^(model name|Hardware|Processor|cpu model)' /proc/cpuinfo 2>/dev/null | sed 's/^[^:]*: *//'")
        lines = self._execute(script, 60).stdout.splitlines() + [""] * 5
        arch, system, cpus, board, cpu = (line.strip() for line in lines[:5])
        return {"arch": arch, "os": system, "cpu_count": int(cpus) if cpus.isdigit() else None,
                "board": board or None, "cpu": cpu or board or arch}


# -- this machine -----------------------------------------------------------------------------------

def copy_into(source: Path, folder: Path) -> Path:
    """``source`` (a file or a folder) copied into ``folder`` under its own name: a push or pull
    between folders this machine sees (a local place, an emulated userland)."""
    destination = folder / source.name
    if source.is_dir():
        shutil.copytree(source, destination)
    else:
        shutil.copy2(source, destination)
    return destination


class LocalTransport(Transport):
    """This machine, through ``sh`` in a subprocess: the remote protocol without a connection."""

    label = "local"
    default_python = sys.executable  # this machine: the interpreter running us

    def push(self, local: Path, remote_dir: str) -> None:
        copy_into(Path(local), Path(remote_dir))

    def pull(self, remote_path: str, local_dir: Path) -> Path:
        source = Path(remote_path)
        if not source.exists():
            raise TransportError(f"{self.label}: {remote_path} does not exist")
        return copy_into(source, Path(local_dir))

    def _execute(self, shell_command: str, timeout: float) -> Completed:
        return _completed(["sh", "-c", shell_command], timeout, self.label)


# -- ssh --------------------------------------------------------------------------------------------

class SshTransport(Transport):
    """A host with sshd, through the OpenSSH client (keys and host keys as ssh itself finds them,
    or from ``config``, an ssh_config file passed as ``ssh -F``). Never prompts: BatchMode."""

    def __init__(self, host: str, user: str | None = None, port: int | None = None,
                 config: str | os.PathLike | None = None) -> None:
        self.host, self.user, self.port, self.config = host, user, port, config
        self.label = f"ssh://{user + '@' if user else ''}{host}{f':{port}' if port else ''}"
        self._ssh = shutil.which("ssh")
        if self._ssh is None:
            raise TransportError("ssh not found on PATH: install the OpenSSH client to validate over ssh")

    def _ssh_command(self, remote_command: str) -> list[str]:
        command = [self._ssh, "-o", "BatchMode=yes", "-o", "ConnectTimeout=15",
                   "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if self.config:
            command += ["-F", str(self.config)]
        if self.port:
            command += ["-p", str(self.port)]
        if self.user:
            command += ["-l", self.user]
        return [*command, "--", self.host, remote_command]

    def _execute(self, shell_command: str, timeout: float) -> Completed:
        done = _completed(self._ssh_command(shell_command), timeout, self.label)
        if done.returncode == 255:  # ssh's own failure: refused, unreachable, auth, dropped
            raise TransportError(f"{self.label}: {done.last_error_line()}")
        return done

    def push(self, local: Path, remote_dir: str) -> None:
        """A tar stream into ``tar -x`` on the device, over the ssh connection."""
        local = Path(local)
        command = self._ssh_command(f"tar -C {shlex.quote(remote_dir)} -xf -")
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
            try:
                with tarfile.open(fileobj=process.stdin, mode="w|") as archive:
                    archive.add(local, arcname=local.name)
                process.stdin.close()
            except BrokenPipeError:
                pass  # the device went away: the exit status and stderr below say why
            returncode = process.wait()
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
        if returncode != 0:
            raise TransportError(f"{self.label}: pushing {local.name} failed: {Completed(returncode, '', stderr).last_error_line()}")

    def pull(self, remote_path: str, local_dir: Path) -> Path:
        """``tar -c`` on the device, unpacked here (only plain files and folders are accepted)."""
        parent, name = os.path.split(remote_path.rstrip("/"))
        command = self._ssh_command(f"tar -C {shlex.quote(parent or '/')} -cf - {shlex.quote(name)}")
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
            try:
                with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
                    archive.extractall(local_dir, filter="data")
            except tarfile.TarError:
                pass  # an empty or cut stream: the exit status and stderr below say why
            returncode = process.wait()
            errors.seek(0)
            stderr = errors.read().decode(errors="replace")
        if returncode != 0:
            raise TransportError(f"{self.label}: pulling {remote_path} failed: {Completed(returncode, '', stderr).last_error_line()}")
        return Path(local_dir) / name


# -- adb --------------------------------------------------------------------------------------------

class AdbTransport(Transport):
    """An Android device through adb (``adb -s SERIAL push|shell|pull``), scratch space under
    /data/local/tmp (writable and executable for the shell user)."""

    temp_root = "/data/local/tmp"

    def __init__(self, serial: str | None = None) -> None:
        self.serial = serial
        self.label = f"adb:{serial}" if serial else "adb"
        self._adb = shutil.which("adb")
        if self._adb is None:
            raise TransportError("adb not found on PATH: install Android platform-tools to validate on an Android device")

    def _adb_command(self, *args: str) -> list[str]:
        return [self._adb, *(["-s", self.serial] if self.serial else []), *args]

    def _execute(self, shell_command: str, timeout: float) -> Completed:
        # adb shell (protocol v2, Android 7+) returns the command's own exit status.
        done = _completed(self._adb_command("shell", shell_command), timeout, self.label)
        if done.returncode != 0 and re.search(r"device .*not found|no devices|device offline|unauthorized", done.stderr):
            raise TransportError(f"{self.label}: {done.last_error_line()}")
        return done

    def push(self, local: Path, remote_dir: str) -> None:
        done = _completed(self._adb_command("push", str(local), f"{remote_dir.rstrip('/')}/"), DEFAULT_TIMEOUT_S, self.label)
        if done.returncode != 0:
            raise TransportError(f"{self.label}: adb push {Path(local).name} failed: {_adb_error_line(done)}")

    def pull(self, remote_path: str, local_dir: Path) -> Path:
        # adb pull copies *into* LOCAL only when LOCAL is an existing folder; otherwise it makes
        # LOCAL the copy itself (and the path returned below would not exist).
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        done = _completed(self._adb_command("pull", remote_path, str(local_dir)), DEFAULT_TIMEOUT_S, self.label)
        if done.returncode != 0:
            raise TransportError(f"{self.label}: adb pull {remote_path} failed: {_adb_error_line(done)}")
        return Path(local_dir) / os.path.basename(remote_path.rstrip("/"))


def _adb_error_line(done: Completed) -> str:
    """Why an adb push or pull failed: platform-tools' adb prints its push/pull errors on stdout
    ("adb: error: failed to stat remote object ..."), other errors on stderr."""
    return done.last_error_line() if done.stderr.strip() else Completed(done.returncode, "", done.stdout).last_error_line()


def _completed(command: list[str], timeout: float, label: str) -> Completed:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TransportError(f"{label}: no answer within {timeout:.0f} s") from None
    return Completed(done.returncode, done.stdout, done.stderr)
