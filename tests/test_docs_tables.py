"""The results tables of README.md and docs/benchmarks.md are rendered from the records
they cite (docs/results/*.jsonl, issue 26): re-rendered, every table must equal its page."""

from __future__ import annotations

import pytest

from labelclean import doctables

ROOT = doctables.ROOT
#: What every record says about itself, whoever wrote it.
FIELDS = ("version", "command", "seed", "machine", "verdict")


@pytest.mark.parametrize("block", doctables.BLOCKS, ids=lambda b: f"{b.page}:{b.name}")
def test_the_table_matches_its_records(block):
    page = (ROOT / block.page).read_text()
    assert doctables.shown(page, block.name) == doctables.render(block), (
        f"{block.page}'s {block.name} is stale: re-render it with "
        "python -m labelclean.doctables")


def test_the_check_command_passes_on_the_checkout(capsys):
    assert doctables.main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted({b.records for b in doctables.BLOCKS}))
def test_every_record_names_its_version_command_and_origin(name):
    records = doctables.read_records(ROOT / doctables.RESULTS / name)
    assert records, f"no records in {name}"
    for r in records:
        missing = [f for f in FIELDS if f not in r]
        assert not missing, f"{name}: {r.get('cell')} lacks {missing}"
        assert r["version"] and r["command"]
        # a record a script wrote names its commit; one carried over from a page says so
        if r.get("commit") is None:
            assert r.get("source", "").startswith("transcribed from "), r.get("cell")


def test_a_transcribed_row_says_so():
    records = doctables.read_records(ROOT / doctables.RESULTS / "zoo.jsonl")
    table = doctables.headline_table(records)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) - 1 == sum(1 for r in records if r.get("headline"))
    for row in rows[1:]:
        assert "(transcribed)" in row and "`python " in row
    assert "transcribed from docs/benchmarks.md at " in table


def test_a_stale_table_is_found():
    block = next(b for b in doctables.BLOCKS if b.name == "headline-table")
    page = (ROOT / block.page).read_text()
    stale = page.replace("**0.705**", "**0.750**", 1)
    assert stale != page
    assert doctables.rewrite(block.page, stale) == page
