"""A missing toolchain is one line naming the extra, for users and for the test suite.

- ``require_toolchain`` / ``require_programs`` (tests/conftest.py) skip a test whose toolchain is
  absent, naming it; under ``EDGE_SAM_REQUIRE_TOOLCHAINS=1`` (what CI sets) they fail instead,
  and so does a plain ``pytest.importorskip``.
- Core ML W8A8 needs ExecuTorch's quantizer: without it the CLI prints one line naming
  ``edge-sam[coreml]``, which installs it.

The module is made unimportable in a subprocess with ``sys.modules[name] = None``, the way a
Python without that package behaves.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import STRICT_TOOLCHAINS, require_programs, require_toolchain

import edge_sam
from edge_sam.transforms import write_image

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, strict: bool, cwd: Path = ROOT, timeout: int = 300, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != STRICT_TOOLCHAINS} | extra_env
    if strict:
        env[STRICT_TOOLCHAINS] = "1"
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _pytest_without(module: str, test_file: str) -> str:
    return (f"import sys; sys.modules[{module!r}] = None; import pytest; "
            f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', {test_file!r}]))")


def test_a_missing_module_skips_with_its_extra_and_fails_in_strict_mode():
    code = _pytest_without("onnxruntime", "tests/test_onnx_upsample.py")
    relaxed = _python(code, strict=False)
    assert relaxed.returncode in (0, 5), relaxed.stdout[-2000:]  # 5: the skipped module left no test to run
    assert "skipped" in relaxed.stdout and "onnxruntime is not importable: pip install 'edge-sam[onnx]'" in relaxed.stdout
    strict = _python(code, strict=True)
    assert strict.returncode != 0, strict.stdout[-2000:]
    assert f"{STRICT_TOOLCHAINS}=1 and onnxruntime is not importable: pip install 'edge-sam[onnx]'" in strict.stdout


def test_a_stray_importorskip_fails_in_strict_mode_too(tmp_path):
    """conftest replaces pytest.importorskip under EDGE_SAM_REQUIRE_TOOLCHAINS=1 (for tests that
    have not moved to require_toolchain)."""
    (tmp_path / "test_stray.py").write_text('import pytest\npytest.importorskip("no_such_toolchain")\n'
                                            "def test_nothing():\n    pass\n")
    code = ("import sys; import pytest; sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-p', 'conftest', "
            f"{str(tmp_path / 'test_stray.py')!r}]))")
    path = f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"  # -p conftest: tests/conftest.py
    strict = _python(code, strict=True, cwd=tmp_path, PYTHONPATH=path)
    relaxed = _python(code, strict=False, cwd=tmp_path, PYTHONPATH=path)
    assert strict.returncode != 0 and "EDGE_SAM_REQUIRE_TOOLCHAINS=1 and could not import 'no_such_toolchain'" in strict.stdout
    assert relaxed.returncode in (0, 5) and "skipped" in relaxed.stdout, relaxed.stdout[-2000:]


def test_require_toolchain_returns_the_module():
    assert require_toolchain("numpy").__name__ == "numpy"


def test_a_missing_program_skips_or_fails_naming_it(monkeypatch):
    monkeypatch.delenv(STRICT_TOOLCHAINS, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-compiler or other-compiler not found on PATH"):
        require_programs((sys.executable,), ("no-such-compiler", "other-compiler"))
    monkeypatch.setenv(STRICT_TOOLCHAINS, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{STRICT_TOOLCHAINS}=1 and no-such-compiler not found"):
        require_programs(("no-such-compiler",))
    assert require_programs((sys.executable,)) == [sys.executable]


def test_coreml_w8a8_without_executorch_is_one_line_naming_the_coreml_extra(tmp_path, make_tiny_model):
    require_toolchain("coremltools")
    checkpoint = edge_sam.save_model(make_tiny_model(img_size=64), tmp_path / "tiny.safetensors")
    (tmp_path / "calib").mkdir()
    write_image(tmp_path / "calib" / "a.png", (edge_sam.transforms.read_image(
        Path(edge_sam.__file__).parent / "assets" / "dogs.jpg"))[:200, :300])
    argv = ["export", "--target", "coreml", "--precision", "int8", "--calibration", str(tmp_path / "calib"),
            "--checkpoint", str(checkpoint), "--out", str(tmp_path / "w8a8")]
    code = f"import sys; sys.modules['executorch'] = None; from edge_sam.apps.cli import main; sys.exit(main({argv!r}))"
    result = _python(code, strict=False)
    lines = [line for line in result.stderr.splitlines() if line.startswith("edge-sam")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and "pip install 'edge-sam[coreml]'" in lines[0] and "executorch" in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "w8a8").exists()
