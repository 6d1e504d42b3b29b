"""Rewrite every marked table and sentence in README.md and docs/*.md from its record, and find
the numbers the docs quote without one.

    python benchmarks/docs_tables.py            # rewrite the marked regions from docs/results/
    python benchmarks/docs_tables.py --check    # exit 1 on a stale region or an unrecorded number
    python benchmarks/docs_tables.py --inventory  # every quoted number: its record and command, or none yet
    python benchmarks/docs_tables.py --baseline   # after numbers got records: shrink docs/results/unrecorded.txt

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
spans, fenced code and link targets are not prose and are not read. A section titled
"Tried and dropped (YYYY-MM-DD)" is dated history and is not read, like CHANGELOG.md. Numbers
that are no measurement (versions, thresholds) are listed in ``NOT_MEASUREMENTS`` with a reason;
those the docs still quote from runs that wrote no record are in docs/results/unrecorded.txt,
a list that may only shrink (``--baseline`` rewrites it after a number moved into a region or
out of the docs).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
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
    r"(?:[Pp]ython|torch|torchao|executorch|onnxruntime|coremltools|litert|CUDA|ONNX opset|Apache-|iOS|macOS|TensorRT|JetPack|XNNPACK|QEMU|QEMU \(|Debian|CMake) ?v?\d+\.\d+":
        "a version of a tool or license",
    r"\b\d+\.\d+\.\d+\b": "a version (three parts)",
    r"[<>]=? ?\d+\.\d+|\bwithin \d+(?:\.\d+)?(?:%|x)|\bunder \d+\.\d+|\bgate[^.]*\(\d\.\d+ / \d\.\d+\)|--[\w-]+ \d+(?:\.\d+)?":
        "a threshold the code or a command sets, not a measured value",
    r"\b(?:to|within|below) \d+(?:\.\d+)?e-\d+": "a tolerance a test asserts",
}


@dataclass(frozen=True)
class Unrecorded:
    """A measured number quoted outside every record region. ``key`` (document, number) survives
    the text around it changing; ``context`` is for the reader."""

    document: str
    line: int
    number: str
    context: str

    @property
    def key(self) -> tuple[str, str]:
        return self.document, self.number

    @property
    def line_text(self) -> str:
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
    blanked = history_blanked(blanked)
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


def history_blanked(text: str) -> str:
    """``text`` with its dated tried-and-dropped sections blanked (to the next heading of their level)."""
    for match in re.finditer(r"^(#+) [^\n]*[Tt]ried and dropped[^\n]*\(\d{4}-\d\d-\d\d\)[^\n]*$", text, re.M):
        level = len(match[1])
        end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
        stop = end.start() if end else len(text)
        text = text[:match.end()] + re.sub(r"[^\n]", " ", text[match.end():stop]) + text[stop:]
    return text


def pending_counts(path: Path = UNRECORDED) -> Counter:
    """How many times each (document, number) may still stand without a record."""
    if not path.is_file():
        return Counter()
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    return Counter((row[0], row[1]) for row in rows)


def problems(root: Path = REPO, results: Path | None = None) -> list[str]:
    """Stale regions and numbers with no record (beyond the pending list), one line each."""
    results = results or root / "docs" / "results"
    allowed = pending_counts(results / "unrecorded.txt")
    found = []
    for path in documents(root):
        if not path.is_file():
            continue
        name = str(path.relative_to(root))
        text = path.read_text(encoding="utf-8")
        found += [f"{name} {p}" for p in stale_regions(text, results)]
        unrecorded = unrecorded_numbers(text, name)
        quoted = Counter(u.key for u in unrecorded)
        found += [f"{name} line {u.line}: {u.number} has no record ({u.context!r})"
                  for u in unrecorded if quoted[u.key] > allowed[u.key]]
    return found


def all_unrecorded(root: Path = REPO) -> list[Unrecorded]:
    return [u for path in documents(root) if path.is_file()
            for u in unrecorded_numbers(path.read_text(encoding="utf-8"), str(path.relative_to(root)))]


def section_of(text: str, line: int) -> str:
    """The heading above ``line`` (1-based), outside code blocks."""
    prose = NOT_PROSE.sub(lambda m: re.sub(r"[^\n]", " ", m[0]) if m[0].startswith("```") else m[0], text)
    headings = [h for h in prose.split("\n")[:line] if h.startswith("#")]
    return headings[-1].lstrip("# ").strip() if headings else "(top)"


def inventory(root: Path = REPO) -> str:
    """Every quoted number: the record and command behind each region, then the unrecorded ones."""
    lines = ["# numbers in README.md and docs/*.md", "", "## from records (record, view, command)"]
    for path in documents(root):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for region in REGION.finditer(text):
            record_path = root / "docs" / "results" / region["record"]
            record = json.loads(record_path.read_text(encoding="utf-8")) if record_path.is_file() else {"command": "(no record)"}
            numbers = [n[0].strip() for n in NUMBER.finditer(region["body"])]
            lines.append(f"{path.relative_to(root)}:{text.count(chr(10), 0, region.start()) + 1} {region['record']} "
                         f"{region['view']} `{record.get('command')}` ({len(numbers)} numbers: {' '.join(numbers[:12])}"
                         f"{' ...' if len(numbers) > 12 else ''})")
    lines += ["", "## with no record yet (docs/results/unrecorded.txt), by section"]
    for path in documents(root):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        by_section: dict[str, list[str]] = {}
        for u in unrecorded_numbers(text, str(path.relative_to(root))):
            by_section.setdefault(section_of(text, u.line), []).append(u.number)
        lines += [f"{path.relative_to(root)} § {section}: {len(numbers)} ({' '.join(numbers[:10])}{' ...' if len(numbers) > 10 else ''})"
                  for section, numbers in by_section.items()]
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
        unrecorded = all_unrecorded()
        added = Counter(u.key for u in unrecorded) - pending_counts()
        if added:
            print("new numbers without a record (give them one instead):\n"
                  + "\n".join(u.line_text for u in unrecorded if u.key in added))
            return 1
        UNRECORDED.write_text("# document, number, context: numbers the docs quote from runs that wrote no record; "
                              "may only shrink (benchmarks/docs_tables.py)\n"
                              + "\n".join(u.line_text for u in unrecorded) + "\n", encoding="utf-8")
        print(f"{len(unrecorded)} numbers still without a record -> {UNRECORDED.relative_to(REPO)}")
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
