"""docs/benchmarks.md's calibration table is rendered from the records it cites."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- calibration-table:start -->", "<!-- calibration-table:end -->"


def _calibration_module():
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        spec = importlib.util.spec_from_file_location("calibration",
                                                      ROOT / "examples" / "calibration.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "examples"))


def test_the_calibration_table_matches_its_records():
    records = [json.loads(line) for line in
               (ROOT / "docs" / "results" / "calibration.jsonl").read_text().splitlines()]
    assert records, "no calibration records"
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    shown = doc[doc.index(START) + len(START):doc.index(END)].strip()
    assert shown == _calibration_module().table(records).strip(), (
        "docs/benchmarks.md's calibration table is stale: re-render it with "
        "python examples/calibration.py --table docs/results/calibration.jsonl")
