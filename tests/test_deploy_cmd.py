"""``edge-sam deploy``: the whole job on a tiny model and six images, its INT8 ladder, its reuse of
artifacts and of the searched recipe, its app bundles, and every bad input as one line with
nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
from conftest import ort_int8_saturates, require_toolchain

from edge_sam import save_model
from edge_sam.apps.cli import main
from edge_sam.targets.core.manifest import read_manifest
from edge_sam.targets.deploy.bundle import CONTRACT_FILE, README_FILE
from edge_sam.targets.deploy.images import bundled_images, split_images

REPO = Path(__file__).parents[1]
SWIFT_SAMPLE = REPO / "apps" / "ios" / "EdgeSAMCoreML.swift"
SIX_IMAGES = ("photo_chelsea_0.jpg", "photo_crop_0.jpg", "photo_crop_2.jpg", "photo_rocket_1.jpg", "synth_01.jpg",
              "synth_04.jpg")
SPLIT = ["--calibration-images", "2", "--search-images", "2", "--held-out-images", "2"]


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
    """Six bundled images (four photo crops, two synthetic), for the tests that run deploy on the
    ONNX and Core ML targets."""
    for module in ("onnx", "onnxscript", "onnxruntime", "coremltools"):
        require_toolchain(module)
    folder = tmp_path_factory.mktemp("images")
    for name in SIX_IMAGES:
        shutil.copyfile(bundled_images() / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, tiny_checkpoint, images):
    """One deploy of ONNX and Core ML, fp32 and full static int8 (the ladder's first rung only),
    shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("deploy") / "out"
    result = run_cli("deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out", str(out),
                     "--targets", "onnx,coreml", "--precisions", "fp32,int8", "--int8", "static", *SPLIT)
    return out, result


def test_split_is_deterministic_disjoint_and_mixes_photo_and_synthetic():
    first = split_images(bundled_images(), 4, 8, 8)
    assert first == split_images(bundled_images(), 4, 8, 8)
    sets = [{p.name for p in paths} for _, paths in first.sets()]
    assert [len(names) for names in sets] == [4, 8, 8] and len(set().union(*sets)) == 20
    for names in sets:
        assert any(n.startswith("photo") for n in names) and any(n.startswith("synth") for n in names)
    for names in sets[1:]:  # the search and held-out sets each see the sample photo and other photos
        assert any(n.startswith("photo_crop") for n in names) and any(n.startswith("photo_") and "crop" not in n for n in names)


def test_bundled_images_are_small_and_packaged():
    files = sorted(bundled_images().glob("*.jpg"))
    assert len(files) >= 20 and all(f.stat().st_size < 25_000 for f in files)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"assets/deploy_images/*"' in pyproject and '"edge_sam.apps.web" = ["index.html"]' in pyproject


def test_deploy_writes_artifacts_report_and_summary(deployed):
    out, (code, stdout, stderr) = deployed
    assert code == 0, stderr[-2000:]
    steps = re.findall(r"^\[(\d+)/(\d+)\] (.+?): (.+) \((\d+\.\d) s\)$", stdout, re.M)
    assert len(steps) == 8 and all(total == "8" for _, total, *_ in steps), stdout
    names = ["onnx-fp32", "coreml-fp32", "onnx-int8-static", "coreml-int8-static"]
    assert [name for _, _, name, *_ in steps][2:6] == names
    assert all(outcome.startswith("built") for _, _, name, outcome, _ in steps[2:6])
    assert all("on the search images mask IoU" in outcome for _, _, _, outcome, _ in steps[4:6])
    for name in names:
        assert read_manifest(out / name).precision == name.split("-")[1]
    assert (out / "report" / "report.html").is_file()
    summary = (out / "summary.md").read_text()
    assert "## What to ship" in summary and "| onnx | onnx-" in summary and "| coreml | coreml-" in summary
    for _, _, name, _, _ in steps:
        assert f"| {name} |" in summary  # every step with its seconds
    assert "## INT8 ladder" in summary and "| onnx | static | onnx-int8-static |" in summary
    record = json.loads((out / "deploy.json").read_text())
    assert set(record["ship"]) == {"onnx", "coreml"} and all(ship["rule"] for ship in record["ship"].values())
    assert [t["rung"] for t in record["ladders"]["onnx"]] == ["static"]
    assert 0.1 < record["peak_rss_gb"] < 24 and record["cpu_s"] > 0  # the run's own usage, also in the summary
    assert f"peak resident set {record['peak_rss_gb']:.2f} GB" in summary

    # Never measured on a calibration or search image: the int8 manifests' images vs the report's.
    report = json.loads((out / "report" / "report.json").read_text())
    calibrated = set(read_manifest(out / "onnx-int8-static").calibration["ids"])
    assert calibrated == set(record["images"]["calibration"]) and len(calibrated) == 2
    measured = set(report["source"]["ids"])
    assert measured == set(record["images"]["held_out"]) and not measured & (calibrated | set(record["images"]["search"]))


def test_mobile_artifacts_carry_an_app_bundle(deployed):
    out, _ = deployed
    assert not (out / "onnx-fp32" / CONTRACT_FILE).exists()  # desktop/server: the manifest is enough
    for name in ("coreml-fp32", "coreml-int8-static"):
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

    stdout = rerun("fp32,int8", "--int8", "static")
    assert "onnx-fp32: reused (manifest matches)" in stdout and "onnx-int8-static: reused (manifest matches)" in stdout
    assert "onnx-fp32: rebuilt: --force" in rerun("fp32", "--force")
    assert read_manifest(out / "onnx-fp32").precision == "fp32"
    assert not list(out.glob(".*partial*")) and not list(out.glob(".*old*"))


def _bad_input_cases(tmp_path: Path, images: Path, checkpoint: Path) -> dict[str, tuple[list[str], str]]:
    few = tmp_path / "few"
    few.mkdir()
    for name in SIX_IMAGES[:5]:
        shutil.copyfile(images / name, few / name)
    broken = tmp_path / "broken"
    shutil.copytree(images, broken)
    (broken / "synth_04.jpg").write_bytes(b"this is not a JPEG")
    return {
        "too few images": (["--images", str(few)], "holds 5 image(s); deploy needs 6 in three sets that never share an "
                           "image (2 to calibrate, 2 to choose the INT8 form on, 2 held out to measure what ships): add 1"),
        "unreadable image": (["--images", str(broken)], "cannot decode image:"),
        "unknown target": (["--targets", "onnx,tensorrtx"], "unknown target tensorrtx"),
        "unknown precision": (["--precisions", "int4"], "unknown precision int4"),
        "bad gate": (["--min-mask-iou", "1.5"], "--min-mask-iou must be in (0, 1]"),
        "bad p5 gate": (["--min-mask-iou-p5", "0"], "--min-mask-iou-p5 must be in (0, 1]"),
        "bad search margin": (["--search-margin", "1,0"], "--search-margin is two numbers in [0, 1) (mean, p5), got 1.0,0.0"),
        "unknown int8 ladder": (["--int8", "int4"], "--int8 takes any, full-integer or one rung (static, mixed, a16"),
        "rung the target lacks": (["--int8", "w8"], "target onnx has no INT8 rung for --int8 w8 (its rungs: static, "
                                  "mixed, a16, dynamic)"),
        "unknown recipe": (["--recipe", "int3-magic"], "unknown quantization recipe 'int3-magic'"),
        "bad checkpoint": (["--checkpoint", str(tmp_path / "missing.pt")], "checkpoint not found"),
    }


@pytest.mark.parametrize("case", ["too few images", "unreadable image", "unknown target", "unknown precision",
                                  "bad gate", "bad p5 gate", "bad search margin", "unknown int8 ladder", "rung the target lacks",
                                  "unknown recipe", "bad checkpoint"])
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

    monkeypatch.setattr("edge_sam.targets.deploy.plan.target_names", lambda: ["coreml", "onnx"])
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


def _row(name: str, iou: float, encoder_s: float, size: int = 1, p5: float | None = None, scheme: str | None = None):
    target, precision = name.split("-")[:2]
    return {"target": target, "precision": precision, "scheme": scheme, "artifact_dir": f"out/{name}",
            "mask_iou_mean": iou, "mask_iou_p5": iou if p5 is None else p5, "encoder_p50_s": encoder_s,
            "decoder_p50_s": 0.01, "bytes": size}


def test_host_latency_ranks_onnx_with_a_noise_band_that_size_decides():
    """ONNX Runtime's latency here stands for its devices: fastest passing ships, but latencies
    within LATENCY_TIE are a tie that the smaller file wins; a p5 under the gate fails a row."""
    from edge_sam.quantize.studies.mixed import Budget
    from edge_sam.targets.deploy.summary import choose

    gate = Budget(0.98, 0.95)
    rows = [_row("onnx-fp32", 1.0, 0.100, size=40), _row("onnx-int8-mixed", 0.99, 0.105, size=30),
            _row("onnx-fp16", 0.999, 0.080, size=20, p5=0.90)]
    (onnx,) = choose(rows, ("onnx",), gate)
    assert onnx.artifact == "onnx-int8-mixed" and "next onnx-fp32" in onnx.why and "fastest on this host" in onnx.rule
    rows[1]["encoder_p50_s"] = 0.2  # now clearly slower than fp32: fp32 ships
    assert choose(rows, ("onnx",), gate)[0].artifact == "onnx-fp32"
    rows = [_row("onnx-int8-static", 0.97, 0.05)]
    (onnx,) = choose(rows, ("onnx",), gate)
    assert onnx.row is None and "closest is onnx-int8-static at mask IoU 0.9700" in onnx.why


def test_device_targets_rank_by_the_precision_their_devices_run_then_size():
    """Phones and the Neural Engine: host latency says nothing, so int8 compute ranks first, then
    size; Core ML's weight-only INT8 computes in fp16 and ranks with fp16 (by size)."""
    from edge_sam.quantize.studies.mixed import Budget
    from edge_sam.targets.deploy.summary import choose

    gate = Budget(0.98, 0.95)
    mb = 1_000_000
    rows = [_row("tflite-fp32", 1.0, 0.1, size=40 * mb), _row("tflite-fp16", 1.0, 0.1, size=20 * mb),
            _row("tflite-int8-mixed", 0.99, 0.5, size=30 * mb, scheme="static"),
            _row("coreml-fp16", 1.0, 0.1, size=20 * mb),
            _row("coreml-int8-w8", 0.99, 3.0, size=11 * mb, scheme="weight-only"),
            _row("coreml-fp32", 1.0, 0.01, size=40 * mb), _row("executorch-fp32", 1.0, 0.1, size=40 * mb)]
    tflite, coreml, executorch, missing = choose(rows, ("tflite", "coreml", "executorch", "onnx"), gate)
    assert tflite.artifact == "tflite-int8-mixed" and "does not stand for tflite's devices" in tflite.rule
    assert coreml.artifact == "coreml-int8-w8" and "coreml-int8-w8: fp16, 11.0 MB" in coreml.why  # fp16 compute, smaller
    assert executorch.artifact == "executorch-fp32"
    assert missing.row is None and "no artifact was built" in missing.why


def test_every_declared_rung_is_one_its_target_exports():
    from edge_sam.quantize.ladder import RUNG_NAMES, get_rung, ladder_for
    from edge_sam.quantize.recipes import check_schemes
    from edge_sam.quantize.recipe_file import get_recipe
    from edge_sam.targets.core.registry import get_target, target_names

    for name in target_names():
        target = get_target(name)
        assert target.int8_rungs and set(target.int8_rungs) <= set(RUNG_NAMES)
        assert list(target.int8_rungs) == [r for r in RUNG_NAMES if r in target.int8_rungs]  # ladder order
        for rung in map(get_rung, target.int8_rungs):
            check_schemes(get_recipe(rung.recipe or "static-conv-linear"), name, target.schemes, target.activation_bits)
        assert [r.name for r in ladder_for(target.int8_rungs, "full-integer")] == [
            r for r in target.int8_rungs if r in ("static", "mixed", "a16")]
    assert [r.name for r in ladder_for(get_target("onnx").int8_rungs, "dynamic")] == ["dynamic"]


def test_cached_recipe_is_searched_again_when_its_inputs_change(tmp_path):
    """A recipe cached by an earlier run counts only for the same weights, size, images and gate;
    a new gate alone keeps the layer ranking (it does not depend on the gate)."""
    from edge_sam.quantize.recipe_file import write_recipe_file
    from edge_sam.quantize.recipes import RECIPES
    from edge_sam.targets.deploy.ladder import _cache_state

    key = {"checkpoint_state_dict_sha256": "aaa", "img_size": 64, "calibration": "c", "held_out": ["s"],
           "gate": {"min_mask_iou": 0.99, "min_mask_iou_p5": 0.98}}
    provenance = {"checkpoint_state_dict_sha256": "aaa", "img_size": 64, "calibration": {"ids_sha256": "c"},
                  "held_out": [{"ids_sha256": "s"}], "gate": dict(key["gate"]), "ranking": ["b", "a"]}
    path = tmp_path / "onnx.json"
    assert _cache_state(path, key) == ("searched", None)
    recipe = RECIPES["static-conv-linear"].with_layers({"image_encoder.patch_embed": "float"}, name="mixed-onnx")
    write_recipe_file(recipe, path, provenance)
    assert _cache_state(path, key) == (None, None)
    other = {**key, "checkpoint_state_dict_sha256": "bbb"}
    assert _cache_state(path, other) == ("searched again: the cached recipe was searched for another checkpoint", None)
    stricter = {**key, "gate": {"min_mask_iou": 0.995, "min_mask_iou_p5": 0.98}}
    assert _cache_state(path, stricter) == ("searched again: the cached recipe was searched for another gate", ["b", "a"])
    path.write_text("{not json")
    assert _cache_state(path, key)[0] == "searched again: the cached recipe is unreadable"


def test_ladder_climbs_to_the_mixed_recipe_and_reuses_it(tmp_path, images, tiny_checkpoint):
    """Full static INT8 of the tiny model misses the search budget (0.99 / 0.98); the mixed recipe,
    searched for it, holds it and ships. A re-run reuses both artifacts and the cached recipe. On ONNX
    Runtime, except where its int8 kernels saturate (an x86 CPU without VNNI: conftest), where the
    mixed artifact misses the budget its simulation meets; ExecuTorch's XNNPACK runs it as simulated."""
    target = "executorch" if ort_int8_saturates() else "onnx"
    argv = ["deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out", str(tmp_path / "out"),
            "--targets", target, "--precisions", "int8", *SPLIT, "--no-layers"]
    code, stdout, stderr = run_cli(*argv)
    assert code == 0, stderr[-2000:]
    assert re.search(rf"{target}-int8-static: built; on the search images mask IoU \S+ / p5 \S+ misses 0.990 / 0.980", stdout)
    assert re.search(rf"{target}-int8-mixed: search the recipe: searched: \d+ of 10 layers float", stdout)
    assert re.search(rf"{target}-int8-mixed: built; on the search images mask IoU \S+ / p5 \S+ passes", stdout)
    record = json.loads((tmp_path / "out" / "deploy.json").read_text())
    assert record["ship"][target]["artifact"] == f"{target}-int8-mixed"
    assert [t["passed"] for t in record["ladders"][target]] == [False, True]
    assert read_manifest(tmp_path / "out" / f"{target}-int8-mixed").recipe["layers"]

    code, stdout, stderr = run_cli(*argv)
    assert code == 0, stderr[-2000:]
    assert f"{target}-int8-mixed: search the recipe: reused int8_search/{target}.json" in stdout
    assert f"{target}-int8-static: reused (manifest matches)" in stdout and f"{target}-int8-mixed: reused (manifest matches)" in stdout


def test_unmeetable_gate_names_the_closest_rung(tmp_path, images, tiny_checkpoint):
    code, stdout, stderr = run_cli("deploy", "--checkpoint", str(tiny_checkpoint), "--images", str(images), "--out",
                                   str(tmp_path / "out"), "--targets", "onnx", "--precisions", "int8", "--int8", "static",
                                   "--min-mask-iou", "1", "--min-mask-iou-p5", "1", *SPLIT, "--no-layers")
    assert code == 1, stderr[-2000:]
    assert re.search(r"^onnx: no INT8 form holds mask IoU vs fp32 mean >= 1.0, p5 >= 1.0 on the search images; "
                     r"closest: static at mask IoU 0\.\d{4} / p5 0\.\d{4}$", stdout, re.M), stdout
    assert "| onnx | nothing |" in stdout and "closest is onnx-int8-static at mask IoU" in stdout


def test_unseen_photos_come_from_sources_the_deploy_sets_do_not_use(tmp_path):
    """benchmarks/unseen_photos.py: nine 256-px colour crops of three photos, none of them a photo
    the bundled deploy images (calibration, search, held out) were cut from."""
    import importlib.util

    from edge_sam.transforms import read_image

    for module in ("skimage", "matplotlib"):
        require_toolchain(module)
    path = REPO / "benchmarks" / "unseen_photos.py"
    spec = importlib.util.spec_from_file_location("unseen_photos", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sources = {p.stem for p in module.unseen_photo_files()}
    bundled = {p.stem for p in bundled_images().glob("*.jpg")}
    assert len(sources) == 3 and not any(source in name for source in sources for name in bundled)
    crops = [read_image(p) for p in module.write_crops(tmp_path / "unseen")]
    assert len(crops) == 9 and all(c.shape == (256, 256, 3) and c.std() > 20 for c in crops)


def test_the_default_targets_leave_out_those_deployed_only_when_named():
    """AOTInductor compiles for minutes per package: a plain deploy says so and skips it; named, it is planned."""
    from edge_sam.targets.deploy.plan import plan_jobs

    plan = plan_jobs(None, ["fp32", "int8"], None)
    assert "aoti" not in plan.targets and {"onnx", "executorch", "tflite", "coreml"} <= set(plan.targets)
    assert [line for line in plan.skipped if line.startswith("aoti:")] == [
        "aoti: Inductor compiles each package for minutes on a 2-core CPU, for this host's CPU only "
        "(name it with --targets to deploy it)"]
    named = plan_jobs(["aoti"], ["fp32", "int8"], None)
    assert named.targets == ("aoti",) and [rung.name for rung in named.ladders["aoti"]] == ["static", "mixed", "dynamic"]
