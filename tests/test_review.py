"""labelclean apply: the reviewed flagged_samples.csv -> the final dataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from report_runs import Runs, build_runs, tree_digest

from labelclean.cli import main
from labelclean.errors import LabelcleanError
from labelclean.review import APPLY_FILE, LOG_FILE, apply_review
from labelclean.runfiles import read_run


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> Runs:
    return build_runs(tmp_path_factory.getbasetemp() / "labelclean_runs")


@pytest.fixture
def untouched(runs):
    """Asserts, after the test, that no input and no run folder changed."""
    roots = [runs.folder_data, runs.csv_data, runs.features_file.parent,
             runs.folder_run, runs.csv_run, runs.features_run]
    before = [tree_digest(r) for r in roots]
    yield
    assert [tree_digest(r) for r in roots] == before


def review_of(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "flagged_samples.csv", dtype=str, keep_default_na=False)


def save(table: pd.DataFrame, path: Path) -> Path:
    table.to_csv(path, index=False)
    return path


def other_class(label: str, classes: list[str]) -> str:
    return next(c for c in classes if c != label)


# the run folder is read back through the one reader, as apply reads it
def classes_of(run_dir: Path) -> list[str]:
    return read_run(run_dir).classes


def scores_of(run_dir: Path) -> pd.DataFrame:
    return read_run(run_dir).scores


# ----------------------------------------------------------------------------- folder input


def test_default_removes_every_flagged_image(runs, tmp_path, untouched):
    out = tmp_path / "final"
    summary = apply_review(runs.folder_run, out)
    scores = scores_of(runs.folder_run)
    files = {p.relative_to(out / "cleaned").as_posix()
             for p in (out / "cleaned").rglob("*") if p.is_file()}
    assert files == set(scores.loc[~scores["flagged"], "sample_id"])
    assert summary["removed"] == summary["flagged"] == int(scores["flagged"].sum())
    assert summary["final_samples"] == len(scores) - summary["flagged"]
    assert json.loads((out / APPLY_FILE).read_text()) == summary
    log = pd.read_csv(out / LOG_FILE)
    assert len(log) == summary["flagged"] and set(log["action"]) == {"remove"}


def test_folder_actions_land_in_the_right_place(runs, tmp_path, untouched):
    classes = classes_of(runs.folder_run)
    review = review_of(runs.folder_run)
    keep, relabel, bare, dropped = review.iloc[0], review.iloc[1], review.iloc[2], review.iloc[3]
    new_class = other_class(relabel["given_label"], classes)
    review.loc[0, "action"] = "keep"
    review.loc[1, "action"] = f"relabel:{new_class}"
    review.loc[2, "action"] = "relabel"  # takes suggested_label
    review.loc[4, "action"] = ""  # empty: remove
    review.loc[0, "index"] += ".0"  # as a spreadsheet may write it
    review = review.drop(index=3)  # a deleted row: remove
    out = tmp_path / "final"
    summary = apply_review(runs.folder_run, out, review_csv=save(review, tmp_path / "r.csv"))
    cleaned = out / "cleaned"
    src = runs.folder_data

    assert (cleaned / keep["path"]).read_bytes() == (src / keep["path"]).read_bytes()
    log = pd.read_csv(out / LOG_FILE, dtype=str, keep_default_na=False).set_index("path")
    collisions = 0
    for row, label in ((relabel, new_class), (bare, bare["suggested_label"])):
        target = cleaned / log.loc[row["path"], "destination"].removeprefix("cleaned/")
        assert target.parent.name == label
        assert target.read_bytes() == (src / row["path"]).read_bytes()
        assert log.loc[row["path"], "action"] == "relabel"
        assert log.loc[row["path"], "new_label"] == label
        # File names repeat across class folders: the moved image must not replace one.
        same_name = f"{label}/{Path(row['path']).name}"
        if (src / same_name).exists() and not scores_flagged(runs.folder_run, same_name):
            collisions += 1
            assert (cleaned / same_name).read_bytes() == (src / same_name).read_bytes()
            assert target.name == Path(row["path"]).stem + f"__from_{row['given_label']}.png"
        else:
            assert target == cleaned / same_name
    assert collisions >= 1  # the fixture's names repeat, so this case is exercised
    assert not (cleaned / dropped["path"]).exists()
    assert log.loc[dropped["path"], "decided_by"] == "default"
    assert not (cleaned / review.iloc[3]["path"]).exists()  # the emptied action
    n_files = sum(1 for p in cleaned.rglob("*") if p.is_file())
    assert n_files == summary["final_samples"] == summary["unflagged_kept"] + 3
    assert (summary["kept_flagged"], summary["relabelled"]) == (1, 2)


def scores_flagged(run_dir: Path, sample_id: str) -> bool:
    scores = scores_of(run_dir)
    return bool(scores.loc[scores["sample_id"] == sample_id, "flagged"].iloc[0])


@pytest.mark.parametrize("link", ["hardlink", "symlink", "copy"])
def test_link_modes(runs, tmp_path, link, untouched):
    out = tmp_path / "final"
    apply_review(runs.folder_run, out, link=link)
    any_file = next(p for p in (out / "cleaned").rglob("*.png"))
    original = runs.folder_data / any_file.relative_to(out / "cleaned")
    assert any_file.is_symlink() == (link == "symlink")
    same_inode = os.stat(any_file).st_ino == os.stat(original).st_ino
    assert same_inode == (link in ("hardlink", "symlink"))


# ----------------------------------------------------------------------------- CSV inputs


def test_path_csv_actions(runs, tmp_path, untouched):
    review = review_of(runs.csv_run)
    classes = classes_of(runs.csv_run)
    review.loc[0, "action"] = "keep"
    new = other_class(review.loc[1, "given_label"], classes)
    review.loc[1, "action"] = f"relabel:{new}"
    out = tmp_path / "deep" / "final"
    summary = apply_review(runs.csv_run, out, review_csv=save(review, tmp_path / "r.csv"))
    cleaned = pd.read_csv(out / "cleaned.csv", dtype=str, keep_default_na=False)
    original = pd.read_csv(runs.csv_file, dtype=str, keep_default_na=False)

    # Paths stay valid from the new CSV's folder and point at the same images.
    for p in cleaned["path"]:
        assert (out / p).resolve().is_file()
    by_file = {str((out / p).resolve()): i for i, p in enumerate(cleaned["path"])}
    originals = {str((runs.csv_data / p).resolve()): p for p in original["path"]}

    def row_of(path: str) -> pd.Series | None:
        i = by_file.get(str((runs.csv_data / path).resolve()))
        return None if i is None else cleaned.iloc[i]

    assert row_of(review.loc[0, "path"])["label"] == review.loc[0, "given_label"]
    assert row_of(review.loc[1, "path"])["label"] == new
    for p in review.loc[2:, "path"]:
        assert row_of(p) is None
    assert row_of("imgs/broken.png") is None  # left out by the run: stays out
    assert set(by_file) <= set(originals)
    assert len(cleaned) == summary["final_samples"]
    assert list(cleaned.columns) == list(original.columns)
    kept = row_of(review.loc[0, "path"])
    assert kept["note"] == original.loc[original["path"] == review.loc[0, "path"], "note"].iloc[0]


def test_feature_csv_relabel(runs, tmp_path, untouched):
    review = review_of(runs.features_run)
    classes = classes_of(runs.features_run)
    new = other_class(review.loc[0, "given_label"], classes)
    review.loc[0, "action"] = f"relabel:{new}"
    review.loc[1, "action"] = "keep"
    out = tmp_path / "final"
    summary = apply_review(runs.features_run, out, review_csv=save(review, tmp_path / "r.csv"))
    cleaned = pd.read_csv(out / "cleaned.csv")
    original = pd.read_csv(runs.features_file)
    assert len(cleaned) == summary["final_samples"] == len(original) - len(review) + 2
    row = int(review.loc[0, "row"].split()[1])
    match = (cleaned.drop(columns="label") == original.drop(columns="label").iloc[row]).all(axis=1)
    assert cleaned.loc[match, "label"].tolist() == [new]


# ----------------------------------------------------------------------------- refusals


def _edit(review: pd.DataFrame, how: str, classes: list[str], run_dir: Path) -> pd.DataFrame:
    r = review.copy()
    if how == "unknown class":
        r.loc[2, "action"] = "relabel:no-such-class"
    elif how == "unknown action":
        r.loc[2, "action"] = "delete"
    elif how == "no such index":
        r.loc[2, "index"] = "999999"
    elif how == "path mismatch":
        r.loc[2, "path"] = r.loc[3, "path"]
    elif how == "not an integer":
        r.loc[2, "index"] = "two"
    elif how == "unflagged sample":
        scores = scores_of(run_dir)
        clean = scores[~scores["flagged"]].iloc[0]
        r.loc[2, ["index", "path"]] = [str(clean["index"]), clean["sample_id"]]
    elif how == "duplicate":
        r = pd.concat([r.iloc[:3], r.iloc[[1]], r.iloc[3:]], ignore_index=True)
        r.loc[3, "action"] = "keep"
    return r


BAD = {
    "unknown class": "unknown class 'no-such-class'",
    "unknown action": "unknown action 'delete'",
    "no such index": "no sample with this index",
    "path mismatch": "no sample with this index",
    "not an integer": "not a whole number",
    "unflagged sample": "was not flagged",
    "duplicate": "duplicate of data row 2",
}


@pytest.mark.parametrize("how", list(BAD))
def test_bad_edits_are_refused_and_nothing_is_written(runs, tmp_path, how, untouched):
    review = _edit(review_of(runs.folder_run), how, classes_of(runs.folder_run), runs.folder_run)
    path = save(review, tmp_path / "edited.csv")
    out = tmp_path / "final"
    row = 4 if how == "duplicate" else 3
    with pytest.raises(LabelcleanError, match=rf"edited\.csv data row {row} .*{BAD[how]}"):
        apply_review(runs.folder_run, out, review_csv=path)
    assert not out.exists()
    # Nor is a previous output touched, even with overwrite.
    apply_review(runs.folder_run, out)
    before = tree_digest(out)
    with pytest.raises(LabelcleanError):
        apply_review(runs.folder_run, out, review_csv=path, overwrite=True)
    assert tree_digest(out) == before


def test_missing_action_column_is_refused(runs, tmp_path):
    path = save(review_of(runs.folder_run).drop(columns="action"), tmp_path / "r.csv")
    with pytest.raises(LabelcleanError, match="no 'action' column"):
        apply_review(runs.folder_run, tmp_path / "final", review_csv=path)


def test_all_problems_are_counted(runs, tmp_path):
    review = review_of(runs.folder_run)
    review.loc[0, "action"] = "nope"
    review.loc[1, "action"] = "relabel:zz"
    with pytest.raises(LabelcleanError, match=r"data row 1 .*\(and 1 more problem\)$"):
        apply_review(runs.folder_run, tmp_path / "o", review_csv=save(review, tmp_path / "r.csv"))


@pytest.mark.parametrize("where", ["inside the run", "the input", "inside the input"])
def test_out_must_not_overlap(runs, where, untouched):
    out = {
        "inside the run": runs.folder_run / "final",
        "the input": runs.folder_data,
        "inside the input": runs.folder_data / "c0" / "final",
    }[where]
    with pytest.raises(LabelcleanError, match="overlaps"):
        apply_review(runs.folder_run, out, overwrite=True)


def test_overwrite_only_replaces_an_apply_output(runs, tmp_path, untouched):
    out = tmp_path / "final"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(LabelcleanError, match="not empty"):
        apply_review(runs.folder_run, out)
    with pytest.raises(LabelcleanError, match="holds no labelclean output"):
        apply_review(runs.folder_run, out, overwrite=True)
    assert (out / "precious.txt").read_text() == "keep me"
    (out / "precious.txt").unlink()
    apply_review(runs.folder_run, out)
    apply_review(runs.folder_run, out, overwrite=True)  # a previous apply output: replaced


def test_review_inside_out_is_refused(runs, tmp_path):
    out = tmp_path / "final"
    apply_review(runs.folder_run, out)
    review = save(review_of(runs.folder_run), out / "edited.csv")
    with pytest.raises(LabelcleanError, match="contains the review file"):
        apply_review(runs.folder_run, out, review_csv=review, overwrite=True)
    assert review.is_file()


# ----------------------------------------------------------------------------- CLI


def test_cli_apply(runs, tmp_path, untouched):
    review = review_of(runs.folder_run)
    review.loc[0, "action"] = "keep"
    path = save(review, tmp_path / "edited.csv")
    out = tmp_path / "final"
    result = CliRunner().invoke(
        main, ["apply", str(runs.folder_run), "--review", str(path), "--out", str(out),
               "--link", "copy"])
    assert result.exit_code == 0, result.output
    assert "kept 1" in result.output
    assert json.loads((out / APPLY_FILE).read_text())["kept_flagged"] == 1

    review.loc[1, "action"] = "relabel:nope"
    save(review, path)
    result = CliRunner().invoke(
        main, ["apply", str(runs.folder_run), "--review", str(path), "--out", str(out),
               "--overwrite"])
    assert result.exit_code == 2
    assert "edited.csv data row 2" in result.output and "unknown class 'nope'" in result.output
