"""The CLI: results on disk, and one line on stderr with exit 2 for every user error."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sam import save_model
from edge_sam.apps.cli import main
from edge_sam.transforms import read_image


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_segment_writes_mask_and_overlay(capsys, tmp_path, parity_checkpoint, sample_image_path):
    code, out, err = _run(
        capsys, "segment", str(sample_image_path), "--checkpoint", str(parity_checkpoint),
        "--point", "580,350", "--point", "650,350,1", "--out", str(tmp_path / "m.png"), "--overlay", str(tmp_path / "o.png"),
    )
    assert code == 0, err
    mask = read_image(tmp_path / "m.png")
    assert mask.shape[:2] == (603, 1072) and set(np.unique(mask)) <= {0, 255}
    assert read_image(tmp_path / "o.png").shape == (603, 1072, 3)
    assert "predicted IoU" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "missing.pt", "--point", "5,5"], "checkpoint not found: missing.pt"),
        (["--point", "5000,5"], "outside the 1072x603 image"),
        (["--point", "5,5,7"], "labels must be in"),
        ([], "empty prompt"),
        (["--point", "1,1"] * 7, "at most 6"),
    ],
)
def test_segment_errors_are_one_line(capsys, tmp_path, parity_checkpoint, sample_image_path, argv, message):
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", str(parity_checkpoint), *argv]
    code, _, err = _run(capsys, "segment", str(sample_image_path), *argv, "--out", str(tmp_path / "m.png"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("edge-sam: error: ") and message in err
    assert not (tmp_path / "m.png").exists()


def test_unreadable_image(capsys, tmp_path, parity_checkpoint):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code, _, err = _run(capsys, "segment", str(bad), "--checkpoint", str(parity_checkpoint), "--point", "1,1", "--out", str(tmp_path / "m.png"))
    assert code == 2 and "cannot decode image" in err and err.count("\n") == 1


def test_wrong_checkpoint_file(capsys, tmp_path, sample_image_path):
    bad = tmp_path / "weights.pt"
    bad.write_text("hello")
    code, _, err = _run(capsys, "segment", str(sample_image_path), "--checkpoint", str(bad), "--point", "1,1", "--out", str(tmp_path / "m.png"))
    assert code == 2 and "not a readable PyTorch checkpoint" in err and err.count("\n") == 1


def test_malformed_point_is_an_argparse_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["segment", "--point", "1;2", "--out", str(tmp_path / "m.png")])
    assert info.value.code == 2
    assert "expected X,Y or X,Y,LABEL" in capsys.readouterr().err


def test_everything_writes_a_folder_and_refuses_a_full_one(capsys, tmp_path, make_tiny_model, sample_image_path):
    checkpoint = save_model(make_tiny_model(img_size=128), tmp_path / "tiny.safetensors")
    out = tmp_path / "every"
    argv = ["everything", str(sample_image_path), "--checkpoint", str(checkpoint), "--out", str(out),
            "--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-thresh", "0"]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    assert (out / "masks.json").is_file() and (out / "overlay.png").is_file()
    assert len(list(out.glob("mask_*.png"))) == int(stdout.split()[0]) > 0
    code, _, err = _run(capsys, *argv)
    assert code == 2 and "already exists and is not empty" in err
    (out / "stale.txt").write_text("from an earlier run")
    code, _, err = _run(capsys, *argv, "--overwrite")
    assert code == 0, err
    assert (out / "masks.json").is_file() and not (out / "stale.txt").exists()


def test_failed_everything_leaves_nothing(capsys, tmp_path):
    out = tmp_path / "every"
    code, _, err = _run(capsys, "everything", str(tmp_path / "nope.jpg"), "--checkpoint", "missing.pt", "--out", str(out))
    assert code == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "option, target, message",
    [(["--delegate", "coreml"], "onnx", "--delegate applies to target executorch only, not onnx"),
     (["--int8-io"], "coreml", "--int8-io applies to target tflite only, not coreml")],
)
def test_target_specific_export_options_refuse_other_targets(capsys, tmp_path, option, target, message):
    code, _, err = _run(capsys, "export", "--target", target, *option, "--out", str(tmp_path / "art"))
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "art").exists()
