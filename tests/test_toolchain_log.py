"""What a toolchain prints or warns during an export lands in ``<artifact>/toolchain.log`` with a
one-line count on the terminal, never in nothing (targets/core/toolchain_log.py). A real export's
log is checked in tests/test_cli_commands.py::test_bench_an_artifact."""

from __future__ import annotations

import ctypes
import logging
import re
import sys
import warnings
from pathlib import Path

import pytest

from edge_sam.staging import staged_dir
from edge_sam.targets.core.toolchain_log import LOG_NAME, capture, export_log


@pytest.fixture
def chatty_library_logger():
    """A logger with its own handler on the terminal, as torch and others install."""
    logger = logging.getLogger("chatty_toolchain")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    logger.propagate = False
    yield logger
    logger.removeHandler(handler)


def _toolchain_talks(logger: logging.Logger) -> None:
    print("progress tree line")
    print("pass 1/3\rpass 2/3\rpass 3/3", file=sys.stderr)
    logger.warning("op foo falls back to the reference kernel")
    logging.getLogger("other_toolchain").warning("advice for every call")
    for _ in range(2):  # one warning, raised twice
        warnings.warn("flag ignored", UserWarning)
    warnings.warn("deprecated flag", DeprecationWarning)  # logged; not counted (Python hides it by default)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None)
        libc.printf(b"native converter note\n")
        libc.fflush(None)


def test_an_export_log_keeps_everything_and_prints_one_line(tmp_path, capfd, chatty_library_logger):
    staging, artifact = tmp_path / "staging", tmp_path / "artifact"
    staging.mkdir()
    with export_log("demo", artifact, staging):
        with capture("conversion"):
            _toolchain_talks(chatty_library_logger)
            with capture("nested stage"):  # adds to the outer capture
                print("inner line")
    out, err = capfd.readouterr()
    assert out == "" and err.strip() == f"demo: 3 toolchain warnings (see {artifact / LOG_NAME})"
    log = (staging / LOG_NAME).read_text()
    expected = ["== conversion", "progress tree line", "pass 3/3", "inner line",
                "WARNING chatty_toolchain: op foo falls back to the reference kernel",
                "WARNING other_toolchain: advice for every call", "UserWarning: flag ignored", "(x2)",
                "DeprecationWarning: deprecated flag"]
    if sys.platform.startswith("linux"):
        expected.append("native converter note")
    for text in expected:
        assert text in log, f"{text!r} missing from:\n{log}"
    assert "pass 1/3" not in log  # a redrawn progress line keeps its final state only


def test_terminal_handlers_and_warnings_are_restored(capfd, chatty_library_logger):
    with capture("stage"):
        chatty_library_logger.warning("captured")
    chatty_library_logger.warning("after the capture")
    with pytest.warns(UserWarning, match="after"):
        warnings.warn("after", UserWarning)
    err = capfd.readouterr().err
    assert "after the capture" in err and "captured" not in err


def test_outside_an_export_the_text_goes_to_the_debug_logger(caplog, capfd):
    with caplog.at_level(logging.DEBUG, logger="edge_sam.toolchain"):
        with capture("loading a package"):
            print("binding not available on this OS")
    assert capfd.readouterr().out == ""
    assert any("loading a package" in r.getMessage() and "binding not available" in r.getMessage() for r in caplog.records)


def test_a_failed_export_writes_no_log(tmp_path, capfd):
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(RuntimeError), export_log("demo", tmp_path / "artifact", staging):
        with capture("conversion"):
            print("about to fail")
        raise RuntimeError("converter crashed")
    assert not (staging / LOG_NAME).exists() and capfd.readouterr().err == ""


def _printed_log_path(err: str) -> Path:
    match = re.search(r"\(see (.+)\)$", err.strip())
    assert match, err
    return Path(match.group(1))


def test_the_printed_log_path_is_where_the_log_ends_up(tmp_path, capfd):
    """An export stages its folder; deploy stages each artifact too and exports into that staging
    folder. The line names the log in the folder the staging becomes, which exists afterwards."""
    final = tmp_path / "deploy_out" / "demo-fp32"
    with staged_dir(final, overwrite=True) as deploy_tmp:  # what deploy's _build does
        with staged_dir(deploy_tmp) as export_tmp, export_log("demo", deploy_tmp, export_tmp):  # Target.export
            with capture("conversion"):
                print("converter chatter")
    printed = _printed_log_path(capfd.readouterr().err)
    assert printed == final / LOG_NAME
    assert printed.is_file() and "converter chatter" in printed.read_text()
    assert [p.name for p in final.parent.iterdir()] == ["demo-fp32"]  # no staging folder left


def test_a_real_export_inside_deploy_staging_prints_a_path_that_exists(tmp_path, capfd, make_tiny_model):
    from conftest import require_toolchain

    from edge_sam.targets import get_target

    require_toolchain("onnxruntime")
    model = make_tiny_model()
    final = tmp_path / "deploy_out" / "onnx-fp32"
    with staged_dir(final, overwrite=True) as tmp:
        get_target("onnx").export(model, "fp32", None, tmp)
    printed = _printed_log_path(capfd.readouterr().err.splitlines()[-1])
    assert printed == final / LOG_NAME and printed.is_file()
