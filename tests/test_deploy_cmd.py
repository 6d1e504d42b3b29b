"""``edge-sam deploy``: the whole job on a tiny model and four images, its reuse of artifacts, its
app bundles, and every bad input as one line with nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import require_toolchain

from edge_sam import save_model
from edge_sam.apps.cli import main
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.pipeline.bundle import CONTRACT_FILE, README_FILE
from edge_sam.targets.pipeline.images import bundled_images, split_images

REPO = Path(__file__).parents[1]
SWIFT_SAMPLE = REPO / "apps" / "ios" / "EdgeSAMCoreML.swift"
FOUR_IMAGES = ("photo_crop_0.jpg", "photo_crop_2.jpg", "synth_01.jpg", "synth_04.jpg")
SPLIT = ["--calibration-images", "2", "--held-out-images", "2"]


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, make_tiny_model) -> Path:
    return save_model(make_tiny_model(), tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Four bundled images (two photo crops, two synthetic), for the tests that run deploy on the
    ONNX and Core ML targets."""
    for module in ("onnx", "onnxscript", "onnxruntime", "coremltools"):
        require_toolchain(module)
    folder = tmp_path_factory.mktemp("images")
    for name in FOUR_IMAGES:
        shutil.copyfile(bundled_images() / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_checkpoint, images):
    """One deploy of ONNX and Core ML, fp32 and int8, shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("deploy") / "out"
    result = run_cli("deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out", str(out),
                     "--targets", "onnx,coreml", "--precisions", "fp32,int8", *SPLIT)
    return out, result


def test_split_is_deterministic_disjoint_and_mixes_photo_and_synthetic():
    first = split_images(bundled_images(), 4, 8)
    assert first == split_images(bundled_images(), 4, 8)
    calibration, held_out = {p.name for p in first.calibration}, {p.name for p in first.held_out}
    assert len(calibration) == 4 and len(held_out) == 8 and not calibration & held_out
    for names in (calibration, held_out):
        assert any(n.startswith("photo_crop") for n in names) and any(n.startswith("synth") for n in names)


def test_bundled_images_are_small_and_packaged():
    files = sorted(bundled_images().glob("*.jpg"))
    assert len(files) >= 12 and all(f.stat().st_size < 25_000 for f in files)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"assets/deploy_images/*"' in pyproject and '"edge_sam.apps.web" = ["index.html"]' in pyproject


def test_deploy_writes_artifacts_report_and_summary(deployed):
    out, (code, stdout, stderr) = deployed
    assert code == 0, stderr[-2000:]
    steps = re.findall(r"^\[(\d+)/(\d+)\] (.+?): (.+) \((\d+\.\d) s\)$", stdout, re.M)
    assert len(steps) == 8 and all(total == "8" for _, total, *_ in steps), stdout
    assert [name for _, _, name, *_ in steps][2:6] == ["onnx-fp32", "onnx-int8", "coreml-fp32", "coreml-int8"]
    assert all(outcome == "built" for _, _, name, outcome, _ in steps[2:6])
    for name in ("coreml-fp32", "coreml-int8", "onnx-fp32", "onnx-int8"):
        assert read_manifest(out / name).precision == name.split("-")[1]
    assert (out / "report" / "report.html").is_file()
    summary = (out / "summary.md").read_text()
    assert "## What to ship" in summary and "| onnx | onnx-" in summary and "| coreml | coreml-" in summary
    for _, _, name, _, _ in steps:
        assert f"| {name} |" in summary  # every step with its seconds
    record = json.loads((out / "deploy.json").read_text())
    assert set(record["ship"]) == {"onnx", "coreml"}

    # Never measured on a calibration image: the int8 manifests' images vs the report's.
    report = json.loads((out / "report" / "report.json").read_text())
    calibrated = set(read_manifest(out / "onnx-int8").calibration["ids"])
    assert calibrated == set(record["images"]["calibration"]) and len(calibrated) == 2
    assert not calibrated & set(report["source"]["ids"])


def test_mobile_artifacts_carry_an_app_bundle(deployed):
    out, _ = deployed
    assert not (out / "onnx-fp32" / CONTRACT_FILE).exists()  # desktop/server: the manifest is enough
    for name in ("coreml-fp32", "coreml-int8"):
        manifest = read_manifest(out / name)
        contract = json.loads((out / name / CONTRACT_FILE).read_text())
        assert contract["preprocessing"] == manifest.preprocessing and contract["prompts"]["slots"] == 6
        assert contract["postprocessing"]["threshold"] == 0.0
        for graph in manifest.graphs:
            entry = contract["graphs"][graph.role]
            assert entry["file"] == graph.file
            assert [t["name"] for t in entry["inputs"]] == [t.name for t in graph.inputs]
            assert [t["shape"] for t in entry["outputs"]] == [list(t.shape) for t in graph.outputs]
        text = (out / name / README_FILE).read_text()
        assert "EdgeSAMCoreML.swift" in text and "`point_labels`" in text and "label -1" in text


def _swift_io_names(source: str) -> set[str]:
    """The feature names the Swift sample passes to or reads from Core ML."""
    names = set(re.findall(r'featureValue\(for: "(\w+)"\)', source))
    names |= set(re.findall(r'"(\w+)": MLFeatureValue', source))
    names |= set(re.findall(r'inputDescriptionsByName\["(\w+)"\]', source))
    return names


def _swift_manifest_fields(source: str) -> dict[str, set[str]]:
    """The manifest fields the Swift sample decodes: struct name -> its `let` properties."""
    top = source.split("struct EdgeSAMManifest: Decodable {", 1)[1].split("\n}\n", 1)[0]
    fields = {"EdgeSAMManifest": set(re.findall(r"^    let (\w+):", top, re.M))}
    for struct in ("Preprocessing", "Prompts"):
        body = top.split(f"struct {struct}: Decodable {{", 1)[1].split("}", 1)[0]
        fields[struct] = set(re.findall(r"let (\w+):", body))
    return fields


def test_swift_sample_uses_the_core_ml_artifacts_real_io_names(deployed):
    """The sample cannot be compiled here; its names are checked against a real Core ML export."""
    from edge_sam.targets.coreml.program import read_io

    out, _ = deployed
    artifact = out / "coreml-fp32"
    manifest = read_manifest(artifact)
    declared = set()
    for graph in manifest.graphs:
        inputs, outputs = read_io(artifact / graph.file)  # what the .mlpackage itself declares
        names = {spec.name for spec in graph.inputs} | {spec.name for spec in graph.outputs}
        assert names == {i.name for i in inputs} | {o.name for o in outputs}
        declared |= names
    source = SWIFT_SAMPLE.read_text()
    used = _swift_io_names(source)
    assert used == declared, f"Swift uses {sorted(used)}, the artifact has {sorted(declared)}"

    data = json.loads((artifact / "manifest.json").read_text())
    fields = _swift_manifest_fields(source)
    assert fields["EdgeSAMManifest"] <= set(data)
    assert fields["Preprocessing"] <= set(data["preprocessing"]) and fields["Prompts"] <= set(data["prompts"])


def test_rerun_reuses_and_force_rebuilds(deployed, tiny_checkpoint, images):
    out, _ = deployed

    def rerun(precisions: str, *extra: str) -> str:
        code, stdout, stderr = run_cli("deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images),
                                       "--out", str(out), "--targets", "onnx", "--precisions", precisions, *SPLIT,
                                       "--no-layers", *extra)
        assert code == 0, stderr[-2000:]
        return stdout

    stdout = rerun("fp32,int8")
    assert "onnx-fp32: reused (manifest matches)" in stdout and "onnx-int8: reused (manifest matches)" in stdout
    assert "onnx-fp32: rebuilt: --force" in rerun("fp32", "--force")
    assert read_manifest(out / "onnx-fp32").precision == "fp32"
    assert not list(out.glob(".*partial*")) and not list(out.glob(".*old*"))


def _bad_input_cases(tmp_path: Path, images: Path, checkpoint: Path) -> dict[str, tuple[list[str], str]]:
    few = tmp_path / "few"
    few.mkdir()
    for name in FOUR_IMAGES[:3]:
        shutil.copyfile(images / name, few / name)
    broken = tmp_path / "broken"
    shutil.copytree(images, broken)
    (broken / "synth_04.jpg").write_bytes(b"this is not a JPEG")
    return {
        "too few images": (["--images", str(few)], "holds 3 image(s); deploy needs 4 (2 to calibrate, 2 held out"),
        "unreadable image": (["--images", str(broken)], "cannot decode image:"),
        "unknown target": (["--targets", "onnx,tensorrtx"], "unknown target tensorrtx"),
        "unknown precision": (["--precisions", "int4"], "unknown precision int4"),
        "bad gate": (["--min-mask-iou", "1.5"], "--min-mask-iou must be in (0, 1]"),
        "unknown recipe": (["--recipe", "int3-magic"], "unknown quantization recipe 'int3-magic'"),
        "bad checkpoint": (["--checkpoint", str(tmp_path / "missing.pt")], "checkpoint not found"),
    }


@pytest.mark.parametrize("case", ["too few images", "unreadable image", "unknown target", "unknown precision",
                                  "bad gate", "unknown recipe", "bad checkpoint"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, images, tiny_checkpoint, case):
    extra, message = _bad_input_cases(tmp_path, images, tiny_checkpoint)[case]
    argv = ["deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out", str(tmp_path / "out"),
            "--targets", "onnx", *SPLIT]
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    code, _, err = run_cli(*argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("edge-sam: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


def test_out_folder_holding_something_else_is_refused(tmp_path, images, tiny_checkpoint):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli("deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out", str(out),
                           "--targets", "onnx", *SPLIT)
    assert code == 2 and err.count("\n") == 1 and "holds files edge-sam deploy did not write" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_missing_toolchain(tmp_path, images, tiny_checkpoint, monkeypatch):
    """coremltools made unimportable (as on a machine without the extra): named, it is one error;
    by default, one skip line and the other targets are built."""
    monkeypatch.setitem(sys.modules, "coremltools", None)
    argv = ["deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), *SPLIT, "--no-layers"]
    code, _, err = run_cli(*argv, "--out", str(tmp_path / "named"), "--targets", "coreml,onnx", "--precisions", "fp32")
    assert code == 2 and err.count("\n") == 1 and "target coreml cannot be built here" in err
    assert "pip install 'edge-sam[coreml]'" in err and not (tmp_path / "named").exists()

    monkeypatch.setattr("edge_sam.targets.pipeline.plan.target_names", lambda: ["coreml", "onnx"])
    code, stdout, err = run_cli(*argv, "--out", str(tmp_path / "default"), "--precisions", "fp32")
    assert code == 0, err[-2000:]
    assert re.search(r"^skipped coreml: coremltools is not installed: pip install 'edge-sam\[coreml\]'", stdout, re.M)
    assert (tmp_path / "default" / "onnx-fp32" / "manifest.json").is_file()
    assert "coreml" in (tmp_path / "default" / "summary.md").read_text().split("## Skipped")[1]


def test_interrupt_leaves_no_half_written_artifact(tmp_path, images, tiny_checkpoint, monkeypatch):
    """Ctrl-C after the graph files are written but before the artifact is complete."""
    from edge_sam.targets.onnx.target import OnnxTarget

    original = OnnxTarget.write_graphs

    def write_then_interrupt(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(OnnxTarget, "write_graphs", write_then_interrupt)
    out = tmp_path / "out"
    code, _, err = run_cli("deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out", str(out),
                           "--targets", "onnx", "--precisions", "fp32", *SPLIT)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "images"]  # no artifact, no partial folder


def test_choice_is_the_fastest_artifact_that_passes_the_gate():
    from edge_sam.targets.pipeline.summary import choose

    def row(name, iou, encoder_s, size=1):
        return {"target": name.split("-")[0], "artifact_dir": f"out/{name}", "mask_iou_mean": iou,
                "encoder_p50_s": encoder_s, "decoder_p50_s": 0.01, "bytes": size}

    rows = [row("onnx-fp32", 1.0, 0.9), row("onnx-int8", 0.97, 0.3), row("onnx-fp16", 0.999, 0.5),
            row("tflite-int8", 0.95, 0.2)]
    onnx, tflite, coreml = choose(rows, ("onnx", "tflite", "coreml"), 0.98)
    assert onnx.artifact == "onnx-fp16" and "fastest of 2 passing" in onnx.why and "next onnx-fp32" in onnx.why
    assert tflite.row is None and "best is tflite-int8 at mask IoU 0.9500" in tflite.why
    assert coreml.row is None and "no artifact was built" in coreml.why


def test_summary_says_what_to_try_when_int8_misses_the_gate():
    """Alternatives come from each failing target's declared schemes and activation widths."""
    from edge_sam.targets.pipeline.summary import int8_advice

    def row(target: str, precision: str, iou: float) -> dict:
        recipe = "static-conv-linear" if precision == "int8" else None
        return {"target": target, "precision": precision, "recipe": recipe, "mask_iou_mean": iou,
                "artifact_dir": f"out/{target}-{precision}"}

    passing = [row("onnx", "fp32", 1.0), row("onnx", "int8", 0.99), row("executorch", "int8", 0.985)]
    assert int8_advice(passing, 0.98, "ckpt.pt") == []
    advice = "\n".join(int8_advice([row("onnx", "fp32", 1.0), row("onnx", "int8", 0.95), row("executorch", "int8", 0.9)],
                                   0.98, "ckpt.pt"))
    assert "misses the gate on executorch, onnx" in advice
    assert "edge-sam quantize mixed --checkpoint ckpt.pt --images DIR --target executorch,onnx" in advice
    assert "`static-a16-conv-linear` (onnx)" in advice and "`dynamic-linear` (executorch, onnx)" in advice
    assert "w8-conv-linear" not in advice  # neither target takes weight-only recipes
