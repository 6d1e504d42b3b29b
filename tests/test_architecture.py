"""The shape of the package, checked from the source: imports run one way along a declared layer
order (imports inside functions included), no import cycles, the same modules in every runtime
package, runtimes that import no converter, targets whose export and runner signatures are exactly
the options they declare, and a README layout picture that names only folders that exist."""

from __future__ import annotations

import ast
import inspect
import re
import shutil
from pathlib import Path

import pytest

from edge_sam.targets.core.registry import TARGETS, get_target

ROOT = Path(__file__).resolve().parents[1]
# pyproject.toml's package-dir map: the folder each installed name comes from.
PACKAGE_DIRS = {"edge_sam": "edge_sam", "quantize": "edge_sam.quantize", "targets": "edge_sam.targets", "apps": "edge_sam.apps"}
TARGETS_DIR = ROOT / "targets"
QUANTIZE_DIR = ROOT / "quantize"
PACKAGE = "edge_sam.targets"
RUNTIME_PACKAGES = ("onnx", "executorch", "tflite", "coreml", "aoti")
# Every runtime package has these; graph building has its own name where it is more than graphs.
COMMON_MODULES = {"target", "runtime", "quantize", "layers"}
GRAPH_MODULES = {"onnx": {"graphs"}, "tflite": {"graphs"}, "executorch": {"lowering"}, "coreml": {"convert", "program"},
                 "aoti": {"compile"}}
# What converts or quantizes: a runtime module reaches none of it, directly or through others.
EXPORT_MODULES = {package: {"target", "quantize", "layers"} for package in RUNTIME_PACKAGES}
CONVERTERS = {"onnx": {"graphs"}, "tflite": {"graphs"}, "executorch": {"lowering"}, "coreml": {"convert"}, "aoti": {"compile"}}

# The layer order, lowest first. A module imports modules of its own layer and of layers below it,
# never of a layer above, nor of another layer of the same rank; a lazy import is still an import.
# The flow: checkpoint -> model -> quantize -> export (targets) -> runner -> drift report (validation).
LAYER_ORDER = (
    ("model",),             # edge_sam/ itself: model, checkpoints, deploy-form graphs and their contract, image sources, machine
    ("quantize library",),  # quantize/: recipes, recipe files, layer names, PT2E, QAT graph and checkpoint, INT8 ladder
    ("targets",),           # targets/core/ and one package per runtime: export, load, per-layer drift
    ("devices",),           # targets/devices/: runners on a remote device (validate runs them)
    ("validation",),        # targets/validation/: drift, report, validate; the edge_sam.targets facade re-exports validate
    ("studies",),           # quantize/studies/: sensitivity, mixed precision, QAT, compare (they drive targets and validation)
    ("benchmarking", "deploy"),  # targets/benchmarking/ (edge-sam bench), targets/deploy/ (edge-sam deploy, searches mixed recipes)
    ("apps",),              # apps/: the CLI and the app
)
RANK = {layer: rank for rank, layers in enumerate(LAYER_ORDER) for layer in layers}
# Longest prefix wins; any other edge_sam.targets.<package> is a runtime package ("targets").
LAYER_PREFIXES = {
    "edge_sam": "model",
    "edge_sam.quantize": "quantize library",
    "edge_sam.quantize.studies": "studies",
    "edge_sam.targets": "targets",
    "edge_sam.targets.devices": "devices",
    "edge_sam.targets.validation": "validation",
    "edge_sam.targets.benchmarking": "benchmarking",
    "edge_sam.targets.deploy": "deploy",
    "edge_sam.apps": "apps",
}
# The package itself (targets/__init__.py) is the public face: get_target, load_runner ... and validate.
LAYER_OF_MODULE = {"edge_sam.targets": "validation"}


def layer_of(module: str) -> str:
    if module in LAYER_OF_MODULE:
        return LAYER_OF_MODULE[module]
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in LAYER_PREFIXES:
            return LAYER_PREFIXES[".".join(parts[:end])]
    raise KeyError(module)


def _modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the installed package, by import name, from the four folders."""
    modules = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if folder == "edge_sam" and parts[0] in PACKAGE_DIRS:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, at module level or inside functions (a lazy import is
    still a dependency): ``from a.b import c`` is a.b.c where that is a module, else a.b."""
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
        for target in targets:
            while target not in known and "." in target:  # ``import a.b.c`` of a name inside a module
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.add(target)
    return found


def _import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import against the layer order, as "importer (layer) -> imported (layer)"."""
    found = []
    for module, dependencies in sorted(graph.items()):
        own = layer_of(module)
        for dependency in sorted(dependencies):
            other = layer_of(dependency)
            if other != own and RANK[other] >= RANK[own]:
                found.append(f"{module} ({own}) -> {dependency} ({other})")
    return found


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


def test_every_module_has_a_layer():
    graph = _import_graph()
    assert len(graph) > 120 and graph[f"{PACKAGE}.tflite.layers"], "the parser found the modules and their imports"
    assert {layer_of(module) for module in graph} == set(RANK)


def test_imports_follow_the_layer_order():
    assert layer_violations(_import_graph()) == []


def test_the_layer_check_fails_on_an_upward_import():
    graph = {"edge_sam.targets.core.target": {"edge_sam.quantize.recipes", "edge_sam.targets.validation.drift"},
             "edge_sam.targets.validation.drift": set(), "edge_sam.quantize.recipes": set(),
             "edge_sam.targets.deploy.run": {"edge_sam.targets.benchmarking.run"}, "edge_sam.targets.benchmarking.run": set()}
    assert layer_violations(graph) == [
        "edge_sam.targets.core.target (targets) -> edge_sam.targets.validation.drift (validation)",
        "edge_sam.targets.deploy.run (deploy) -> edge_sam.targets.benchmarking.run (benchmarking)",  # same rank
    ]


def test_a_planted_lazy_upward_import_fails(tmp_path):
    """A copy of the source with one import inside a function of the quantize library that reaches
    a study: the checker reads the files, so it finds what a reviewer could miss."""
    for folder in PACKAGE_DIRS:
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    planted = tmp_path / "quantize" / "recipes.py"
    planted.write_text(planted.read_text() + "\n\ndef _planted():\n    from edge_sam.quantize.studies import mixed\n")
    assert layer_violations(_import_graph(tmp_path)) == [
        "edge_sam.quantize.recipes (quantize library) -> edge_sam.quantize.studies.mixed (studies)"]


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def _readme_layout_folders() -> list[str]:
    """The folders the README's layout picture names, as paths: the tree in its "## Layout" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    picture = section.split("```", 2)[1]
    folders, stack = [], []
    for line in picture.splitlines():
        match = re.match(r"^((?:│   |    )*)(├── |└── )?([\w.-]+/)", line)
        if not match:
            continue
        depth = len(match.group(1)) // 4 + (1 if match.group(2) else 0)
        stack[depth:] = [match.group(3)]
        folders.append("".join(stack).rstrip("/"))
    return folders


def test_the_readme_layout_names_only_folders_that_exist():
    folders = _readme_layout_folders()
    assert "targets/validation" in folders and "quantize/studies" in folders, "the parser read the picture"
    missing = [folder for folder in folders if not (ROOT / folder).is_dir()]
    assert missing == []
    not_packages = [folder for folder in folders if folder.split("/")[0] in PACKAGE_DIRS and folder.split("/")[0] != "apps"
                    and not (ROOT / folder / "__init__.py").is_file()]
    assert not_packages == []
    # and it names every package of quantize/ and targets/
    packages = {str(path.parent.relative_to(ROOT)) for folder in ("quantize", "targets")
                for path in (ROOT / folder).rglob("__init__.py")}
    assert packages - set(folders) == set()


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
    assert f"{PACKAGE}.core.layer_drift" not in reached
    assert not any(m.startswith(f"{PACKAGE}.validation.") for m in reached)


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
    "aoti": ("torch._inductor",),  # aoti_load_package: torch alone
}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_loading_declares_only_the_runtime(name):
    target = get_target(name)
    assert target.runtime_modules == RUNTIME_MODULES[name]
    assert set(target.runtime_modules) <= set(target.export_modules)  # export reads back what it wrote
