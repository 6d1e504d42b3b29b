"""The shape of edge_sam.targets, checked from the source: no import cycles, the same modules in
every runtime package, runtimes that import no converter, and targets whose export and runner
signatures are exactly the options they declare."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from edge_sam.targets.core.registry import TARGETS, get_target

TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
QUANTIZE_DIR = TARGETS_DIR.parent / "quantize"
PACKAGE = "edge_sam.targets"
RUNTIME_PACKAGES = ("onnx", "executorch", "tflite", "coreml")
# Every runtime package has these; graph building has its own name where it is more than graphs.
COMMON_MODULES = {"target", "runtime", "quantize", "layers"}
GRAPH_MODULES = {"onnx": {"graphs"}, "tflite": {"graphs"}, "executorch": {"lowering"}, "coreml": {"convert", "program"}}
# What converts or quantizes: a runtime module reaches none of it, directly or through others.
EXPORT_MODULES = {package: {"target", "quantize", "layers"} for package in RUNTIME_PACKAGES}
CONVERTERS = {"onnx": {"graphs"}, "tflite": {"graphs"}, "executorch": {"lowering"}, "coreml": {"convert"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(TARGETS_DIR).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(TARGETS_DIR.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The edge_sam.targets modules ``name`` imports, at module level or inside functions
    (a lazy import is still a dependency): ``from a.b import c`` is a.b.c where that is a module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        stack.append(module)
        for dependency in sorted(graph[module]):
            if state.get(dependency) == "open":
                return stack[stack.index(dependency):] + [dependency]
            if dependency not in state and (cycle := visit(dependency)):
                return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_import_graph_of_targets_has_no_cycle():
    graph = _import_graph()
    assert len(graph) > 30 and graph[f"{PACKAGE}.tflite.layers"], "the parser found the modules and their imports"
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_every_runtime_package_has_the_same_modules(package):
    modules = {path.stem for path in (TARGETS_DIR / package).glob("*.py")} - {"__init__"}
    assert COMMON_MODULES | GRAPH_MODULES[package] <= modules


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, pending = set(), [start]
    while pending:
        for dependency in graph[pending.pop()] - seen:
            seen.add(dependency)
            pending.append(dependency)
    return seen


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_a_runtime_module_imports_no_converter(package):
    """Loading an artifact on a device needs the runtime alone, not the export toolchain."""
    graph = _import_graph()
    reached = _reachable(graph, f"{PACKAGE}.{package}.runtime")
    own = {m.removeprefix(f"{PACKAGE}.{package}.") for m in reached if m.startswith(f"{PACKAGE}.{package}.")}
    assert own & (EXPORT_MODULES[package] | CONVERTERS[package]) == set()
    others = [f"{PACKAGE}.{other}." for other in RUNTIME_PACKAGES if other != package]
    assert not any(m.startswith(other) for m in reached for other in others)
    assert f"{PACKAGE}.validation.layers" not in reached


def test_only_the_metrics_module_turns_energies_into_decibels():
    """One SQNR: edge_sam.eval.metrics. (report.py's log10 is the plot's log-scale axis.)"""
    offenders = [
        str(path.relative_to(TARGETS_DIR.parent))
        for folder in (TARGETS_DIR, QUANTIZE_DIR)
        for path in folder.rglob("*.py")
        if "log10" in path.read_text() and path != TARGETS_DIR / "validation" / "report.py"
    ]
    assert offenders == []


def _parameters(function, skip: int) -> tuple[set[str], bool]:
    """(named parameters after the first ``skip``, whether it takes **kwargs)."""
    parameters = list(inspect.signature(function).parameters.values())[skip:]
    named = {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_runner_and_graph_writer_take_exactly_the_declared_options(name):
    """Options are checked against the declarations before export or load (check_options), so a
    catch-all ``**options`` would only hide a declaration that is missing."""
    target = get_target(name)
    runtime, catch_all = _parameters(type(target).make_runner, 3)  # self, artifact_dir, manifest
    assert not catch_all and runtime - {"label"} == {option.name for option in target.runtime_options}
    export, catch_all = _parameters(type(target).write_graphs, 4)  # self, model, request, out_dir
    consumed_by_export = {"delegate"} if name == "executorch" else set()  # picks the instance that writes
    assert not catch_all and export == {option.name for option in target.export_options} - consumed_by_export


# What loading an artifact imports: the runtime alone (a device installs no converter).
RUNTIME_MODULES = {
    "onnx": ("onnxruntime",),
    "tflite": ("ai_edge_litert.interpreter",),  # or tflite_runtime's, where only that is installed
    "executorch": ("executorch.runtime",),
    "coreml": ("coremltools",),  # reads the package; the host engine or MLModel runs it
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_loading_declares_only_the_runtime(name):
    target = get_target(name)
    assert target.runtime_modules == RUNTIME_MODULES[name]
    assert set(target.runtime_modules) <= set(target.export_modules)  # export reads back what it wrote
