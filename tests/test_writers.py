"""The registry of source writers: each input origin's cleaned output, and a writer
registered for a new origin is the one a run uses."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_images

from labelclean import Cleaner, CleanResult, Dataset, LabelcleanError
from labelclean.export import export_result
from labelclean.writers import (
    WRITERS,
    ImageTreeWriter,
    TableWriter,
    output_forbidden,
    register_writer,
    unregister_writer,
    writer_for,
)

FAST = dict(model="mlp:16", max_epochs=4, patience=10, lr=0.02, batch_size=32,
            probe_every=0, min_steps=10, patience_steps=0, progress=False, force_flags=True)


@pytest.fixture(scope="module")
def result() -> CleanResult:
    x, _, given, _ = synthetic_images(120, 3, 0.2, seed=7)
    return Cleaner(**FAST).fit(Dataset.from_arrays(x, given))


class KeptIds(TableWriter):
    """A new format: the kept samples' ids, one a line."""

    output = "cleaned.txt"

    def __init__(self) -> None:
        super().__init__(in_memory=True)
        self.calls = 0

    def write(self, result: CleanResult, keep: np.ndarray, folder: Path, out: Path,
              link: str) -> None:
        self.calls += 1
        ids = [i for i, k in zip(result.dataset.ids, keep) if k]
        (folder / self.output).write_text("".join(f"{i}\n" for i in ids))


def test_every_origin_the_readers_make_has_a_writer():
    assert set(WRITERS) >= {"folder", "paths", "dataframe", "features", "arrays", "hf", "torch"}
    assert isinstance(writer_for("folder"), ImageTreeWriter)
    assert writer_for("folder").output == "cleaned"
    assert {writer_for(o).output for o in WRITERS if o != "folder"} == {"cleaned.csv"}


def test_a_registered_writer_writes_a_new_origins_cleaned_output(result, tmp_path):
    writer = register_writer("ids", KeptIds())
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_writer("ids", KeptIds())
        custom = dataclasses.replace(result, dataset=dataclasses.replace(result.dataset,
                                                                         origin="ids"))
        out = export_result(custom, tmp_path / "run", report=False)
    finally:
        unregister_writer("ids")
    assert "ids" not in WRITERS and writer.calls == 1
    kept = (out / "cleaned.txt").read_text().split()
    assert kept == [i for i, f in zip(result.dataset.ids,
                                      result.scores.sort_values("index")["flagged"]) if not f]
    assert 0 < len(kept) < len(result.dataset)
    assert not (out / "cleaned.csv").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["outputs"]["cleaned"] == "cleaned.txt"
    assert run["input"]["source"] == "<ids object>"  # in memory: no file to name


def test_an_origin_without_a_writer_is_refused(result, tmp_path):
    custom = dataclasses.replace(result, dataset=dataclasses.replace(result.dataset,
                                                                     origin="nowhere"))
    with pytest.raises(LabelcleanError, match="no writer for inputs of origin 'nowhere'"):
        export_result(custom, tmp_path / "run", report=False)


def test_the_table_writer_keeps_the_input_rows(result, tmp_path):
    out = export_result(result, tmp_path / "run", report=False)
    cleaned = pd.read_csv(out / "cleaned.csv")
    keep = ~result.scores.sort_values("index")["flagged"].to_numpy()
    assert list(cleaned["index"]) == list(np.flatnonzero(keep))


def test_a_feature_dataframe_exports_its_kept_rows(tmp_path):
    """A DataFrame without a path column is a feature table: cleaned.csv is its kept
    rows with every column it had (not a path table, which it has no paths for)."""
    x, _, given, _ = synthetic_images(120, 3, 0.2, seed=7)
    frame = pd.DataFrame(x.reshape(len(x), -1)[:, :16].astype(float),
                         columns=[f"f{i}" for i in range(16)]).assign(label=given)
    fitted = Cleaner(**FAST).fit(frame)
    assert fitted.dataset.origin == "dataframe" and fitted.dataset.kind == "features"
    out = export_result(fitted, tmp_path / "run", report=False)
    cleaned = pd.read_csv(out / "cleaned.csv")
    keep = ~fitted.scores.sort_values("index")["flagged"].to_numpy()
    assert list(cleaned.columns) == list(frame.columns)
    pd.testing.assert_frame_equal(cleaned, frame[keep].reset_index(drop=True),
                                  check_dtype=False)


def test_what_the_output_may_not_overlap_follows_the_origin(tmp_path):
    images = tmp_path / "images" / "c0"
    images.mkdir(parents=True)
    files = [images / "a.png", images / "b.png"]
    csv = tmp_path / "labels.csv"
    assert output_forbidden(tmp_path / "data", "folder") == [tmp_path / "data"]
    assert output_forbidden(csv, "features") == [csv]
    assert output_forbidden(csv, "paths", files) == [csv, images.resolve()]
    assert output_forbidden(Path("."), "dataframe", files) == [images.resolve()]
    assert output_forbidden(Path("."), "arrays") == []
