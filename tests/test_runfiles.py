"""The one reader of a run folder (labelclean.runfiles): what it returns, what it
refuses, and that the report and apply refuse exactly what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_runs import write_fake_run

from labelclean.errors import LabelcleanError
from labelclean.report import load_run, write_report
from labelclean.review import apply_review
from labelclean.runfiles import RunFolder, read_run


def test_scores_are_in_index_order_with_labels_as_text(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", 30)
    scores = pd.read_csv(run_dir / "scores.csv", dtype=str, keep_default_na=False)
    scores["given_label"] = "007"  # a class name that looks like a number stays text
    scores.sample(frac=1, random_state=0).to_csv(run_dir / "scores.csv", index=False)
    run = read_run(run_dir)
    assert isinstance(run, RunFolder) and run.root == run_dir.resolve()
    assert list(run.scores["index"]) == list(range(30))
    assert set(run.scores["given_label"]) == {"007"}
    assert run.scores["flagged"].dtype == bool and run.scores["flagged"].all()
    assert list(run.flagged["rank"]) == list(range(1, 31))  # most suspicious first
    assert run.losses.shape == (6, 30) and run.margins is None
    assert run.classes == [f"k{c}" for c in range(5)] and run.t_c == 3
    assert run.suspicion == "loss" and run.window == 1 and run.id_column == "row"
    assert run.unreadable.empty and list(run.metrics["epoch"]) == [1, 2, 3, 4, 5, 6]


def test_the_report_reads_through_it(tmp_path):
    run_dir = write_fake_run(tmp_path / "run", 20)
    folder, view = read_run(run_dir), load_run(run_dir)
    assert isinstance(view, RunFolder)
    assert view.scores.equals(folder.scores) and view.run == folder.run
    assert np.array_equal(view.losses, folder.losses)


def _damage(run_dir: Path, how: str) -> str:
    """Damage the run as ``how`` says; returns the message the reader must give."""
    scores = pd.read_csv(run_dir / "scores.csv", dtype=str, keep_default_na=False)
    if how == "index":
        scores.loc[0, "index"] = "999"
        message = "sample indices are not 0..N-1"
    elif how == "column":
        scores = scores.drop(columns=["rank"])
        message = "no column rank"
    elif how == "rows":
        scores = scores.iloc[:-1]
        message = "has 19 rows but run.json says 20 samples"
    elif how == "flags":
        scores.loc[0, "flagged"] = "False"
        message = "flags 19 samples but run.json says 20"
    else:  # run.json is not JSON
        (run_dir / "run.json").write_text("{not json")
        return "cannot read"
    scores.to_csv(run_dir / "scores.csv", index=False)
    return message


@pytest.mark.parametrize("how", ["index", "column", "rows", "flags", "run_json"])
def test_report_and_apply_refuse_what_the_reader_refuses(tmp_path, how):
    run_dir = write_fake_run(tmp_path / "run", 20)
    message = _damage(run_dir, how)
    with pytest.raises(LabelcleanError, match=message) as read:
        read_run(run_dir)
    with pytest.raises(LabelcleanError) as report:
        write_report(run_dir)
    with pytest.raises(LabelcleanError) as apply:
        apply_review(run_dir, tmp_path / "out")
    assert str(report.value) == str(apply.value) == str(read.value)
    assert not (run_dir / "report.html").exists() and not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(LabelcleanError, match="run.json is missing"):
        read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"t_c": 1}))
    with pytest.raises(LabelcleanError, match="scores.csv is missing"):
        read_run(tmp_path)
