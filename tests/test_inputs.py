"""Data that lives in Python (DataFrame, Hugging Face, torch), split roots, class order.

Every in-memory input must give the flags the same images give as a folder:
the same pixels (one decoder) in the same sample order, so with the same seed
the same SGD run.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from conftest import FAST, synthetic_images, tree_digest, write_folder
from PIL import Image

from labelclean import Cleaner, LabelcleanError, load_checkpoint, load_dataset
from labelclean.cli import main
from labelclean.review import apply_review
from labelclean.sources import split_layout


@pytest.fixture(scope="module")
def folder_run(noisy_folder):
    root, _ = noisy_folder
    return Cleaner(**FAST).fit(root)


def _images_in_folder_order(result) -> tuple[list[Image.Image], list[str]]:
    """The folder run's images, opened from disk, and their class names, in sample order."""
    root = result.dataset.source
    images = [Image.open(root / i) for i in result.dataset.ids]
    return images, [i.split("/")[0] for i in result.dataset.ids]


def _same_run(a, b) -> None:
    assert a.t_c == b.t_c
    assert list(a.flagged["index"]) == list(b.flagged["index"])
    assert a.n_flagged > 0
    np.testing.assert_allclose(a.pred_probs, b.pred_probs, atol=1e-5)


# ----------------------------------------------------------------------------- DataFrame


def test_dataframe_gives_the_folder_flags(folder_run, noisy_folder, tmp_path):
    root, _ = noisy_folder
    ids = folder_run.dataset.ids
    frame = pd.DataFrame({"file": ids, "cls": [i.split("/")[0] for i in ids], "extra": 1})
    before = frame.copy()
    res = Cleaner(**FAST, root=root, path_column="file", label_column="cls").fit(frame)
    pd.testing.assert_frame_equal(frame, before)  # the user's object is not touched
    assert res.dataset.origin == "dataframe"
    assert list(res.flagged["sample_id"]) == list(folder_run.flagged["sample_id"])
    _same_run(res, folder_run)
    # the cleaned CSV keeps the user's columns, paths valid from --out
    out = tmp_path / "run"
    res.export(out)
    cleaned = pd.read_csv(out / "cleaned.csv")
    assert list(cleaned.columns) == ["file", "cls", "extra"]
    assert len(cleaned) == 360 - res.n_flagged
    assert all((out / p).resolve().is_file() for p in cleaned["file"])
    # apply cannot re-read a Python object, and says what to do instead
    with pytest.raises(LabelcleanError, match="Python object .* apply the review's action"):
        apply_review(out, tmp_path / "final")


def test_dataframe_paths_resolve_against_root_and_features_frame(tmp_path, monkeypatch):
    x, _, y, _ = synthetic_images(12, 3, 0.0)
    rel = write_folder(tmp_path / "imgs", x, y)
    frame = pd.DataFrame({"path": rel, "label": y})
    assert load_dataset(frame, root=tmp_path / "imgs").files[0] == tmp_path / "imgs" / rel[0]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LabelcleanError, match="do not exist"):
        load_dataset(frame)  # relative to the current folder by default
    feats = load_dataset(pd.DataFrame({"a": np.arange(6.0), "label": [0, 1] * 3}))
    assert feats.kind == "features" and feats.origin == "dataframe"


# ----------------------------------------------------------------------------- Hugging Face


def _hf():
    if os.environ.get("CI"):
        import datasets  # CI installs .[dev], which has it: a missing package must fail there
    else:
        datasets = pytest.importorskip("datasets")
    return datasets


def test_hugging_face_dataset_gives_the_folder_flags(folder_run):
    datasets = _hf()
    images, names = _images_in_folder_order(folder_run)
    classes = folder_run.dataset.classes
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=classes)}
    )
    ds = datasets.Dataset.from_dict(
        {"img": images, "label": [classes.index(n) for n in names]}, features=features
    )
    res = Cleaner(**FAST, image_column="img").fit(ds)
    assert res.dataset.origin == "hf" and res.dataset.classes == classes
    assert res.dataset.class_order == "dataset"
    _same_run(res, folder_run)


def test_hugging_face_errors_name_the_option():
    datasets = _hf()
    ds = datasets.Dataset.from_dict({"picture": [np.zeros((8, 8), np.uint8)] * 2, "y": [0, 1]})
    with pytest.raises(LabelcleanError, match="no column 'image'.*image_column="):
        load_dataset(ds)
    with pytest.raises(LabelcleanError, match="one split"):
        load_dataset(datasets.DatasetDict({"train": ds}))


# ----------------------------------------------------------------------------- torch


class PairDataset(torch.utils.data.Dataset):
    """A map-style dataset of ``(image, label)``, as users write them."""

    def __init__(self, images, labels, classes=None):
        self.images, self.labels = images, labels
        if classes is not None:
            self.classes = classes

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


@pytest.mark.parametrize("form", ["pil", "tensor", "float-array"])
def test_torch_dataset_gives_the_folder_flags(folder_run, form, tmp_path):
    images, names = _images_in_folder_order(folder_run)
    classes = folder_run.dataset.classes
    if form == "tensor":  # (C, H, W) uint8, as torchvision's PILToTensor gives
        images = [torch.from_numpy(np.array(im))[None] for im in images]
    elif form == "float-array":  # (H, W) floats in 0..1
        images = [np.asarray(im, dtype=np.float32) / 255.0 for im in images]
    labels = [torch.tensor(classes.index(n)) for n in names]
    res = Cleaner(**FAST).fit(PairDataset(images, labels, classes))
    assert res.dataset.origin == "torch" and res.dataset.classes == classes
    _same_run(res, folder_run)
    if form == "pil":  # the export lists the kept samples by their index in the object
        res.export(tmp_path / "run")
        cleaned = pd.read_csv(tmp_path / "run" / "cleaned.csv")
        assert list(cleaned.columns) == ["index", "label"]
        kept = res.scores.sort_values("index").query("~flagged")
        assert cleaned["index"].tolist() == kept["index"].tolist()
        assert cleaned["label"].tolist() == kept["given_label"].tolist()
        run = json.loads((tmp_path / "run" / "run.json").read_text())
        assert run["input"]["source"] == "<torch object>"


def test_in_memory_images_of_mixed_sizes_follow_the_folder_rule(tmp_path):
    small = [np.full((16, 16), 9, np.uint8)] * 3
    assert load_dataset(PairDataset(small, [0, 1, 0])).input_shape == (1, 16, 16)
    mixed = small + [np.zeros((100, 80, 3), np.uint8), str(tmp_path / "x.png")]
    Image.new("L", (20, 20), 5).save(tmp_path / "x.png")  # a file path is an image too
    ds = load_dataset(PairDataset(mixed, [0, 1, 0, 1, 0]))
    assert ds.input_shape == (1, 64, 64) and len(ds) == 5
    assert load_dataset(PairDataset(mixed, [0, 1, 0, 1, 0]), image_size=24).input_shape == (
        1, 24, 24)
    with pytest.raises(LabelcleanError, match="more than the .* allowed in memory"):
        load_dataset(PairDataset(mixed, [0, 1, 0, 1, 0]), max_memory=1000)
    broken = small + [np.zeros((2, 2, 7))]
    with pytest.raises(LabelcleanError, match="1 unreadable images .* item 3"):
        load_dataset(PairDataset(broken, [0, 1, 0, 1]))
    assert len(load_dataset(PairDataset(broken, [0, 1, 0, 1]), skip_unreadable=True)) == 3


def test_torch_dataset_labels(tmp_path):
    x, _, y, _ = synthetic_images(60, 3, 0.0)
    ds = load_dataset(PairDataset(list(x), [f"k{v}" for v in y]))  # text labels: lexical
    assert ds.classes == ["k0", "k1", "k2"] and ds.class_order == "lexical"
    ints = load_dataset(PairDataset(list(x), list(y)))  # int labels keep their values
    assert ints.classes == ["0", "1", "2"] and ints.y.tolist() == list(y)
    with pytest.raises(LabelcleanError, match=r"not an \(image, label\) pair"):
        load_dataset(PairDataset([[1]], [0]).images)
    with pytest.raises(LabelcleanError, match="cannot read a int"):
        load_dataset(3)


# ----------------------------------------------------------------------------- split roots


def _split_root(root, n_train=150, n_val=30):
    x, _, y, _ = synthetic_images(n_train + n_val, 3, 0.0, seed=4)
    write_folder(root / "train", x[:n_train], y[:n_train])
    write_folder(root / "val", x[n_train:], y[n_train:])
    write_folder(root / "test", x[n_train:], y[n_train:])


def test_split_root_trains_on_train_and_validates_on_val(tmp_path):
    root = tmp_path / "data"
    _split_root(root)
    assert set(split_layout(root)) == {"train", "val", "test"}
    ds = load_dataset(root)
    assert ds.source == root / "train" and len(ds) == 150 and ds.classes == ["c0", "c1", "c2"]
    before = tree_digest(root)
    res = Cleaner(**{**FAST, "max_epochs": 2, "min_steps": 0}).fit(root)
    assert res.val is not None and res.val.source == root / "val" and len(res.val) == 30
    assert "val_accuracy" in res.history
    assert tree_digest(root) == before


def test_classes_named_like_splits_are_not_a_split_root(tmp_path):
    x, _, y, _ = synthetic_images(8, 2, 0.0)
    for i, (img, lab) in enumerate(zip(x, y)):
        p = tmp_path / "d" / ("train" if lab == 0 else "test") / f"{i}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
    assert split_layout(tmp_path / "d") is None
    assert load_dataset(tmp_path / "d").classes == ["test", "train"]


# ----------------------------------------------------------------------------- class order


@pytest.mark.filterwarnings("ignore::labelclean.WithheldWarning")  # two epochs: too short
def test_class_order_is_lexical_like_imagefolder(tmp_path):
    from torchvision.datasets import ImageFolder

    root = tmp_path / "d"
    x, _, _, _ = synthetic_images(60, 3, 0.0, seed=3)
    names = ["1", "2", "10"]
    for i, img in enumerate(x):
        p = root / names[i % 3] / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
    ds = load_dataset(root)
    assert ds.classes == ["1", "10", "2"]
    assert {c: i for i, c in enumerate(ds.classes)} == ImageFolder(str(root)).class_to_idx
    # the same order for labels read from a table
    table = pd.DataFrame({"a": np.arange(6.0), "label": [1, 2, 10] * 2})
    assert load_dataset(table).classes == ["1", "10", "2"]
    # ... and recorded in run.json and the checkpoint
    res = Cleaner(**{**FAST, "max_epochs": 2, "min_steps": 0}).fit(root)
    out = tmp_path / "run"
    res.export(out)
    run = json.loads((out / "run.json").read_text())
    assert run["input"]["class_order"] == "lexical"
    assert run["input"]["class_to_idx"] == {"1": 0, "10": 1, "2": 2}
    ck = load_checkpoint(out)
    assert ck.classes == ["1", "10", "2"] and ck.config["class_order"] == "lexical"


def test_cli_runs_a_split_root(tmp_path):
    root = tmp_path / "data"
    _split_root(root)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", str(root), "--out", str(out), "--model", "mlp:32",
                                  "--max-epochs", "2", "--min-steps", "0", "--probe-every", "0"])
    assert r.exit_code in (0, 3), r.output
    assert f"trained on         {root / 'train'}, validated on {root / 'val'}" in r.output
    assert (out / "cleaned" / "c0").is_dir()
