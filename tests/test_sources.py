"""Reading the three input kinds, and refusing bad input with one clear line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import synthetic_images, tree_digest, write_folder
from PIL import Image

from labelclean import Dataset, LabelcleanError, load_dataset


def test_folder_mixed_formats_and_modes(tmp_path):
    root = tmp_path / "d"
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    Image.fromarray(arr).save(root / "cat" / "a.jpg")
    Image.fromarray(arr).convert("RGBA").save(root / "cat" / "b.png")
    Image.fromarray(arr).convert("P").save(root / "cat" / "c.bmp")
    Image.fromarray(arr[..., 0]).save(root / "dog" / "d.png")  # grayscale
    Image.fromarray(arr).save(root / "dog" / "e.webp")
    Image.fromarray(arr).save(root / "dog" / "f.tiff")
    (root / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset(root)
    assert ds.kind == "images" and ds.origin == "folder"
    assert ds.classes == ["cat", "dog"]
    assert ds.x.shape == (6, 3, 20, 20) and ds.x.dtype.is_floating_point is False
    assert ds.ids == [
        "cat/a.jpg", "cat/b.png", "cat/c.bmp", "dog/d.png", "dog/e.webp", "dog/f.tiff"
    ]
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]
    # the grayscale image was broadcast to three equal channels
    gray = ds.x[3]
    assert (gray[0] == gray[1]).all() and (gray[1] == gray[2]).all()


def test_grayscale_folder_has_one_channel_and_native_size(tmp_path):
    x, _, y, _ = synthetic_images(30, 3, 0.0)
    write_folder(tmp_path / "d", x, y)
    ds = load_dataset(tmp_path / "d")
    assert ds.x.shape == (30, 1, 16, 16)


def test_image_size_resizes_and_large_images_default_to_64(tmp_path):
    root = tmp_path / "d"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.new("RGB", (100, 80), (10, 20, 30)).save(root / c / "x.png")
    assert load_dataset(root).x.shape == (2, 3, 64, 64)
    assert load_dataset(root, image_size=24).x.shape == (2, 3, 24, 24)


def test_path_csv_resolves_relative_paths_and_custom_columns(tmp_path):
    x, _, y, _ = synthetic_images(12, 3, 0.0)
    rel = write_folder(tmp_path / "imgs", x, y)
    table = pd.DataFrame({"file": [f"imgs/{r}" for r in rel], "cls": [f"k{v}" for v in y]})
    table.to_csv(tmp_path / "list.csv", index=False)
    ds = load_dataset(tmp_path / "list.csv", path_column="file", label_column="cls")
    assert ds.origin == "paths" and len(ds) == 12
    assert ds.classes == sorted({f"k{v}" for v in y})
    assert ds.rows.tolist() == list(range(12))


def test_feature_csv(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(50, 4)), columns=list("abcd"))
    df["label"] = rng.integers(0, 3, 50)
    df.to_csv(tmp_path / "f.csv", index=False)
    ds = load_dataset(tmp_path / "f.csv")
    assert ds.kind == "features" and ds.x.shape == (50, 4)
    assert ds.classes == ["0", "1", "2"]
    np.testing.assert_allclose(ds.x.numpy(), df[list("abcd")].to_numpy(), rtol=1e-6)


def test_from_arrays():
    x, _, y, mask = synthetic_images(20, 3, 0.1)
    ds = Dataset.from_arrays(x, y, noise_mask=mask)
    assert ds.x.shape == (20, 1, 16, 16) and ds.kind == "images"
    feats = Dataset.from_arrays(np.zeros((5, 3), np.float32), np.array([0, 1, 0, 1, 1]))
    assert feats.kind == "features" and feats.classes == ["0", "1"]


def _two_classes(root, n=2):
    x, _, _, _ = synthetic_images(2 * n, 2, 0.0)
    write_folder(root, x, np.array([0, 1] * n))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda r: r.mkdir(), "no class sub-folders"),
        (lambda r: (_two_classes(r), [p.unlink() for p in (r / "c1").iterdir()]), "has no images"),
        (
            lambda r: write_folder(r, synthetic_images(4, 1, 0.0)[0], np.zeros(4, int)),
            "single class",
        ),
        (lambda r: (_two_classes(r), (r / "c0" / "zero.png").write_bytes(b"")), "zero-byte"),
        (lambda r: (_two_classes(r), (r / "c1" / "bad.jpg").write_bytes(b"garbage")), "unreadable"),
    ],
    ids=["empty", "empty-class", "single-class", "zero-byte", "corrupt"],
)
def test_bad_folders(tmp_path, make, message):
    root = tmp_path / "d"
    make(root)
    with pytest.raises(LabelcleanError, match=message):
        load_dataset(root)


def test_unreadable_images_are_listed_when_skipped(tmp_path):
    root = tmp_path / "d"
    _two_classes(root, 3)
    (root / "c0" / "bad.png").write_bytes(b"\x89PNG broken")
    before = tree_digest(root)
    ds = load_dataset(root, skip_unreadable=True)
    assert len(ds) == 6
    assert ds.unreadable["path"].tolist() == ["c0/bad.png"]
    assert ds.unreadable["reason"].iloc[0]
    assert tree_digest(root) == before


@pytest.mark.parametrize(
    "table, kwargs, message",
    [
        (pd.DataFrame({"x": [1, 2], "y": [0, 1]}), {}, "no label column 'label'"),
        (pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": [0, None, 1]}), {}, "have no label"),
        (pd.DataFrame({"a": ["u", "v"], "label": [0, 1]}), {}, "must be numeric"),
        (pd.DataFrame({"path": ["nope.png", "gone.png"], "label": [0, 1]}), {}, "do not exist"),
        (pd.DataFrame({"a": [1.0, 2.0], "label": [0, 0]}), {}, "single class"),
    ],
    ids=["no-label-column", "missing-label", "non-numeric", "missing-paths", "one-class"],
)
def test_bad_csvs(tmp_path, table, kwargs, message):
    path = tmp_path / "t.csv"
    table.to_csv(path, index=False)
    with pytest.raises(LabelcleanError, match=message):
        load_dataset(path, **kwargs)


def test_missing_input_and_unknown_file_type(tmp_path):
    with pytest.raises(LabelcleanError, match="not found"):
        load_dataset(tmp_path / "nothing")
    (tmp_path / "x.bin").write_bytes(b"1")
    with pytest.raises(LabelcleanError, match="neither a folder nor a .csv"):
        load_dataset(tmp_path / "x.bin")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(LabelcleanError, match="empty"):
        load_dataset(tmp_path / "empty.csv")


def test_validation_labels_must_be_training_classes(tmp_path):
    x, _, y, _ = synthetic_images(6, 3, 0.0)
    write_folder(tmp_path / "v", x, y)
    with pytest.raises(LabelcleanError, match="not one of the training classes"):
        load_dataset(tmp_path / "v", classes=["c0", "c9"])


def test_cache_skips_decoding_and_follows_file_changes(tmp_path, monkeypatch):
    import labelclean.sources as sources

    root, cache = tmp_path / "d", tmp_path / "cache"
    _two_classes(root, 3)
    (root / "c0" / "bad.png").write_bytes(b"\x89PNG broken")
    before = tree_digest(root)
    first = load_dataset(root, skip_unreadable=True, cache=cache)
    assert len(list(cache.glob("images-*.npz"))) == 1
    calls = []
    real = sources._decode_all
    monkeypatch.setattr(sources, "_decode_all", lambda *a: calls.append(1) or real(*a))
    again = load_dataset(root, skip_unreadable=True, cache=cache)
    assert calls == []  # served from the cache
    assert np.array_equal(again.x.numpy(), first.x.numpy())
    assert again.ids == first.ids and list(again.y) == list(first.y)
    # the corrupt image is still reported, not silently dropped
    assert again.unreadable["path"].tolist() == ["c0/bad.png"]
    with pytest.raises(LabelcleanError, match="unreadable"):
        load_dataset(root, cache=cache)
    assert tree_digest(root) == before
    # a changed image gets a new key: decoded afresh, never the stale pixels
    img = np.asarray(Image.open(root / "c1" / "00001.png")).copy()
    Image.fromarray(255 - img).save(root / "c1" / "00001.png")
    changed = load_dataset(root, skip_unreadable=True, cache=cache)
    assert calls == [1]
    i = changed.ids.index("c1/00001.png")
    assert np.array_equal(changed.x[i, 0].numpy(), 255 - img)


def test_cache_refused_inside_the_input(tmp_path):
    root = tmp_path / "d"
    _two_classes(root)
    with pytest.raises(LabelcleanError, match="inside the input"):
        load_dataset(root, cache=root / "cache")
    assert not (root / "cache").exists()
