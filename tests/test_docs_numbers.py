"""Every number README.md and docs/*.md quote comes from a record in docs/results/: a marked region
must read exactly as its record renders (benchmarks/docs_tables.py), and a measured number outside
every region is a failure unless docs/results/unrecorded.txt still lists it (a list that may only
shrink). The last tests plant mismatches in a copy of the docs and check that they are caught."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _docs_tables():
    path = ROOT / "benchmarks" / "docs_tables.py"
    spec = importlib.util.spec_from_file_location("docs_tables", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_tables", module)
    spec.loader.exec_module(module)
    return module


docs_tables = _docs_tables()


def test_every_quoted_number_matches_its_record():
    problems = docs_tables.problems()
    assert not problems, "run `python benchmarks/docs_tables.py`, or give these numbers a record:\n" + "\n".join(problems)


def test_the_unrecorded_list_names_only_numbers_the_docs_still_quote():
    """A number that got its record (or left the docs) leaves the list too, so the list only shrinks."""
    quoted = Counter(u.key for u in docs_tables.all_unrecorded())
    gone = docs_tables.pending_counts() - quoted
    assert not gone, "run `python benchmarks/docs_tables.py --baseline`; no longer quoted:\n" + "\n".join(map(str, gone))


def test_readme_regions_name_records_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    regions = list(docs_tables.REGION.finditer(text))
    assert len(regions) >= 5
    for region in regions:
        record = json.loads((ROOT / "docs" / "results" / region["record"]).read_text(encoding="utf-8"))
        assert {"command", "git_commit", "date", "machine"} <= set(record), region["record"]


# -- the checker, on planted mistakes -------------------------------------------------------------
@pytest.fixture
def docs_copy(tmp_path) -> Path:
    """README, CHANGELOG, docs/*.md and docs/results/ as they are, in a folder of their own."""
    for name in ("README.md", "CHANGELOG.md"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    assert docs_tables.problems(tmp_path) == []
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) >= 1, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_a_number_edited_by_hand_inside_a_region_is_caught(docs_copy):
    readme = docs_copy / "README.md"
    region = next(docs_tables.REGION.finditer(readme.read_text(encoding="utf-8")), None)
    number = docs_tables.NUMBER.search(region["body"])[0].strip()
    changed = region[0].replace(number, number + "1", 1)
    _edit(readme, region[0], changed)
    problems = "\n".join(docs_tables.problems(docs_copy))
    assert f"{region['record']} {region['view']} renders" in problems, problems


def test_a_record_that_changed_makes_its_region_stale(docs_copy):
    record_path = docs_copy / "docs" / "results" / "parity.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record["errors"]["image_embeddings_rel_max"] = 4.5e-6
    record_path.write_text(json.dumps(record), encoding="utf-8")
    problems = "\n".join(docs_tables.problems(docs_copy))
    assert "parity.json parity-errors renders 'image embeddings within 1e-4 of their max (measured: 4.5e-6)" in problems


@pytest.mark.parametrize("sentence", ["The encoder takes 123.4 ms here.", "It keeps 97.5% of the masks.",
                                      "Export took 42 s.", "The error is 3.1e-5 now.", "INT8 is 1.7x faster."])
def test_a_measured_number_without_a_record_is_caught(docs_copy, sentence):
    _edit(docs_copy / "docs" / "deploy.md", "\n\n", f"\n\n{sentence}\n\n")
    problems = "\n".join(docs_tables.problems(docs_copy))
    number = docs_tables.NUMBER.search(sentence)[0].strip()
    assert f"{number} has no record" in problems, problems


@pytest.mark.parametrize("sentence", [
    "Needs Python 3.11 and torch 2.13.0 (Apache-2.0).",
    "Run `edge-sam bench --rounds 5 --min-mask-iou 0.98`, see [the page](x_1.5.md).",
    "The gate is mean mask IoU (0.98 / 0.95), mean >= 0.99 on the search images.",
    "A 1024 px image, a 32 x 32 grid, fp16 and W8A8, 6 prompt slots, issue #24.",
    "Both graphs match the model to 1e-5, the logits within 1e-3 of their max.",
])
def test_what_is_no_measurement_passes(docs_copy, sentence):
    _edit(docs_copy / "docs" / "deploy.md", "\n\n", f"\n\n{sentence}\n\n")
    assert docs_tables.problems(docs_copy) == []


def test_render_rewrites_a_region_from_its_record(docs_copy):
    text = "Measured: <!-- record: parity.json parity-errors -->old text<!-- /record -->."
    rendered = docs_tables.render(text, docs_copy / "docs" / "results")
    assert "old text" not in rendered and "99.9999" in rendered
    assert docs_tables.stale_regions(rendered, docs_copy / "docs" / "results") == []


def test_only_a_dated_tried_and_dropped_section_is_read_as_history(docs_copy):
    deploy = docs_copy / "docs" / "deploy.md"
    text = deploy.read_text(encoding="utf-8")
    deploy.write_text(text + "\n## Caching: tried and dropped (2026-11-30)\n\nIt saved 12.34 ms.\n\n### Why\n\n"
                      "Only 3.456% of the time.\n\n## Next\n\nThe encoder takes 77.77 ms.\n", encoding="utf-8")
    problems = "\n".join(docs_tables.problems(docs_copy))
    assert "12.34 has no record" not in problems and "3.456% has no record" not in problems, problems
    assert "77.77 has no record" in problems, problems
    deploy.write_text(text + "\n## Caching: tried and dropped\n\nIt saved 12.34 ms.\n", encoding="utf-8")
    assert "12.34 has no record" in "\n".join(docs_tables.problems(docs_copy))
