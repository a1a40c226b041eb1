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


#: What a record of the cells tables (benchmarks_misc.jsonl, performance.jsonl) carries.
CELL_FIELDS = ("data", "labels", "samples", "seed", "version", "machine", "settings",
               "metrics", "command", "source")


@pytest.mark.parametrize("name", ["benchmarks_misc.jsonl", "performance.jsonl"])
def test_a_cells_record_says_what_was_measured_and_how(name):
    for r in doctables.read_records(ROOT / doctables.RESULTS / name):
        missing = [f for f in CELL_FIELDS if f not in r]
        assert not missing, f"{name}: {r['table']} lacks {missing}"
        assert r.get("commit") or r.get("first_written"), r["table"]


def test_every_cells_table_has_a_block_and_records():
    blocks = {b.name: b for b in doctables.BLOCKS}
    for name, spec in doctables.CELLS_TABLES.items():
        records = doctables.read_records(ROOT / doctables.RESULTS / blocks[name].records)
        assert any(r["table"] == spec["table"] for r in records), name


def test_the_summary_quotes_the_study():
    """The Summary's labelclean, best-epoch and cleanlab numbers are the study's records'."""
    study = doctables.read_records(ROOT / doctables.RESULTS / "offline_study.jsonl")
    summary = [r for r in doctables.read_records(ROOT / doctables.RESULTS / "benchmarks_misc.jsonl")
               if r["table"] == "summary"]
    assert len(summary) == 12
    for r in summary:
        m = r["metrics"]
        setting = m["setting"].replace("pair-flip", "pairflip")
        cell = [s for s in study if s["model"] == r["model"] and s["setting"] == setting]
        rule = next(s for s in cell if s["table"].startswith("rules-") and s["rule"] == "auto2")
        assert (m["f1"], m["f1_sd"]) == (rule["metrics"]["f1"]["mean"], rule["metrics"]["f1"]["sd"])
        assert m["best_epoch_f1"] == rule["metrics"]["oracle_f1"]["mean"]
        filters = [s for s in cell if s["table"].startswith("cleanlab-")]
        if "cleanlab_f1" in m:
            f1s = [s["metrics"]["f1"] for s in filters if s["method"].startswith("cleanlab/")]
            f1s = [(f["mean"], f["sd"]) if isinstance(f, dict) else (f, None) for f in f1s]
            assert (m["cleanlab_f1"], m.get("cleanlab_f1_sd")) in f1s
            assert m["cleanlab_f1"] == max(f for f, _ in f1s)
        ours = [s for s in filters if s["method"] == "labelclean/auto2"]
        if "passes" in m and ours:  # regnetx_002 at 0.2 has no cleanlab cell to hold it
            assert m["passes"] == ours[0]["metrics"]["passes"]
        if "cleanlab_clean_low" in m:
            clean = [s["metrics"]["flagged_share"]["mean"] for s in study
                     if s["table"].startswith("cleanlab-") and s["model"] == r["model"]
                     and s["setting"] == "symmetric 0" and s["method"].startswith("cleanlab/")]
            assert (m["cleanlab_clean_low"], m["cleanlab_clean_high"]) == (min(clean), max(clean))


def test_a_stale_performance_table_is_found():
    page = (ROOT / "docs/performance.md").read_text()
    stale = page.replace("| 13.8 | 10.2 |", "| 13.9 | 10.2 |", 1)
    assert stale != page
    assert doctables.rewrite("docs/performance.md", stale) == page


def test_an_indented_block_keeps_its_indentation():
    page = (ROOT / "docs/benchmarks.md").read_text()
    shown = doctables.shown(page, "aggre-checks-table")
    assert shown.startswith("| check |")
    assert "\n  | share of flags" in page
    stale = page.replace("| 0.34 | 0.11 |", "| 0.35 | 0.11 |", 1)
    assert stale != page
    assert doctables.rewrite("docs/benchmarks.md", stale) == page


def test_a_cell_template():
    record = {"metrics": {"a": 0.221, "b": None, "c": [0.5, 0.25], "t": "text"},
              "bold": {"x": ["22.1"]}}
    assert doctables._cell(record, "x", ("{a:.1%} ({t})",)) == "**22.1** % (text)"
    assert doctables._cell(record, "y", ("{b:.2f} s",)) == "—"
    assert doctables._cell(record, "y", ("{c:.2f}",)) == "0.50 / 0.25"
    assert doctables._cell(record, "y", ("{missing}", "{a:.1p}")) == "22.1"
    assert doctables._cell(record, "y", ("{missing}",)) == ""


def test_the_calibration_summary_counts_each_versions_last_record_per_cell():
    def record(cell, version, verdict, est, low, high, true, f1=0.0, labels="sym0.2"):
        return {"cell": cell, "dataset": cell.split(":")[0], "labels": labels, "seed": 0,
                "version": version, "verdict": verdict, "f1": f1, "precision_would": true,
                "estimate": {"precision": {"value": est, "low": low, "high": high}}}

    records = [
        record("a:sym0.2", "0.9.0", "flagged", 0.5, 0.4, 0.6, 0.9),      # replaced below
        record("a:sym0.2", "0.9.0", "flagged", 0.8, 0.7, 0.9, 0.85),     # error 0.05, inside
        record("cifar10n:worse", "0.9.0", "flagged", 0.6, 0.5, 0.65, 0.7, 0.76, "worse"),
        record("cifar10n-pool1:worse", "0.9.0", "flagged", 0.7, 0.6, 0.8, 0.7, 0.74, "worse"),
        record("b:aggre", "0.9.0", "withheld", 0.3, 0.2, 0.4, 0.2),      # rightly withheld
        record("c:sym0.8", "0.9.0", "withheld", 0.3, 0.2, 0.4, 0.8),     # wrongly withheld
        record("d:random", "0.9.0", "withheld", 0.9, 0.8, 1.0, 0.9, labels="random"),
        record("a:sym0.2", "0.8.0", "flagged", 0.1, 0.0, 0.2, 0.9),      # before 0.9: no row
    ]
    table = doctables.calibration_summary(records)
    rows = [line for line in table.splitlines()[2:]]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells == ["0.9", "6 (6)", "3", "0.050", "2 of 3", "2", "1",
                     "0.740 / 0.750 / 0.760 (2 draws)"]
