"""The emulated aarch64 place: an arm64 Debian userland under qemu-user-static with the runtimes'
aarch64 wheels (``edge-sam device create aarch64 DIR``), validated on with ``--on aarch64:DIR``.

The place is made once per machine under the repository's ignored .device-cache/ (several minutes
the first time: Debian's packages and the aarch64 wheels are downloaded; seconds afterwards) and
reused. Needs root (chroot, mounts in a private namespace) and Debian's qemu-user-static,
binfmt-support and mmdebstrap (.ci/run installs them).

The place is also an Android-like device for ``--on adb:SERIAL``: Debian's real ``adb`` client
(package adb, platform-tools 29) talks to a fake adb *server* (tests/fake_adb_server.py, on a port of
its own through $ANDROID_ADB_SERVER_PORT) whose one device is the place: the transport's commands,
its quoting and the client's own sync and shell protocols all run, the device side in the userland."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import require_programs, require_toolchain, toolchain_missing
from fake_adb_server import FakeAdbServer, client_version

import edge_sam
from edge_sam.apps import cli
from edge_sam.errors import EdgeSamError
from edge_sam.image_sources import image_folder
from edge_sam.targets import get_target
from edge_sam.targets.devices.aarch64_place import create_place, pinned_requirements
from edge_sam.targets.devices.emulated import NATIVE_RUNNER, SITE
from edge_sam.targets.devices.places import transport_for
from edge_sam.targets.devices.transport import TransportError
from edge_sam.transforms import write_image

PLACE = Path(__file__).resolve().parents[1] / ".device-cache" / "aarch64"
SERIAL = "emulator-5554"


@pytest.fixture(scope="module")
def place():
    """The cached place, made (or brought up to date) here; how long that took is printed."""
    if os.geteuid() != 0:
        toolchain_missing("the emulated aarch64 place needs root (chroot and mounts in a private namespace)")
    require_programs(("qemu-aarch64-static",), ("mmdebstrap",), ("update-binfmts",), ("unshare",))
    start = time.perf_counter()
    record = create_place(PLACE, log=lambda line: print(f"aarch64 place: {line}"))
    print(f"aarch64 place ready in {time.perf_counter() - start:.0f} s: {record['steps_s']}")
    return record


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, make_tiny_model, dogs):
    """A tiny model, its checkpoint, a folder to export into and two views of the photo to calibrate on."""
    root = tmp_path_factory.mktemp("aarch64-art")
    model = make_tiny_model(seed=3)
    checkpoint = edge_sam.save_model(model, root / "tiny.safetensors")
    calibration = root / "calib"
    calibration.mkdir()
    write_image(calibration / "a.png", dogs[::2, ::2])
    write_image(calibration / "b.png", dogs[100:500, 200:700])
    return model, checkpoint, root, image_folder(calibration)


@pytest.fixture(scope="module")
def int8_artifact(tiny):
    """The tiny model's static INT8 LiteRT export and its checkpoint."""
    require_toolchain("ai_edge_litert.interpreter")
    model, checkpoint, root, calibration = tiny
    return get_target("tflite").export(model, "int8", "static-conv-linear", root / "tflite-int8", calibration=calibration), checkpoint


@pytest.fixture(scope="module")
def et_int8_artifact(tiny):
    """The tiny model's static INT8 ExecuTorch (XNNPACK) export and its checkpoint: what an Android
    app or the C++ runner loads."""
    require_toolchain("executorch.runtime")
    model, checkpoint, root, calibration = tiny
    return get_target("executorch").export(model, "int8", "static-conv-linear", root / "et-int8", calibration=calibration), checkpoint


@pytest.fixture(scope="module")
def two_images(tmp_path_factory, dogs) -> Path:
    """Two crops of the photo, the images both validate tests run."""
    images = tmp_path_factory.mktemp("two-images")
    write_image(images / "left.png", dogs[:400, :560])
    write_image(images / "right.png", dogs[150:, 500:])
    return images


def test_place_records_its_arm_cpus_and_the_host_versions(place):
    """Each emulated CPU reports the features it was chosen for; the runtimes are the host's versions."""
    assert place["machine"] == "aarch64" and place["python"].startswith("3.11")
    phone, orin = set(place["cpus"]["phone"]["features"]), set(place["cpus"]["orin"]["features"])
    assert {"asimddp", "i8mm", "bf16", "fphp"} <= phone and not {"sve", "sme"} & phone
    assert {"asimddp", "fphp"} <= orin and not {"i8mm", "bf16", "sve"} & orin
    assert place["packages"] == pinned_requirements()


def test_int8_artifact_validated_on_the_emulated_place(place, int8_artifact, two_images, tmp_path):
    """Two images through the aarch64 builds on the emulated CPU: a row in the same report, close to
    the x86 row (ARM kernels round differently, but not by much), its latencies marked emulated."""
    artifact, checkpoint = int8_artifact
    report = tmp_path / "report"
    assert cli.main(["validate", str(artifact), "--checkpoint", str(checkpoint), "--images", str(two_images), "--report",
                     str(report), "--no-memory", "--no-layers", "--on", "here", "--on", f"aarch64:{PLACE}"]) == 0
    _, here, emulated = json.loads((report / "report.json").read_text())["rows"]
    assert emulated["emulated"] is True and "emulated" not in here
    assert emulated["remote_machine"]["arch"] == "aarch64" and "i8mm" in emulated["remote_machine"]["features"]
    assert emulated["device"].startswith(f"aarch64:{PLACE}: QEMU ")
    assert emulated["n_prompts"] == here["n_prompts"] > 0
    assert emulated["embedding_cosine_mean"] == pytest.approx(here["embedding_cosine_mean"], abs=2e-3)
    assert emulated["mask_iou_mean"] == pytest.approx(here["mask_iou_mean"], abs=0.02)
    table = (report / "report.md").read_text()
    assert table.count("(emulated)") >= 4  # the emulated row's four latency cells, and only those


def test_bench_refuses_an_emulated_place(place, int8_artifact, capsys):
    artifact, _ = int8_artifact
    assert cli.main(["bench", str(artifact), "--on", f"aarch64:{PLACE}"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"edge-sam: error: aarch64:{PLACE} is emulated: its timings are the emulator's, not a device's "
        "(validate --on measures its accuracy)")


def test_a_userland_missing_a_runtime_is_one_line(place, int8_artifact, tmp_path):
    """ai_edge_litert moved out of the userland's venv: the device program says which extra is missing."""
    artifact, checkpoint = int8_artifact
    package = PLACE / "rootfs" / SITE.lstrip("/") / "ai_edge_litert"
    aside = PLACE / "ai_edge_litert.aside"
    shutil.move(package, aside)
    try:
        with pytest.raises(EdgeSamError) as caught:
            cli_validate_once(artifact, checkpoint, tmp_path)
    finally:
        shutil.move(aside, package)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"aarch64:{PLACE}: the device lacks a runtime (")
    assert "ai_edge_litert" in message and message.endswith(f": edge-sam device create aarch64 {PLACE}")


def cli_validate_once(artifact, checkpoint, tmp_path):
    from edge_sam.targets.validation.validate import validate

    images = tmp_path / "one"
    images.mkdir()
    write_image(images / "a.png", np.full((64, 64, 3), 127, np.uint8))
    validate([artifact], checkpoint=checkpoint, images=images, on=[f"aarch64:{PLACE}"], measure_memory=False, layers=False)


def test_an_unknown_place_or_cpu_is_one_line(tmp_path):
    with pytest.raises(EdgeSamError, match=r"no emulated place there \(place.json missing\): edge-sam device create aarch64"):
        transport_for(f"aarch64:{tmp_path}")
    with pytest.raises(EdgeSamError, match="unknown emulated CPU 'pixel' \\(choose from phone, orin\\)"):
        transport_for(f"aarch64-pixel:{tmp_path}")


def test_cross_compiled_native_runner_gives_the_x86_runners_mask(place, make_tiny_model, tmp_path, dogs):
    """apps/cpp cross-compiled for aarch64 (Debian's toolchain, the userland's ExecuTorch wheel) runs
    in the place by default for ExecuTorch artifacts; on dogs.jpg its mask is the x86 runner's."""
    require_toolchain("executorch.runtime")
    require_programs(("cmake",), ("c++", "g++", "clang++"))
    from edge_sam.targets.devices.device_runner import ImageJob, Query, RemoteSettings, run_on_device
    from edge_sam.targets.devices.transport import LocalTransport
    from edge_sam.targets.executorch.native import build_runner
    from edge_sam.targets.validation.drift import full_size_masks
    from edge_sam.eval.metrics import mask_iou

    artifact = get_target("executorch").export(make_tiny_model(seed=5), "fp32", None, tmp_path / "et-fp32")
    h, w = dogs.shape[:2]
    job = [ImageJob(dogs, [Query(np.array([[w * 0.3, h * 0.55]], np.float32), np.ones(1, np.float32))])]
    x86 = run_on_device(artifact, LocalTransport(), job, RemoteSettings(runner_binary=build_runner(tmp_path / "build")))
    arm = run_on_device(artifact, transport_for(f"aarch64:{PLACE}"), job, RemoteSettings(program="native"))
    assert arm.machine["arch"] == "aarch64" and arm.machine["emulated"] is True
    x86_masks = full_size_masks(x86.outputs[0][0][0], (h, w))
    arm_masks = full_size_masks(arm.outputs[0][0][0], (h, w))
    top = int(np.argmax(x86.outputs[0][0][1][0]))
    assert mask_iou(arm_masks[top], x86_masks[top]) >= 0.999
    assert float(np.dot(arm.embeddings[0].ravel(), x86.embeddings[0].ravel()) / (
        np.linalg.norm(arm.embeddings[0]) * np.linalg.norm(x86.embeddings[0]))) > 0.9999


def test_an_artifact_the_devices_runtime_cannot_load_is_one_line(place, make_tiny_model, tmp_path):
    """An ONNX file stamped with an IR version newer than the device's onnxruntime reads (as from a
    newer exporter; its manifest hashes updated, so only the device can refuse it): one line from there."""
    onnx = require_toolchain("onnx")
    from edge_sam.targets.core.manifest import hash_files

    model = make_tiny_model(seed=2)
    checkpoint = edge_sam.save_model(model, tmp_path / "tiny.safetensors")
    artifact = get_target("onnx").export(model, "fp32", None, tmp_path / "onnx-fp32")
    graph = onnx.load(str(artifact / "encoder.onnx"))
    graph.ir_version = 99
    onnx.save(graph, str(artifact / "encoder.onnx"))
    manifest = json.loads((artifact / "manifest.json").read_text())

    def rehash(node):
        if isinstance(node, dict):
            if "encoder.onnx" in node and isinstance(node["encoder.onnx"], dict) and "sha256" in node["encoder.onnx"]:
                node.update(hash_files(artifact, ["encoder.onnx"]))
            for value in node.values():
                rehash(value)

    rehash(manifest)
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EdgeSamError) as caught:
        cli_validate_once(artifact, checkpoint, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"aarch64:{PLACE}: ") and "ir_version" in message.lower().replace(" ", "_")


def test_a_host_without_qemu_or_binfmt_is_one_line(monkeypatch, tmp_path):
    """No qemu-aarch64-static on PATH, then no enabled binfmt_misc entry for it: one line each, naming the fix."""
    from edge_sam.targets.devices import emulated

    if os.geteuid() != 0:
        toolchain_missing("the emulated aarch64 place needs root")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgeSamError, match=r"^qemu-aarch64-static not found: apt-get install qemu-user-static binfmt-support$"):
        emulated.check_host()
    monkeypatch.undo()
    monkeypatch.setattr(emulated, "BINFMT_ENTRY", tmp_path / "qemu-aarch64")  # an entry that is not registered
    with pytest.raises(EdgeSamError, match=r"^binfmt_misc has no enabled qemu-aarch64 entry with the F flag: mount -t binfmt_misc"):
        emulated.check_host()


# -- the place as an adb device: Debian's adb client, a fake adb server ---------------------------------

@pytest.fixture
def adb_place(place, monkeypatch):
    """Debian's adb client pointed ($ANDROID_ADB_SERVER_PORT) at a fake adb server whose one device,
    ``SERIAL``, is the place; yields the server (``services``: what the client asked, in order)."""
    (adb,) = require_programs(("adb",))
    with FakeAdbServer(transport_for(f"aarch64:{PLACE}"), SERIAL, client_version(adb)) as server:
        monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(server.port))
        yield server


def _scratch_folders() -> set[Path]:
    return set((PLACE / "rootfs/data/local/tmp").glob("edge-sam.*"))


def test_real_adb_client_pushes_runs_and_pulls_in_the_place(adb_place, tmp_path):
    """A workspace, a push of names with spaces, quotes and shell characters, a command whose every
    argument reaches the userland's sh as one word, a pushed script run (push keeps the mode), a
    pull, the folder removed: through the real client, checked on the device's side service by
    service as the client sent them."""
    transport = transport_for(f"adb:{SERIAL}")
    folder = tmp_path / "it's a \"job\" $HOME"
    folder.mkdir()
    (folder / "in put.txt").write_text("payload\n")
    (folder / "run me").write_text("#!/bin/sh\nuname -m\n")
    (folder / "run me").chmod(0o755)
    words = ["a b", "it's", '"q"', "$HOME", "*", "; rm -rf /", ""]
    before = _scratch_folders()
    with transport.workspace() as remote:
        job = f"{remote}/{folder.name}"
        assert remote.startswith("/data/local/tmp/edge-sam.") and (PLACE / "rootfs" / remote[1:]).is_dir()
        transport.push(folder, remote)
        done = transport.run(["printf", "[%s]", *words], cwd=job)
        assert done.returncode == 0 and done.stdout == "".join(f"[{w}]" for w in words)
        assert transport.run_checked(["./run me"], cwd=job).stdout == "aarch64\n"
        transport.run_checked(["sh", "-c", 'cp "in put.txt" "out put.txt"'], cwd=job)
        pulled = transport.pull(job, tmp_path / "back here")
        assert pulled == tmp_path / "back here" / folder.name
        assert (pulled / "out put.txt").read_text() == "payload\n" and (pulled / "run me").read_text().endswith("uname -m\n")
    assert _scratch_folders() == before
    on_device = f"{remote}/it'\"'\"'s a \"job\" $HOME"
    shells = [service.split(":", 1)[1] for service in adb_place.services if service.startswith("shell,v2,")]
    assert shells == [
        "mktemp -d /data/local/tmp/edge-sam.XXXXXX",
        f"cd '{on_device}' && printf '[%s]' 'a b' 'it'\"'\"'s' '\"q\"' '$HOME' '*' '; rm -rf /' ''",
        f"cd '{on_device}' && './run me'",
        f"cd '{on_device}' && sh -c 'cp \"in put.txt\" \"out put.txt\"'",
        f"rm -rf {remote}",
    ]
    sent = sorted(service for service in adb_place.services if service.startswith("sync:SEND "))
    assert sent == [f"sync:SEND {job}/{name},{(folder / name).stat().st_mode}" for name in ("in put.txt", "run me")]
    machine = transport.machine()  # read on the device: the emulated CPU's
    assert machine["arch"] == "aarch64" and machine["cpu_count"] == os.cpu_count()


def test_real_adb_client_failures_are_one_line(adb_place, tmp_path):
    """A serial the server does not know, a missing program, an exit status, a push of a missing
    file, a pull of a missing path (adb 29 prints push and pull errors on stdout); with no serial,
    the one device."""
    with pytest.raises(TransportError, match=r"^adb:no-such-serial: error: device 'no-such-serial' not found$"):
        transport_for("adb:no-such-serial").run(["true"])
    transport = transport_for("adb")
    assert transport.run(["uname", "-m"]).stdout == "aarch64\n"
    assert transport.run(["sh", "-c", "exit 3"]).returncode == 3
    with pytest.raises(TransportError, match="^adb: no-such-program not found on the device"):
        transport.run_checked(["no-such-program"])
    with pytest.raises(TransportError, match=r"^adb: adb push missing failed: adb: error: cannot stat '.*missing': "
                                             r"No such file or directory$"):
        transport.push(tmp_path / "missing", "/data/local/tmp")
    with pytest.raises(TransportError, match=r"^adb: adb pull /data/local/tmp/nothing failed: adb: error: failed to stat "
                                             r"remote object '/data/local/tmp/nothing': No such file or directory$"):
        transport.pull("/data/local/tmp/nothing", tmp_path)


def test_validate_over_adb_runs_the_native_runner_in_the_place(adb_place, et_int8_artifact, two_images, tmp_path):
    """``validate --on adb:SERIAL`` end to end, as on a phone: the adb transport pushes the ExecuTorch
    INT8 artifact and the C++ runner cross-compiled for aarch64 to /data/local/tmp, runs it there
    (XNNPACK's ARM int8 kernels on the emulated phone CPU) and pulls its outputs back: a row close to
    the same artifact's row on x86. The row is not marked emulated: nothing adb says tells a QEMU
    userland from a phone (the aarch64:DIR transport marks it)."""
    artifact, checkpoint = et_int8_artifact
    report = tmp_path / "report"
    before = _scratch_folders()
    start = time.perf_counter()
    assert cli.main(["validate", str(artifact), "--checkpoint", str(checkpoint), "--images", str(two_images), "--report",
                     str(report), "--no-memory", "--no-layers", "--on", "here", "--on", f"adb:{SERIAL}",
                     "--runner-binary", str(PLACE / NATIVE_RUNNER)]) == 0
    print(f"validate over adb: {time.perf_counter() - start:.0f} s")
    _, here, device = json.loads((report / "report.json").read_text())["rows"]
    assert device["label"].endswith(f"@ adb:{SERIAL}") and device["device_program"] == "native" and "emulated" not in device
    assert device["remote_machine"]["arch"] == "aarch64" and device["device"].startswith(f"adb:{SERIAL}: aarch64")
    assert device["n_prompts"] == here["n_prompts"] > 0
    # Measured (2026-12-07, AMD EPYC host with AVX-512 VNNI): IoU vs fp32 mean 0.961835 on ARM vs
    # 0.961835 on x86 (6e-7 apart), worst prompt equal, embedding cosine 1e-10 apart, the same top
    # choices. The bounds leave room for another x86 host's int8 kernels, not for a broken transfer.
    assert device["embedding_cosine_mean"] == pytest.approx(here["embedding_cosine_mean"], abs=1e-5)
    assert device["mask_iou_mean"] == pytest.approx(here["mask_iou_mean"], abs=1e-3)
    assert device["mask_iou_worst"] == pytest.approx(here["mask_iou_worst"], abs=5e-3)
    assert device["top_choice_agreement"] == pytest.approx(here["top_choice_agreement"], abs=0.05)  # one prompt in 25
    assert _scratch_folders() == before
    shells = [service.split(":", 1)[1] for service in adb_place.services if service.startswith("shell,v2,")]
    job = next(command for command in shells if command.endswith(" && sh job/run.sh"))
    remote = job.removeprefix("cd ").removesuffix(" && sh job/run.sh")
    assert f"sync:SEND {remote}/job/bin/{NATIVE_RUNNER},{0o100755}" in adb_place.services
    assert any(service.startswith(f"sync:RECV {remote}/job/out/") for service in adb_place.services)
