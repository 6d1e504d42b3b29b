"""Rewrite every marked table and sentence in README.md and docs/*.md from its record, and find
the numbers the docs quote without one.

    python benchmarks/docs_tables.py            # rewrite the marked regions from docs/results/
    python benchmarks/docs_tables.py --check    # exit 1 on a stale region or an unrecorded number
    python benchmarks/docs_tables.py --inventory

How to publish a number: make the command that measures it write a JSON record into
docs/results/ (``records.record_header()`` plus the numbers), add a view to
``benchmarks/docs_views.py`` (a function from the record to Markdown: table rows or a phrase),
and put the marker where the docs quote it, around the text the view renders::

    <!-- record: deploy_default.json deploy-ship-table -->
    ...rendered here, never edited by hand...
    <!-- /record -->

A marker works inline too (``<!-- record: parity.json parity-errors -->3.2e-6<!-- /record -->``).
Then run this script. A test (tests/test_docs_numbers.py) fails when a region differs from what
its record renders, or when a measured number stands outside every region: a decimal, a
percentage, a power of ten, or an integer with a unit of time, size, rate, ratio or dB. Code
spans, fenced code and link targets are not prose and are not read. Numbers that are no
measurement (versions, ratios in a name) are listed in ``NOT_MEASUREMENTS`` with a reason;
those the docs still quote from runs that wrote no record are in docs/results/unrecorded.txt,
a list that may only shrink (``--baseline`` rewrites it after a number moved into a region or
out of the docs).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from docs_views import VIEWS  # noqa: E402  (a sibling module)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
UNRECORDED = RESULTS / "unrecorded.txt"

REGION = re.compile(r"(<!-- record: (?P<record>[\w.-]+\.json) (?P<view>[\w-]+) -->)(?P<body>.*?)(<!-- /record -->)", re.S)
NOT_PROSE = re.compile(r"^```.*?^```|(?<!`)`[^`\n]+`(?!`)|<!--.*?-->|\]\([^)]*\)", re.S | re.M)
UNIT = r"(?:\s?(?:ms|s|min|h|MB|GB|KB|GiB|MiB|kB|GFLOP/s|GOP/s|dB|x(?! ?\d)|×|%|µs|us|fps)(?![\w/]))"
NUMBER = re.compile(rf"(?<![\w.\-/#])(?:\d+\.\d+(?:e[-+]?\d+)?%?|\d+e[-+]?\d+|\d+(?:,\d\d\d)*{UNIT})(?![\w.]\d)")

# Numbers in prose that are no measurement, each with why (a regex over the number and its paragraph).
NOT_MEASUREMENTS = {
    r"(?:[Pp]ython|torch|torchao|executorch|onnxruntime|coremltools|litert|CUDA|ONNX opset|Apache-|iOS|macOS|TensorRT|JetPack|XNNPACK) ?v?\d+\.\d+":
        "a version of a tool or license",
    r"\b\d+\.\d+\.\d+\b": "a version (three parts)",
    r"[<>]=? ?\d+\.\d+|\bwithin \d+(?:\.\d+)?(?:%|x|e-\d+)|\bunder \d+\.\d+|\bgate[^.]*\(\d\.\d+ / \d\.\d+\)|--[\w-]+ \d+(?:\.\d+)?":
        "a threshold the code or a command sets, not a measured value",
}


@dataclass(frozen=True)
class Unrecorded:
    """A measured number quoted outside every record region; ``key`` survives lines moving."""

    document: str
    line: int
    number: str
    context: str

    @property
    def key(self) -> str:
        return f"{self.document}\t{self.number}\t{self.context}"


def documents(root: Path = REPO) -> list[Path]:
    """README.md and docs/*.md (not CHANGELOG.md: history quotes past runs, each with its date)."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def render(text: str, results: Path = RESULTS) -> str:
    """``text`` with every region's body replaced by what its view renders from its record."""
    def body(match: re.Match) -> str:
        view = VIEWS.get(match["view"])
        if view is None:
            raise SystemExit(f"no view {match['view']!r} (known: {', '.join(sorted(VIEWS))})")
        path = results / match["record"]
        if not path.is_file():
            raise SystemExit(f"no record {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
        rendered = view(json.loads(path.read_text(encoding="utf-8")))
        inline = "\n" not in match["body"]
        return match[1] + (rendered if inline else f"\n{rendered}\n") + match[5]
    return REGION.sub(body, text)


def stale_regions(text: str, results: Path = RESULTS) -> list[str]:
    """One line per region whose text is not what its record renders."""
    expected = list(REGION.finditer(render(text, results)))
    problems = []
    for have, want in zip(REGION.finditer(text), expected):
        if have["body"] != want["body"]:
            line = text.count("\n", 0, have.start()) + 1
            problems.append(f"line {line}: {have['record']} {have['view']} renders {want['body'].strip()[:200]!r}, "
                            f"the text says {have['body'].strip()[:200]!r}")
    return problems


def unrecorded_numbers(text: str, document: str) -> list[Unrecorded]:
    """Every measured number in prose outside the record regions."""
    blanked = REGION.sub(lambda m: " " * len(m[0]), text)  # keeps offsets, so line numbers stay right
    blanked = NOT_PROSE.sub(lambda m: re.sub(r"[^\n]", " ", m[0]), blanked)
    found = []
    for paragraph in re.finditer(r"(?:[^\n]|\n(?!\n))+", blanked):
        flat = paragraph[0].replace("\n", " ")  # a sentence may wrap; same length, same offsets
        excluded = [m.span() for pattern in NOT_MEASUREMENTS for m in re.finditer(pattern, flat)]
        for number in NUMBER.finditer(flat):
            if any(start <= number.start() < end for start, end in excluded):
                continue
            at = paragraph.start() + number.start()
            line_start = text.rfind("\n", 0, at) + 1
            context = " ".join(text[max(line_start, at - 30):at + len(number[0]) + 30].split())
            found.append(Unrecorded(document, text.count("\n", 0, at) + 1, number[0].strip(), context))
    return found


def pending_keys(path: Path = UNRECORDED) -> set[str]:
    if not path.is_file():
        return set()
    return {line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")}


def problems(root: Path = REPO, results: Path | None = None, pending: set[str] | None = None) -> list[str]:
    """Stale regions and numbers with no record (beyond the pending list), one line each."""
    results = results or root / "docs" / "results"
    pending = pending_keys(results / "unrecorded.txt") if pending is None else pending
    found = []
    for path in documents(root):
        if not path.is_file():
            continue
        name = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        found += [f"{name} {p}" for p in stale_regions(text, results)]
        found += [f"{name} line {u.line}: {u.number} has no record ({u.context!r})"
                  for u in unrecorded_numbers(text, name) if u.key not in pending]
    return found


def all_unrecorded(root: Path = REPO) -> list[Unrecorded]:
    return [u for path in documents(root) if path.is_file()
            for u in unrecorded_numbers(path.read_text(encoding="utf-8"), str(path.relative_to(root)))]


def inventory(root: Path = REPO) -> str:
    """Every quoted number: the record and command behind each region, then the unrecorded ones."""
    lines = ["# numbers in README.md and docs/*.md", "", "## from records (record, view, command)"]
    for path in documents(root):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for region in REGION.finditer(text):
            record = json.loads((root / "docs" / "results" / region["record"]).read_text(encoding="utf-8"))
            numbers = [n[0].strip() for n in NUMBER.finditer(region["body"])]
            lines.append(f"{path.relative_to(root)}:{text.count(chr(10), 0, region.start()) + 1} {region['record']} "
                         f"{region['view']} `{record.get('command')}` ({len(numbers)} numbers: {' '.join(numbers[:12])}"
                         f"{' ...' if len(numbers) > 12 else ''})")
    lines += ["", "## with no record yet (docs/results/unrecorded.txt)"]
    lines += [f"{u.document}:{u.line} {u.number}  {u.context}" for u in all_unrecorded(root)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="rewrite nothing; exit 1 on any problem")
    action.add_argument("--inventory", action="store_true", help="print every quoted number and its source")
    action.add_argument("--baseline", action="store_true", help="rewrite docs/results/unrecorded.txt (only removals)")
    args = parser.parse_args(argv)
    if args.inventory:
        print(inventory())
        return 0
    if args.baseline:
        keys = [u.key for u in all_unrecorded()]
        added = set(keys) - pending_keys()
        if added:
            print("new numbers without a record (give them one instead):\n" + "\n".join(sorted(added)))
            return 1
        UNRECORDED.write_text("# numbers the docs quote from runs that wrote no record: may only shrink "
                              "(benchmarks/docs_tables.py)\n" + "\n".join(dict.fromkeys(keys)) + "\n", encoding="utf-8")
        print(f"{len(set(keys))} numbers still without a record -> {UNRECORDED.relative_to(REPO)}")
        return 0
    if not args.check:
        for path in documents():
            if path.is_file():
                text = path.read_text(encoding="utf-8")
                if (new := render(text)) != text:
                    path.write_text(new, encoding="utf-8")
                    print(f"rewrote {path.relative_to(REPO)}")
    found = problems()
    print("\n".join(found) or "every quoted number matches its record")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
