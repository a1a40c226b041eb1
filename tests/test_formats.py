"""Input formats as plugins (labelclean.formats): a toy format defined in this file,
with no change to the package, is registered, detected, read, cleaned by a run (its
kept samples written back in the toy format) and applied; and the one path policy
(labelclean.paths.overlapped_input) that keeps every folder a run writes out of the
input, as the input's format describes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_images, write_folder

from labelclean import Cleaner, Dataset, LabelcleanError, load_dataset
from labelclean.cli import main
from labelclean.formats import (
    FORMATS,
    InputFormat,
    file_format,
    input_footprint,
    register_format,
    unregister_format,
)
from labelclean.paths import check_outside, check_overlap, overlapped_input, within
from labelclean.writers import WRITERS, writer_for

# small and short: these runs are about the files, not the decision; --force-flags
# writes flags whatever the verdict, so that apply has something to review
FAST = dict(model="mlp:16", max_epochs=4, patience=10, lr=0.05, batch_size=32,
            probe_every=0, min_steps=10, patience_steps=0, progress=False, force_flags=True)
FAST_CLI = ["--model", "mlp:16", "--epochs", "4", "--patience", "10", "--lr", "0.05",
            "--batch-size", "32", "--probe-every", "0", "--min-steps", "10",
            "--patience-steps", "0", "--force-flags"]


class ToyFormat(InputFormat):
    """A toy: a ``.toy`` file of JSON lines ``{"id", "x": [floats], "label"}``."""

    name = "toy"
    output = "cleaned.toy"

    def detect(self, source, **options) -> bool:
        return Path(source).suffix == ".toy" and Path(source).is_file()

    def read(self, source, *, classes=None, **options) -> Dataset:
        path = Path(source)
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
        labels = [r["label"] for r in records]
        names = list(classes) if classes is not None else sorted(set(labels))
        if len(records) == 0 or not set(labels) <= set(names):
            raise LabelcleanError(f"{path.name}: no samples, or a label not a class")
        return Dataset(
            kind="features", x=torch.tensor([r["x"] for r in records], dtype=torch.float32),
            y=np.array([names.index(lab) for lab in labels], dtype=np.int64),
            classes=names, ids=[r["id"] for r in records], origin=self.name, source=path,
        )

    def write_cleaned(self, data, keep, folder, *, out, link, params) -> None:
        with open(folder / self.output, "w") as f:
            for i in np.flatnonzero(keep):
                f.write(json.dumps({"id": data.ids[i], "x": data.x[i].tolist(),
                                    "label": data.classes[data.y[i]]}) + "\n")


def read_toy(path: Path) -> dict[str, str]:
    """``{id: label}`` of a toy file."""
    return {r["id"]: r["label"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def toy():
    fmt = register_format(ToyFormat())
    yield fmt
    unregister_format(fmt.name)  # the registry as the other test files expect it


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory) -> Path:
    """200 samples, 3 well separated classes in 8 dimensions, 20% wrong labels."""
    rng = np.random.default_rng(3)
    n, names = 200, ["ant", "bee", "cat"]
    truth = rng.integers(0, 3, n)
    x = 4.0 * np.eye(3, 8)[truth] + rng.normal(0, 0.7, (n, 8))
    given = truth.copy()
    wrong = rng.random(n) < 0.2
    given[wrong] = (truth[wrong] + rng.integers(1, 3, wrong.sum())) % 3
    path = tmp_path_factory.mktemp("toy") / "data" / "train.toy"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"id": f"s{i:03d}", "x": x[i].round(4).tolist(),
                                        "label": names[given[i]]}) + "\n" for i in range(n)))
    return path


# ----------------------------------------------------------------------------- registry


def test_a_registered_format_is_detected_and_read(toy, toy_file, tmp_path):
    assert list(FORMATS)[:3] == ["folder", "paths", "features"]  # the built-ins first
    assert list(FORMATS)[-1] == "toy" and writer_for("toy") is toy
    assert file_format(toy_file) is toy
    data = load_dataset(toy_file)
    assert data.origin == "toy" and data.kind == "features" and len(data) == 200
    assert data.classes == ["ant", "bee", "cat"] and data.ids[0] == "s000"
    assert load_dataset(toy_file, kind="toy").ids == data.ids
    # the built-ins still take what they took
    csv = tmp_path / "f.csv"
    pd.DataFrame({"a": [0.0, 1.0], "label": ["x", "y"]}).to_csv(csv, index=False)
    assert file_format(csv).name == "features"
    with pytest.raises(LabelcleanError, match=r"use auto, folder, paths, features or toy"):
        load_dataset(toy_file, kind="nope")
    other = tmp_path / "x.dat"
    other.write_text("?")
    with pytest.raises(LabelcleanError, match="neither a folder nor a .csv file"):
        load_dataset(other)


def test_registration_refuses_a_taken_name_and_can_go_first(toy, toy_file):
    with pytest.raises(ValueError, match="already registered"):
        register_format(ToyFormat())
    with pytest.raises(ValueError, match="already registered"):
        register_format(type("Clash", (ToyFormat,), {"name": "folder"})())

    class Greedy(ToyFormat):
        """Claims every file and folder, but only when registered first."""

        name = "greedy"

        def detect(self, source, **options) -> bool:
            return True

    greedy = register_format(Greedy(), first=True)
    try:
        assert list(FORMATS)[0] == "greedy" and file_format(toy_file) is greedy
        assert load_dataset(toy_file).origin == "greedy"  # read by the first to detect it
    finally:
        unregister_format("greedy")
    assert "greedy" not in FORMATS and "greedy" not in WRITERS
    assert file_format(toy_file) is toy


# ----------------------------------------------------------------------------- run and apply


def test_a_python_run_writes_the_cleaned_toy_file(toy, toy_file, tmp_path):
    result = Cleaner(**FAST).fit(str(toy_file))
    assert result.dataset.origin == "toy"
    out = result.export(tmp_path / "run")
    flagged = set(result.flagged["sample_id"])
    assert 0 < len(flagged) < 200
    cleaned = read_toy(out / "cleaned.toy")
    given = read_toy(toy_file)
    assert set(cleaned) == set(given) - flagged  # the kept samples, as the toy writes them
    assert all(cleaned[i] == given[i] for i in cleaned)
    assert not (out / "cleaned.csv").exists()
    run = json.loads((out / "run.json").read_text())
    assert run["outputs"]["cleaned"] == "cleaned.toy"
    assert run["input"]["origin"] == "toy"
    assert run["input"]["source"] == str(toy_file.resolve())


def test_the_cli_runs_and_applies_a_toy_file(toy, toy_file, tmp_path):
    run_dir, final = tmp_path / "run", tmp_path / "final"
    before = toy_file.read_bytes()
    result = CliRunner().invoke(main, ["run", str(toy_file), "--out", str(run_dir),
                                       *FAST_CLI])
    assert result.exit_code in (0, 3), result.output  # 3: withheld, flags forced
    given = read_toy(toy_file)
    review = pd.read_csv(run_dir / "flagged_samples.csv", dtype=str, keep_default_na=False)
    assert len(review) >= 2 and set(read_toy(run_dir / "cleaned.toy")) == (
        set(given) - set(review["row"]))
    relabelled, kept = review["row"].iloc[0], review["row"].iloc[1]
    new = next(c for c in ("ant", "bee", "cat") if c != given[relabelled])
    review.loc[0, "action"] = f"relabel:{new}"
    review.loc[1, "action"] = "keep"
    edited = tmp_path / "edited.csv"
    review.to_csv(edited, index=False)

    result = CliRunner().invoke(main, ["apply", str(run_dir), "--review", str(edited),
                                       "--out", str(final)])
    assert result.exit_code == 0, result.output
    applied = read_toy(final / "cleaned.toy")
    removed = set(review["row"].iloc[2:])
    assert set(applied) == set(given) - removed
    assert applied[relabelled] == new and applied[kept] == given[kept]
    assert all(applied[i] == given[i] for i in applied if i != relabelled)
    summary = json.loads((final / "apply.json").read_text())
    assert summary["dataset"] == "cleaned.toy" and summary["link"] is None
    assert summary["relabelled"] == 1 and summary["kept_flagged"] == 1
    log = pd.read_csv(final / "apply_log.csv", dtype=str, keep_default_na=False)
    assert log.set_index("row").loc[relabelled, "destination"].startswith("cleaned.toy sample ")
    assert toy_file.read_bytes() == before  # the input is only read

    # apply reads the input again: a changed one is refused, and nothing is written
    toy_file.write_text("".join(toy_file.read_text().splitlines(keepends=True)[1:]))
    try:
        result = CliRunner().invoke(main, ["apply", str(run_dir), "--out",
                                           str(tmp_path / "again")])
        assert result.exit_code == 2 and "no longer holds the run's samples" in result.output
        assert not (tmp_path / "again").exists()
    finally:
        toy_file.write_bytes(before)


def test_a_python_object_run_is_not_applied(tmp_path):
    x, _, given, _ = synthetic_images(120, 3, 0.2, seed=7)
    out = Cleaner(**FAST).fit(Dataset.from_arrays(x, given)).export(tmp_path / "run")
    result = CliRunner().invoke(main, ["apply", str(out), "--out", str(tmp_path / "final")])
    assert result.exit_code == 2 and "was a Python object ('arrays')" in result.output


# ----------------------------------------------------------------------------- path policy


def test_the_path_policy(tmp_path):
    folder = tmp_path / "images"
    (folder / "c0").mkdir(parents=True)
    csv = tmp_path / "tables" / "labels.csv"
    csv.parent.mkdir()
    csv.write_text("path,label\n")
    assert within(folder / "c0", folder) and within(folder, folder)
    assert not within(folder, folder / "c0") and not within(tmp_path / "imagesX", folder)
    for replaced in (False, True):  # at or inside an input: never
        for where in (folder, folder / "c0" / "new", csv, csv.parent):
            assert overlapped_input(where, [folder, csv], replaced=replaced) is not None
        assert overlapped_input(tmp_path / "elsewhere", [folder, csv], replaced=replaced) is None
    # a folder beside the CSV: a run folder may be there, a cache may not
    assert overlapped_input(csv.parent / "run", [csv], replaced=True) is None
    assert overlapped_input(csv.parent / "cache", [csv], replaced=False) == csv.resolve()
    # a folder holding an input: --out (which --overwrite may empty) may not be one
    assert overlapped_input(tmp_path, [folder], replaced=True) == folder.resolve()
    assert overlapped_input(tmp_path, [folder], replaced=False) is None
    with pytest.raises(LabelcleanError, match=r"--cache .* lies inside the input"):
        check_outside(folder / "cache", [folder], "--cache")
    with pytest.raises(LabelcleanError, match=r"--out .* overlaps the input"):
        check_overlap(tmp_path, [folder])


def test_each_format_says_what_the_outputs_may_not_overlap(toy, toy_file, tmp_path):
    x, _, given, _ = synthetic_images(6, 2, 0.0)
    rel = write_folder(tmp_path / "images", x, given)
    csv = tmp_path / "tables" / "labels.csv"
    csv.parent.mkdir()
    pd.DataFrame({"path": [f"../images/{p}" for p in rel], "label": given}).to_csv(csv)
    assert input_footprint(tmp_path / "images") == [tmp_path / "images"]
    assert input_footprint(csv) == [csv, (tmp_path / "images").resolve()]
    assert input_footprint(csv, "features") == [csv]
    assert input_footprint(toy_file) == [toy_file]
    assert input_footprint(pd.DataFrame()) == []

    class WithSidecar(ToyFormat):
        """A toy whose files keep something in ``<name>.assets/`` beside them."""

        name = "sidecar"

        def detect(self, source, **options) -> bool:
            return Path(source).suffix == ".side"

        def forbidden(self, source, files) -> list[Path]:
            return [Path(source), Path(source).with_suffix(".assets")]

    register_format(WithSidecar())
    try:
        side = tmp_path / "data.side"
        side.write_text(toy_file.read_text())
        (tmp_path / "data.assets").mkdir()
        inside = tmp_path / "data.assets" / "run"
        result = CliRunner().invoke(main, ["run", str(side), "--out", str(inside), *FAST_CLI])
        assert result.exit_code == 2 and "overlaps the input" in result.output
        assert str((tmp_path / "data.assets").resolve()) in result.output
        with pytest.raises(LabelcleanError, match="tensorboard_dir .* lies inside the input"):
            Cleaner(**FAST, tensorboard_dir=str(inside)).fit(str(side))
    finally:
        unregister_format("sidecar")
