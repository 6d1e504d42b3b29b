"""What a converter prints and warns while edge_sam drives it: kept in a log, off the terminal.

torch.onnx, litert-torch, coremltools, ExecuTorch's lowering and onnxruntime's quantizer print
progress trees and per-pass notes, log through ``logging`` and raise Python warnings. The
terminal is kept for edge_sam's own progress bars, but none of that is thrown away:
:func:`capture` collects it (Python-level stdout and stderr, the process's stdout file
descriptor, logging records, every Python warning) into the log of the export in progress,
which :func:`export_log` writes to ``<artifact>/toolchain.log`` and sums up in one line (logged
warnings, Python warnings but the deprecation and resource ones Python hides by default, and
printed lines that say "warning")::

    onnx: 3 toolchain warnings (see out/onnx-int8/toolchain.log)

Outside an export (importing coremltools, loading a Core ML program for the host executor)
captured text goes to the ``edge_sam.toolchain`` logger at DEBUG. Native code writing straight
to file descriptor 2 is not captured: progress bars share it.

``toolchain.log`` is not listed in the manifest: it is a diagnostic, not part of what a runner
loads, so editing or deleting it does not invalidate the artifact.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from edge_sam.staging import final_path

LOG_NAME = "toolchain.log"
LOGGER = logging.getLogger("edge_sam.toolchain")
# Warnings Python hides by default: logged, not counted (a toolchain's own deprecations are not the user's).
_HIDDEN_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)
# A line of captured output that is a warning: "WARNING ...", "UserWarning: ...", absl/glog "W1130 ...".
_WARNING_LINE = re.compile(r"\bwarn(ing)?s?\b|^W\d{4} ", re.IGNORECASE)


@dataclass
class ToolchainLog:
    """Everything captured during one export, by stage."""

    sections: list[tuple[str, str]] = field(default_factory=list)
    warnings: int = 0

    def add(self, stage: str, text: str, warnings_found: int) -> None:
        if text.strip():
            self.sections.append((stage, text))
        self.warnings += warnings_found

    def text(self) -> str:
        return "".join(f"== {stage}\n{text.rstrip()}\n\n" for stage, text in self.sections)


_current: list[ToolchainLog] = []  # the export in progress (exports do not nest)
_capturing = False  # a capture inside a capture adds nothing


@contextlib.contextmanager
def export_log(target: str, artifact_dir: str | os.PathLike, staging_dir: str | os.PathLike) -> Iterator[ToolchainLog]:
    """Collect what the toolchain says during one export; write it to ``staging_dir/toolchain.log``
    (the folder that becomes ``artifact_dir``) when the export succeeds and print one summary line
    naming the log where it will be: under ``artifact_dir``, or, when ``artifact_dir`` is itself a
    staged temp folder (deploy stages each artifact and exports into that), under the folder it becomes.
    A failed export leaves its log in the ``edge_sam.toolchain`` logger at DEBUG."""
    log = ToolchainLog()
    _current.append(log)
    try:
        yield log
    except BaseException:
        LOGGER.debug("toolchain output of the failed %s export:\n%s", target, log.text())
        raise
    finally:
        _current.remove(log)
    (Path(staging_dir) / LOG_NAME).write_text(log.text() or "(the toolchain printed nothing)\n")
    tqdm.write(f"{target}: {log.warnings} toolchain warning{'s' if log.warnings != 1 else ''} "
               f"(see {final_path(Path(artifact_dir) / LOG_NAME)})", file=sys.stderr)


@contextlib.contextmanager
def capture(stage: str) -> Iterator[None]:
    """Capture the toolchain's output while it runs ``stage`` (a short name for the log)."""
    global _capturing
    if _capturing:
        yield
        return
    _capturing = True
    python_out = io.StringIO()
    records = _RecordCollector()
    try:
        with _native_stdout() as native, warnings.catch_warnings(record=True) as caught, records, \
                contextlib.redirect_stdout(python_out), contextlib.redirect_stderr(python_out):
            warnings.simplefilter("always")
            yield
    finally:
        _capturing = False
        _store(stage, _clean(python_out.getvalue() + native.text), records, caught)


def _store(stage: str, streams: str, records: "_RecordCollector", caught: list[warnings.WarningMessage]) -> None:
    unique = Counter(f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught)
    shown = {f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught
             if not issubclass(w.category, _HIDDEN_BY_DEFAULT)}
    parts = [streams] if streams.strip() else []
    if records.lines:
        parts.append("\n".join(records.lines))
    if unique:
        parts.append("\n".join(f"{text}{f'  (x{n})' if n > 1 else ''}" for text, n in unique.items()))
    text = "\n".join(part.rstrip() for part in parts)
    found = len(shown) + records.warnings + sum(bool(_WARNING_LINE.search(line)) for line in streams.splitlines())
    if _current:
        _current[-1].add(stage, text, found)
    elif text:
        LOGGER.debug("%s:\n%s", stage, text)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_BAR = re.compile(r"^(.*?):\s+\d+%\|")  # a tqdm line: "description:  42%|####  | 40/95 ..."


def _clean(text: str) -> str:
    """Progress bars redraw (carriage returns, cursor moves, one line per update when nested):
    keep each bar's final state, and no blank lines."""
    lines: list[str] = []
    for raw in _ANSI.sub("", text).split("\n"):
        line = raw.rstrip("\r").rsplit("\r", 1)[-1].rstrip()
        if not line:
            continue
        bar = _BAR.match(line)
        if bar and lines and (previous := _BAR.match(lines[-1])) and previous.group(1) == bar.group(1):
            lines[-1] = line
        else:
            lines.append(line)
    return "\n".join(lines)


class _NativeText:
    text = ""


@contextlib.contextmanager
def _native_stdout() -> Iterator[_NativeText]:
    """What native code writes to file descriptor 1 (C/C++ printf) during the block."""
    result = _NativeText()
    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        saved = os.dup(fd)
    except (OSError, ValueError, io.UnsupportedOperation):  # no real stdout (embedded interpreters)
        yield result
        return
    with tempfile.TemporaryFile() as sink:
        sys.__stdout__.flush()
        os.dup2(sink.fileno(), fd)
        try:
            yield result
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.__stdout__.flush()
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            result.text = sink.read().decode("utf-8", "replace")


class _RecordCollector(logging.Handler):
    """Logging records of the block, formatted: those reaching the root logger, and those a
    handler would print to the terminal (libraries such as torch install their own), which a
    filter on that handler takes instead."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)  # from the root: not DEBUG (torch's trace logger emits thousands)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.warnings = 0
        self._seen: set[int] = set()
        self._diverted: list[logging.Handler] = []
        self._divert = _Divert(self)

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) in self._seen:  # a record both a library handler and the root handler see
            return
        self._seen.add(id(record))
        self.lines.append(self.format(record))
        self.warnings += record.levelno >= logging.WARNING

    def __enter__(self) -> "_RecordCollector":
        logging.getLogger().addHandler(self)
        for handler in _terminal_handlers():
            handler.addFilter(self._divert)
            self._diverted.append(handler)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger().removeHandler(self)
        for handler in self._diverted:
            handler.removeFilter(self._divert)


class _Divert(logging.Filter):
    """On a terminal handler: the record goes to the collector, not to the terminal."""

    def __init__(self, collector: _RecordCollector) -> None:
        super().__init__()
        self.collector = collector

    def filter(self, record: logging.LogRecord) -> bool:
        self.collector.emit(record)  # whatever level: the terminal would have shown it
        return False


def _terminal_handlers() -> list[logging.Handler]:
    """Handlers that print to the console: plain StreamHandlers (what torch, basicConfig and most
    libraries install) and any stream handler on stdout or stderr; not file handlers, and not
    subclasses writing elsewhere (pytest's log capture, for one)."""
    consoles = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}
    loggers = [logging.getLogger()] + [l for l in logging.Logger.manager.loggerDict.values() if isinstance(l, logging.Logger)]
    return [h for logger in loggers for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            and (type(h) is logging.StreamHandler or id(getattr(h, "stream", None)) in consoles)]
