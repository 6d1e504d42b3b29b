"""Every name the README and docs/*.md give a reader must exist: recipe names, ``edge-sam``
command lines (parsed by the real argparse parser), repository paths, ``edge_sam.*`` Python
paths and edge_sam class names. ``problems_in`` is the checker; the last tests check the checker
itself on text that names things that do not exist."""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from edge_sam.apps.cli import build_parser
from edge_sam.quantize.recipes import recipe_names

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCE_FOLDERS = ("edge_sam", "quantize", "targets", "apps", "benchmarks", "tests")

# Things docs may name that are not in this repository, each with why.
EXTERNAL_FILES = {"export_to_onnx.py": "the EfficientSAM reference repository's ONNX export script"}
NOT_RECIPES = {"dynamic-range": "LiteRT's name for per-run activation quantization"}
# Never in docs: private notes and machine paths a reader does not have.
FORBIDDEN = {"facts.md": "a private note: state the fact and the command instead", "/work/": "a machine path"}

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
RECIPE_SHAPE = r"(?:static|dynamic|naive|palettize|qat|w\d+|w\d+a\d+)-[a-z0-9]+(?:-[a-z0-9]+)*"
# A recipe name is one in code (`static-conv-linear`), after --recipe, or after the word "recipe";
# prose such as "the static-int8 artifacts" is not a name.
RECIPE_NAME = re.compile(rf"`({RECIPE_SHAPE})`|--recipe[ =]({RECIPE_SHAPE})(?![\w-])|recipe [`'\"]?({RECIPE_SHAPE})(?![\w-])")
REPO_PATH = re.compile(r"(?<![\w./~-])((?:edge_sam|quantize|targets|apps|tests|docs|benchmarks|\.ci)/[\w./*-]*[\w*/])(::\w+)?")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
PYTHON_PATH = re.compile(r"(?<![\w.])edge_sam(?:\.[A-Za-z_]\w*)+")
CLASS_NAME = re.compile(r"(?<![\w.])([A-Z][A-Za-z0-9]*(?:Target|Runner|Graph|Recipe|Executor|Engine|Error|Option|Request))"
                        r"(?:\.([a-z_]\w*))?")
BASENAME = re.compile(r"^[\w-]+\.(?:py|cpp|h|txt|swift)$")


# -- what exists ----------------------------------------------------------------------------------
@cache
def parser():
    return build_parser()


@cache
def class_index() -> dict[str, str]:
    """Class name -> the module that defines it, for every class in the project's source."""
    index = {}
    for folder in SOURCE_FOLDERS[:4]:
        for path in (ROOT / folder).rglob("*.py"):
            module = _module_name(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    index.setdefault(node.name, module)
    return index


@cache
def basenames() -> set[str]:
    return {p.name for folder in (*SOURCE_FOLDERS, "docs", ".ci") for p in (ROOT / folder).rglob("*") if p.is_file()}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] != "edge_sam":
        parts.insert(0, "edge_sam")  # quantize/, targets/, apps/ are installed under edge_sam
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_path_exists(dotted: str) -> bool:
    """``edge_sam.a.b.c``: the longest importable module prefix, then attributes for the rest."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError as exc:
            if exc.name and not dotted.startswith(exc.name):
                raise  # a toolchain the module needs is missing: that is not the doc's fault
            continue
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


PLACEHOLDER_NUMBER = re.compile(r"invalid (?:int|float) value: '([A-Z][A-Z0-9_]*)'")


def cli_problem(argv: list[str], partial: bool) -> str | None:
    """None when ``edge-sam argv`` parses. ``partial``: a command named in prose, which may leave
    out its required arguments. A placeholder (``--max-float N``) stands for a number."""
    argv = list(argv)
    for _ in range(len(argv) + 1):
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                parser().parse_args(argv)
            return None
        except SystemExit as exc:
            message = stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else ""
            if exc.code == 0 or (partial and "the following arguments are required" in message):
                return None
            placeholder = PLACEHOLDER_NUMBER.search(message)
            if placeholder is None or placeholder.group(1) not in argv:
                return message or f"exit {exc.code}"
            argv[argv.index(placeholder.group(1))] = "1"
    return None


# -- the checker ----------------------------------------------------------------------------------
def edge_sam_commands(text: str) -> list[tuple[list[str], bool]]:
    """(argv after ``edge-sam``, partial) for every command line in code blocks and inline code."""
    commands = []
    blocks = FENCE.findall(text)
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            for segment in re.split(r"&&|\|\||;|\|", line):
                commands += [(argv, False) for argv in _argv(segment)]
    prose = FENCE.sub("", text)
    for span in INLINE_CODE.findall(prose):
        commands += [(argv, True) for argv in _argv(span.replace("\n", " "))]
    return commands


def _argv(segment: str) -> list[list[str]]:
    segment = re.sub(r"(^|\s)#.*$", "", segment.strip())  # a trailing comment
    try:
        words = shlex.split(segment)
    except ValueError:
        return []
    for program in ("edge-sam", "edge_sam.apps.cli"):
        if program in words:
            start = words.index(program)
            if program == "edge-sam" and start > 0 and words[start - 1] not in ("", "$"):
                return []  # `pip install edge-sam[...]`-like mentions are not commands
            # "[--flag VALUE]" marks an optional argument in a usage line: check the flag all the same
            argv = [w.replace("[", "").replace("]", "") for w in words[start + 1:]]
            return [[w for w in argv if w]]
    return []


def problems_in(text: str, where: Path) -> list[str]:
    """Every name in ``text`` (a Markdown file at ``where``) that does not exist, one line each."""
    problems = []
    for needle, why in FORBIDDEN.items():
        if needle in text:
            problems.append(f"names {needle!r}: {why}")
    known_recipes = set(recipe_names())
    named = {name for groups in RECIPE_NAME.findall(text) for name in groups if name}
    for name in sorted(named - known_recipes - set(NOT_RECIPES)):
        problems.append(f"recipe '{name}' is not a recipe (known: {', '.join(sorted(known_recipes))})")
    for argv, partial in edge_sam_commands(text):
        problem = cli_problem(argv, partial or "..." in argv)  # "..." elides arguments
        if problem:
            problems.append(f"`edge-sam {shlex.join(argv)}` does not parse: {problem}")
    code = " ".join(INLINE_CODE.findall(text) + FENCE.findall(text))
    for path, test in set(REPO_PATH.findall(text)):
        path = path.rstrip(".")
        if "." not in Path(path).name and not path.endswith("/") and path not in code:
            continue  # prose such as "quantize/dequantize pairs"; a folder is named in code or with a slash
        matches = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
        if not matches:
            problems.append(f"path {path} does not exist")
        elif test and not re.search(rf"^(?:def|class|async def) {re.escape(test[2:])}\b", (ROOT / path).read_text(), re.M):
            problems.append(f"{path} has no {test[2:]}")
    for link in set(LINK.findall(text)):
        if "://" not in link and not (where.parent / link).exists():
            problems.append(f"link {link} does not exist (relative to {where.parent.name}/)")
    for dotted in sorted(set(PYTHON_PATH.findall(text))):
        if not python_path_exists(dotted):
            problems.append(f"Python path {dotted} does not exist")
    for name, attribute in sorted(set(CLASS_NAME.findall(text))):
        module = class_index().get(name)
        if module is None:
            problems.append(f"class {name} is not defined in this repository")
        elif attribute and not hasattr(getattr(importlib.import_module(module), name), attribute):
            problems.append(f"{name} has no attribute {attribute}")
    for span in set(INLINE_CODE.findall(text)):
        if BASENAME.match(span) and span not in basenames() and span not in EXTERNAL_FILES:
            problems.append(f"file {span} is not in this repository")
    return problems


# -- the docs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("document", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_every_name_in_the_docs_exists(document):
    problems = problems_in(document.read_text(encoding="utf-8"), document)
    assert not problems, f"{document.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_the_docs_name_commands_and_paths():
    """The checker sees the README's commands (so a passing test above means something)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = [argv[0] for argv, _ in edge_sam_commands(readme) if argv]
    assert {"demo", "segment", "export", "validate", "train"} <= set(commands), commands
    assert len(REPO_PATH.findall(readme)) >= 5


# -- the checker itself ---------------------------------------------------------------------------
BAD = """
Quantize with `static-conv-everything`, or:

```bash
edge-sam export --target onnx --precision int8 --no-such-flag --out out/x
edge-sam export --target onnx --recipe dynamic-linear-all --out out/y
```

Run `edge-sam no-such-command`, `edge-sam export --target onnx --calibration-images many --out DIR`, `edge-sam export --target onnx [--no-such-option X] --out DIR`. See targets/onnx_graphs.py, tests/test_onnx.py::test_no_such_test,
[the guide](no_such_doc.md), `edge_sam.targets.no_such_module.thing`, `edge_sam.transforms.no_such_function`,
`LiteRTTarget.export`, `OnnxTarget.no_such_method`, `coreml_executor.py`, the numbers in facts.md
and /work/runs/synth/test.
"""

GOOD = """
```bash
edge-sam export --target onnx --precision int8 --recipe dynamic-linear --checkpoint reference --out out/x
```

`edge-sam data synth`'s output; see targets/onnx/graphs.py, tests/test_docs_claims.py::test_the_checker_flags_what_does_not_exist,
[onnx](onnx.md), `edge_sam.transforms.preprocess`, `OnnxTarget.export`, `static-conv-linear`, `conftest.py`,
the static-int8 artifacts, `edge-sam export --target onnx [--recipe dynamic-linear] --out DIR --calibration-images N`.
"""


def test_the_checker_flags_what_does_not_exist():
    problems = "\n".join(problems_in(BAD, ROOT / "docs" / "example.md"))
    for expected in (
        "recipe 'static-conv-everything'", "recipe 'dynamic-linear-all'", "unrecognized arguments: --no-such-flag", "unrecognized arguments: --no-such-option X", "invalid int value: 'many'",
        "invalid choice: 'no-such-command'", "path targets/onnx_graphs.py", "has no test_no_such_test",
        "link no_such_doc.md", "edge_sam.targets.no_such_module.thing", "edge_sam.transforms.no_such_function",
        "class LiteRTTarget", "OnnxTarget has no attribute no_such_method", "file coreml_executor.py",
        "'facts.md'", "'/work/'",
    ):
        assert expected in problems, f"{expected!r} not flagged in:\n{problems}"


def test_the_checker_passes_what_exists():
    assert problems_in(GOOD, ROOT / "docs" / "example.md") == []
