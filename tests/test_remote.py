"""Validation on a device: the transports (this machine; ssh against an sshd this module starts on
127.0.0.1 with keys made for the test; adb against a fake ``adb`` on PATH that answers push, shell,
pull and devices as adb does, over a device folder in tmp_path, and records every call), the native
(C++) and Python device programs, and the device row in the drift report, equal to the runner here."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_programs, require_toolchain, toolchain_missing

import edge_sam
from edge_sam.apps import cli
from edge_sam.errors import EdgeSamError
from edge_sam.eval.metrics import mask_iou
from edge_sam.targets import get_target, load_runner
from edge_sam.fixed_prompts import grid_prompts
from edge_sam.targets.devices.device_runner import ImageJob, Query, RemoteSettings, run_on_device
from edge_sam.targets.devices.places import transport_for
from edge_sam.targets.devices.transport import AdbTransport, LocalTransport, SshTransport, TransportError
from edge_sam.targets.validation.drift import full_size_masks
from edge_sam.transforms import write_image

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
# Walks up from this shell to the sshd process serving the connection and kills it: the
# connection drops in the middle of a command, as when a device goes away.
KILL_MY_SSHD_SESSION = (
    'p=$$; while [ "$p" -gt 1 ]; do case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; exit 0;; esac; '
    'p=$(cut -d" " -f4 /proc/$p/stat); done; exit 3'
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """An sshd on 127.0.0.1 (a free high port) that lets this user in with a key made here; the
    ssh_config for the client, and the scratch root the transports use, are yielded with it."""
    if not Path(SSHD).is_file() or shutil.which("ssh-keygen") is None:
        toolchain_missing("sshd is not installed (Debian: apt-get install -y openssh-server; .ci/run does it)")
    root = tmp_path_factory.mktemp("sshd")
    host_public = _keygen(root / "host_key")
    (root / "authorized_keys").write_text(_keygen(root / "client_key") + "\n")
    port = _free_port()
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}", f"PidFile {root / 'sshd.pid'}",
        f"AuthorizedKeysFile {root / 'authorized_keys'}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        "LogLevel ERROR",
    ]) + "\n")
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_public}\n")
    (root / "ssh_config").write_text("\n".join([
        "Host 127.0.0.1", f"  IdentityFile {root / 'client_key'}", "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {root / 'known_hosts'}", "  GlobalKnownHostsFile /dev/null", "  StrictHostKeyChecking yes",
    ]) + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # the privilege-separation directory sshd wants when run as root
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"sshd did not start: {server.stderr.read()[-500:]}")
            time.sleep(0.2)
    scratch = root / "device-tmp"
    scratch.mkdir()
    yield {"place": f"ssh://{getpass.getuser()}@127.0.0.1:{port}", "config": root / "ssh_config", "port": port,
           "scratch": scratch}
    server.terminate()
    server.wait(timeout=20)


def _ssh(sshd) -> SshTransport:
    transport = transport_for(sshd["place"], sshd["config"])
    transport.temp_root = str(sshd["scratch"])
    return transport


def _local(tmp_path) -> LocalTransport:
    transport = LocalTransport()
    transport.temp_root = str(tmp_path)
    return transport


# A stand-in for Android's adb: the argument handling and messages of platform-tools' adb for the
# four commands the transport uses (push and pull print their errors on stdout, as adb 29 does),
# over a device whose file system is the folder $FAKE_ADB_ROOT (device path P is $FAKE_ADB_ROOT/P).
# ``shell`` runs the one command line with sh, in the device's /; the only device folder the
# transport names, /data/local/tmp, is mapped into the root in the command and back in its output.
# Every call's arguments go to $FAKE_ADB_LOG, one JSON list a line. tests/test_emulated_aarch64.py
# drives Debian's real adb client against a fake adb server instead, with the emulated aarch64
# place as the device (it needs root and QEMU; this one runs anywhere).
FAKE_ADB = r"""
import json, os, shutil, subprocess, sys

root, serials = os.environ["FAKE_ADB_ROOT"], os.environ["FAKE_ADB_SERIALS"].split()
args = sys.argv[1:]
with open(os.environ["FAKE_ADB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\n")

def fail(message, stream=sys.stderr):
    stream.write(message + "\n")
    sys.exit(1)

serial = None
if args[:1] == ["-s"]:
    serial, args = args[1], args[2:]
if not args:
    fail("adb: usage: no command specified")
if args[0] == "devices":
    print("List of devices attached")
    for name in serials:
        print(f"{name}\tdevice")
    sys.exit(0)
if serial is None:
    if not serials:
        fail("error: no devices/emulators found")
    if len(serials) > 1:
        fail("error: more than one device/emulator")
elif serial not in serials:
    fail(f"error: device '{serial}' not found")

def on_device(path):
    if not path.startswith("/"):
        fail(f"adb: error: remote path must be absolute: '{path}'")
    return root + path

def copy(source, destination):
    (shutil.copytree if os.path.isdir(source) else shutil.copy2)(source, destination)

command, rest = args[0], args[1:]
if command == "push":  # adb push LOCAL... REMOTE: into REMOTE when it is a folder, else as REMOTE
    if len(rest) < 2:
        fail("adb: error: push requires an argument")
    *sources, remote = rest
    target = on_device(remote)
    for source in sources:
        if not os.path.exists(source):
            fail(f"adb: error: cannot stat '{source}': No such file or directory", sys.stdout)
        into = os.path.isdir(target)
        if remote.endswith("/") and not into and not os.path.isdir(os.path.dirname(target.rstrip("/"))):
            fail(f"adb: error: failed to copy '{source}' to '{remote}': remote No such file or directory", sys.stdout)
        copy(source, os.path.join(target, os.path.basename(source.rstrip("/"))) if into else target.rstrip("/"))
    print(f"{len(sources)} file(s) pushed. 0 file(s) skipped.")
elif command == "pull":  # adb pull REMOTE LOCAL: into LOCAL when it is an existing folder, else as LOCAL
    if len(rest) != 2:
        fail("adb: error: pull requires an argument")
    remote, local = rest
    source = on_device(remote)
    if not os.path.exists(source):
        fail(f"adb: error: failed to stat remote object '{remote}': No such file or directory", sys.stdout)
    if not os.path.exists(local) and not os.path.isdir(os.path.dirname(os.path.abspath(local))):
        fail(f"adb: error: cannot create file/directory '{local}': No such file or directory", sys.stdout)
    copy(source, os.path.join(local, os.path.basename(remote.rstrip("/"))) if os.path.isdir(local) else local)
    print(f"{remote}: 1 file pulled. 0 file(s) skipped.")
elif command == "shell":  # one argument: the device's sh -c runs it; several: joined with spaces
    line = " ".join(rest).replace("/data/local/tmp", root + "/data/local/tmp")
    done = subprocess.run(["sh", "-c", line], cwd=root, capture_output=True, text=True)
    sys.stdout.write(done.stdout.replace(root, ""))
    sys.stderr.write(done.stderr.replace(root, ""))
    sys.exit(done.returncode)  # shell protocol v2 (Android 7+): the command's own exit status
else:
    fail(f"adb: unknown command {command}")
"""


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """A fake ``adb`` first on PATH, one device ``emulator-5554`` with an empty /data/local/tmp;
    yields its device root, that folder and ``calls()``: the argument lists adb got so far."""
    bin_dir, root = tmp_path / "fake-adb-bin", tmp_path / "fake-device"
    bin_dir.mkdir()
    scratch = root / "data" / "local" / "tmp"
    scratch.mkdir(parents=True)
    program = bin_dir / "adb"
    program.write_text(f"#!{sys.executable}\n{FAKE_ADB}")
    program.chmod(0o755)
    log = tmp_path / "adb-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_ROOT", str(root))
    monkeypatch.setenv("FAKE_ADB_LOG", str(log))
    monkeypatch.setenv("FAKE_ADB_SERIALS", "emulator-5554")

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return {"root": root, "scratch": scratch, "calls": calls, "serial": "emulator-5554"}


# -- the transports --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["local", "ssh", "adb"])
def test_push_run_pull_and_nothing_left_behind(kind, request, tmp_path):
    if kind == "ssh":
        sshd = request.getfixturevalue("sshd")
        scratch, transport = sshd["scratch"], _ssh(sshd)
    elif kind == "adb":
        adb = request.getfixturevalue("fake_adb")
        scratch, transport = adb["scratch"], transport_for(f"adb:{adb['serial']}")
    else:
        scratch = tmp_path / "device"
        scratch.mkdir()
        transport = _local(scratch)
    payload = tmp_path / "payload"
    (payload / "sub").mkdir(parents=True)
    (payload / "sub" / "data.bin").write_bytes(bytes(range(256)) * 10)
    with transport.workspace() as remote:
        transport.push(payload, remote)
        done = transport.run(["sh", "-c", "cp payload/sub/data.bin payload/copy.bin && echo ok"], cwd=remote)
        assert done.returncode == 0 and done.stdout.strip() == "ok"
        pulled = transport.pull(f"{remote}/payload", tmp_path / "back")
        assert (pulled / "copy.bin").read_bytes() == (payload / "sub" / "data.bin").read_bytes()
        assert transport.run(["false"]).returncode == 1
    assert list(scratch.iterdir()) == []
    machine = transport.machine()
    assert machine["arch"] and machine["cpu"] and machine["cpu_count"] >= 1


def test_ssh_failures_are_one_line_and_leave_nothing(sshd):
    refused = transport_for(f"ssh://{getpass.getuser()}@127.0.0.1:{_free_port()}", sshd["config"])
    with pytest.raises(TransportError, match=r"^ssh://.*127\.0\.0\.1.*: .*[Cc]onnection refused"):
        refused.run(["true"])
    transport = _ssh(sshd)
    with pytest.raises(TransportError, match=r"^ssh://.*: .*(closed|Broken pipe|reset|disconnect)") as dropped:
        with transport.workspace():
            transport.run(["sh", "-c", KILL_MY_SSHD_SESSION])
    assert "\n" not in str(dropped.value)
    assert list(sshd["scratch"].iterdir()) == []  # removed over a fresh connection
    with pytest.raises(TransportError, match="no-such-program not found on the device"):
        transport.run_checked(["no-such-program"])


def test_adb_missing_is_one_line(monkeypatch, tmp_path):
    """No adb on PATH: one line naming what to install. (A real adb client here would start its
    server daemon on port 5037; tests/test_emulated_aarch64.py runs Debian's client against a fake
    server on a port of its own.)"""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TransportError, match=r"^adb not found on PATH: install Android platform-tools"):
        transport_for("adb:no-such-serial")
    with pytest.raises(TransportError, match="unknown device 'ftp://host'"):
        transport_for("ftp://host")


def test_adb_commands_and_quoting(fake_adb, tmp_path):
    """The exact adb calls for a workspace, a push, a command and a pull, with names holding spaces,
    quotes and shell characters: each argument reaches the device's shell as one word."""
    serial, calls = fake_adb["serial"], fake_adb["calls"]
    transport = transport_for(f"adb:{serial}")
    assert isinstance(transport, AdbTransport) and transport.label == f"adb:{serial}"
    folder = tmp_path / "it's a \"job\" $HOME"
    folder.mkdir()
    (folder / "in put.txt").write_text("payload\n")
    words = ["a b", "it's", '"q"', "$HOME", "*", "; rm -rf /", ""]
    with transport.workspace() as remote:
        assert remote.startswith("/data/local/tmp/edge-sam.") and (fake_adb["root"] / remote[1:]).is_dir()
        transport.push(folder, remote)
        done = transport.run(["printf", "[%s]", *words], cwd=f"{remote}/{folder.name}")
        assert done.returncode == 0 and done.stdout == "".join(f"[{w}]" for w in words)
        transport.run_checked(["sh", "-c", 'cp "in put.txt" "out put.txt"'], cwd=f"{remote}/{folder.name}")
        pulled = transport.pull(f"{remote}/{folder.name}/out put.txt", tmp_path / "back here")
        assert pulled == tmp_path / "back here" / "out put.txt" and pulled.read_text() == "payload\n"
    assert list(fake_adb["scratch"].iterdir()) == []
    on_device = f"{remote}/it'\"'\"'s a \"job\" $HOME"
    assert calls() == [
        ["-s", serial, "shell", "mktemp -d /data/local/tmp/edge-sam.XXXXXX"],
        ["-s", serial, "push", str(folder), f"{remote}/"],
        ["-s", serial, "shell", f"cd '{on_device}' && printf '[%s]' 'a b' 'it'\"'\"'s' '\"q\"' '$HOME' '*' "
                                "'; rm -rf /' ''"],
        ["-s", serial, "shell", f"cd '{on_device}' && sh -c 'cp \"in put.txt\" \"out put.txt\"'"],
        ["-s", serial, "pull", f"{remote}/{folder.name}/out put.txt", str(tmp_path / "back here")],
        ["-s", serial, "shell", f"rm -rf {remote}"],
    ]
    assert shlex.split(calls()[2][3])[3:] == ["printf", "[%s]", *words]


def test_adb_failures_are_one_line(fake_adb, tmp_path, monkeypatch):
    """A serial adb does not know, a failed push or pull, a missing program, an exit status; with no
    serial, adb is called without -s."""
    calls = fake_adb["calls"]
    with pytest.raises(TransportError, match=r"^adb:no-such-serial: error: device 'no-such-serial' not found$"):
        transport_for("adb:no-such-serial").run(["true"])
    transport = transport_for("adb")
    assert transport.label == "adb" and transport.run(["sh", "-c", "exit 3"]).returncode == 3
    assert calls()[-1] == ["shell", "sh -c 'exit 3'"]
    with pytest.raises(TransportError, match="^adb: no-such-program not found on the device"):
        transport.run_checked(["no-such-program"])
    with pytest.raises(TransportError, match=r"^adb: adb push missing failed: adb: error: cannot stat '.*missing'"):
        transport.push(tmp_path / "missing", "/data/local/tmp")
    with pytest.raises(TransportError, match=r"^adb: adb pull /data/local/tmp/nothing failed: "
                                             r"adb: error: failed to stat remote object"):
        transport.pull("/data/local/tmp/nothing", tmp_path)
    monkeypatch.setenv("FAKE_ADB_SERIALS", "emulator-5554 emulator-5556")
    with pytest.raises(TransportError, match="^adb: could not remove /x: error: more than one device/emulator$"):
        transport.remove("/x")


# -- the device programs and the report --------------------------------------------------------------

@pytest.fixture(scope="module")
def et_fp32(tmp_path_factory, make_tiny_model):
    require_toolchain("executorch.runtime")
    root = tmp_path_factory.mktemp("et")
    model = make_tiny_model(seed=7)
    checkpoint = edge_sam.save_model(model, root / "tiny.safetensors")
    return get_target("executorch").export(model, "fp32", None, root / "et-fp32"), checkpoint


@pytest.fixture(scope="module")
def runner_binary(tmp_path_factory):
    require_programs(("cmake",), ("c++", "g++", "clang++"))  # the native runner needs CMake and a C++17 compiler
    from edge_sam.targets.executorch.native import build_runner

    return build_runner(tmp_path_factory.mktemp("native-build"))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, dogs):
    """Two crops of the real photo (nothing here is calibrated)."""
    folder = tmp_path_factory.mktemp("held-out")
    write_image(folder / "left.png", dogs[:400, :560])
    write_image(folder / "right.png", dogs[150:, 500:])
    return folder


@pytest.mark.slow
def test_missing_or_broken_runner_binary_is_one_line(et_fp32, tmp_path, dogs):
    artifact, _ = et_fp32
    job = [ImageJob(dogs[:64, :64].copy(), [Query(np.array([[10.0, 10.0]], np.float32), np.ones(1, np.float32))])]
    with pytest.raises(EdgeSamError, match="native runner binary not found"):
        run_on_device(artifact, _local(tmp_path), job, RemoteSettings(runner_binary=tmp_path / "missing"))
    broken = tmp_path / "broken"
    broken.write_text("not a program\n")
    (tmp_path / "device").mkdir()
    with pytest.raises(TransportError, match="the native runner cannot be run on the device"):
        run_on_device(artifact, _local(tmp_path / "device"), job, RemoteSettings(runner_binary=broken))
    assert list((tmp_path / "device").iterdir()) == []


@pytest.mark.slow
def test_native_runner_over_ssh_equals_the_runtime_here(et_fp32, runner_binary, sshd, dogs):
    """The C++ runner on the device (sshd on this machine) against the Python ExecuTorch runtime
    here: same .pte files, same image and prompts -> the same masks."""
    artifact, _ = et_fp32
    image = dogs[100:500, 200:800].copy()
    job = ImageJob(image, [Query(p.points, p.labels) for p in grid_prompts(image.shape[:2], 2)])
    results = run_on_device(artifact, _ssh(sshd), [job], RemoteSettings(runner_binary=runner_binary, runs=2))
    assert list(sshd["scratch"].iterdir()) == []
    here = load_runner(artifact)
    embedding = here.encode(image)
    assert np.allclose(results.embeddings[0], embedding, atol=1e-4)
    ious = []
    for query, (low_res, _) in zip(job.queries, results.outputs[0]):
        expected, _ = here.decode(embedding, query.points, query.labels, image.shape[:2])
        device_masks, here_masks = full_size_masks(low_res, image.shape[:2]), full_size_masks(expected, image.shape[:2])
        ious += [mask_iou(device_masks[k], here_masks[k]) for k in range(3)]
    # The runner's own C++ resize and normalization differ from torch's in the last float bits:
    # a pixel or two of a 400x600 mask may flip (measured: mean 1.0000, worst 0.99999).
    assert np.mean(ious) >= 0.99995 and min(ious) >= 0.9999
    assert results.encoder_s[0] > 0 and all(s > 0 for s in results.decoder_s[0])


@pytest.mark.slow
def test_validate_on_ssh_gives_the_rows_of_the_runner_here(et_fp32, runner_binary, sshd, held_out, tmp_path):
    """``edge-sam validate --on here --on local --on ssh://...``: the native runner on the device
    gives the row the runner here gives, and names the device's CPU."""
    artifact, checkpoint = et_fp32
    scratch_before = set(Path("/tmp").glob("edge-sam.*"))
    assert cli.main([
        "validate", str(artifact), "--checkpoint", str(checkpoint), "--images", str(held_out), "--report",
        str(tmp_path / "report"), "--no-memory", "--no-layers", "--on", "here", "--on", "local", "--on", sshd["place"],
        "--ssh-config", str(sshd["config"]), "--runner-binary", str(runner_binary),
    ]) == 0
    rows = json.loads((tmp_path / "report" / "report.json").read_text())["rows"]
    reference, here, local, remote = rows
    assert remote["label"].endswith(f"@ {sshd['place']}") and local["label"].endswith("@ local")
    cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("model name"))
    assert remote["device"].startswith(f"{sshd['place']}: {cpu}") and remote["remote_machine"]["cpu"] == cpu
    for key in ("mask_iou_mean", "mask_iou_worst", "top_choice_agreement", "n_prompts"):
        assert remote[key] == local[key]  # the same program on the same machine, over ssh or not
        assert remote[key] == pytest.approx(here[key], abs=1e-4)
    assert remote["embedding_cosine_mean"] == pytest.approx(here["embedding_cosine_mean"], abs=1e-6)
    assert remote["encoder_p50_s"] > 0 and remote["decoder_p50_s"] > 0
    assert set(Path("/tmp").glob("edge-sam.*")) == scratch_before  # the device's scratch folders are gone


@pytest.mark.slow
def test_python_program_over_ssh_is_the_runner_here(make_tiny_model, sshd, dogs, tmp_path):
    """A board with Python runs ``python -m edge_sam.targets.devices.worker``: the artifact's own
    runner (ONNX here), the same numbers, the device's peak RSS and its execution providers."""
    require_toolchain("onnxruntime")
    artifact = get_target("onnx").export(make_tiny_model(seed=7), "fp32", None, tmp_path / "onnx-fp32")
    image = dogs[:300, :400].copy()
    job = ImageJob(image, [Query(np.array([[200.0, 150.0]], np.float32), np.ones(1, np.float32))])
    settings = RemoteSettings(program="python", remote_python=sys.executable)
    results = run_on_device(artifact, _ssh(sshd), [job], settings, {"threads": 1})
    here = load_runner(artifact, threads=1)
    embedding = here.encode(image)
    low_res, iou = here.decode(embedding, job.queries[0].points, job.queries[0].labels, image.shape[:2])
    assert np.array_equal(results.embeddings[0], embedding)
    assert np.array_equal(results.outputs[0][0][0], low_res) and np.array_equal(results.outputs[0][0][1], iou)
    assert results.memory["peak_mb"] > 50
    assert results.runner["device"] == "CPUExecutionProvider" and results.runner["node_providers"]["encoder"]
    assert list(sshd["scratch"].iterdir()) == []
