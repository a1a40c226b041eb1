"""Inputs too large for memory: decoded once into the cache, memory-mapped, gathered by workers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_images, tree_digest, write_folder
from PIL import Image

import labelclean.sources as sources
from labelclean import LabelcleanError, load_dataset
from labelclean.cli import main
from labelclean.models import create_model, input_statistics
from labelclean.training import TrainConfig, Trainer

TINY = 1000  # bytes: forces the memory-mapped path for any real folder


def _rgb_folder(root, n=12, side=40, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        p = root / f"k{i % 2}" / f"{i:03d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(p)


def test_mapped_decode_matches_memory_and_leaves_the_input_alone(tmp_path):
    root, cache = tmp_path / "d", tmp_path / "cache"
    _rgb_folder(root)
    (root / "k0" / "broken.png").write_bytes(b"\x89PNG no")
    before = tree_digest(root)
    in_memory = load_dataset(root, skip_unreadable=True, image_size=24)
    mapped = load_dataset(root, skip_unreadable=True, image_size=24, cache=cache,
                          max_memory=TINY)
    assert mapped.mapped and not in_memory.mapped
    assert mapped.x.shape == (12, 3, 24, 24)
    assert torch.equal(mapped.x, in_memory.x)
    assert mapped.ids == in_memory.ids and list(mapped.y) == list(in_memory.y)
    # the corrupt image is reported, not dropped silently
    assert mapped.unreadable["path"].tolist() == ["k0/broken.png"]
    assert tree_digest(root) == before
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 2 and names[0].endswith(".meta.npz") and names[1].endswith(".u8.npy")
    # the tensor reads the file, it is not a copy in memory
    assert isinstance(np.load(cache / names[1], mmap_mode="r"), np.memmap)


def test_mapped_cache_is_reused_and_grayscale_keeps_one_channel(tmp_path, monkeypatch):
    root, cache = tmp_path / "d", tmp_path / "cache"
    x, _, given, _ = synthetic_images(10, num_classes=2)
    write_folder(root, x, given)
    first = load_dataset(root, cache=cache, max_memory=TINY)
    assert first.mapped and first.x.shape == (10, 1, 16, 16)
    order = [int(i.split("/")[1][:5]) for i in first.ids]  # ids are c<label>/<index>.png
    assert np.array_equal(first.x[:, 0].numpy(), x[order])
    calls = []
    monkeypatch.setattr(sources, "_decode", lambda *a: calls.append(a))
    again = load_dataset(root, cache=cache, max_memory=TINY)
    assert calls == [] and again.mapped and torch.equal(again.x, first.x)
    # writes to the tensor (none are made, but copy-on-write keeps it so) never reach the file
    again.x[0] = 0
    assert torch.equal(load_dataset(root, cache=cache, max_memory=TINY).x, first.x)


def test_over_the_memory_limit_without_a_cache_is_a_clear_error(tmp_path):
    root = tmp_path / "d"
    _rgb_folder(root)
    with pytest.raises(LabelcleanError, match=r"need .* MiB, more than .*--cache DIR"):
        load_dataset(root, max_memory=TINY)
    res = CliRunner().invoke(main, ["run", str(root), "--out", str(tmp_path / "o"),
                                    "--max-memory", "0.000001"])
    assert res.exit_code == 2
    assert "--cache DIR" in res.output and "Traceback" not in res.output


def test_workers_gather_the_same_batches(tmp_path):
    root, cache = tmp_path / "d", tmp_path / "cache"
    x, _, given, _ = synthetic_images(60, num_classes=3)
    write_folder(root, x, given)
    data = load_dataset(root, cache=cache, max_memory=TINY)
    runs = []
    for workers in (0, 2):
        torch.manual_seed(0)
        model = create_model("mlp:16", data.input_shape, 3, *input_statistics(data.x))
        trainer = Trainer(model, data.x, data.y, TrainConfig(batch_size=16, workers=workers))
        stats = trainer.train_epoch()
        runs.append((stats.train_loss, trainer.evaluate().loss))
    assert runs[0][0] == pytest.approx(runs[1][0], rel=1e-6)
    assert np.allclose(runs[0][1], runs[1][1], atol=1e-6)


def test_chunked_input_statistics_match_the_direct_ones(monkeypatch):
    x = torch.randint(0, 256, (300, 3, 8, 8), dtype=torch.uint8)
    direct = input_statistics(x)
    import labelclean.models as models

    monkeypatch.setattr(models, "STATS_IN_ONE_GO_BYTES", 0)
    chunked = input_statistics(x)
    for a, b in zip(direct, chunked, strict=True):
        assert torch.allclose(a, b, rtol=1e-5)


def test_cli_run_on_memory_mapped_images(tmp_path):
    root, cache, out = tmp_path / "d", tmp_path / "cache", tmp_path / "out"
    x, _, given, mask = synthetic_images(150, num_classes=3, noise_rate=0.2)
    write_folder(root, x, given)
    before = tree_digest(root)
    args = ["run", str(root), "--out", str(out), "--cache", str(cache), "--max-memory",
            "0.000001", "--model", "mlp:32", "--epochs", "4", "--probe-every", "0",
            "--min-steps", "0"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    run = json.loads((out / "run.json").read_text())
    assert run["params"]["workers"] == "auto"
    assert (out / "flagged_samples.csv").is_file() and (out / "checkpoint").is_dir()
    assert tree_digest(root) == before
    # decoded once into the cache, memory-mapped from there; nothing of it under --out
    assert len(list(cache.glob("images-*.u8.npy"))) == 1
    assert not list(out.rglob("*.u8.npy"))


def test_a_damaged_or_unfinished_cache_entry_is_rebuilt(tmp_path, monkeypatch):
    root, cache = tmp_path / "d", tmp_path / "cache"
    x, _, given, _ = synthetic_images(10, num_classes=2)
    write_folder(root, x, given)
    (root / "c0" / "zz_broken.png").write_bytes(b"")
    first = load_dataset(root, cache=cache, max_memory=TINY, skip_unreadable=True)
    assert first.x.shape == (10, 1, 16, 16)  # grayscale, the broken one left out
    assert first.unreadable["path"].tolist() == ["c0/zz_broken.png"]
    decoded = []
    real = sources._decode
    monkeypatch.setattr(sources, "_decode", lambda *a: decoded.append(1) or real(*a))
    (meta,) = cache.glob("images-*.meta.npz")
    (data,) = cache.glob("images-*.u8.npy")
    meta.unlink()  # as if the run died before the entry was complete
    again = load_dataset(root, cache=cache, max_memory=TINY, skip_unreadable=True)
    assert len(decoded) == 11 and torch.equal(again.x, first.x)
    with open(data, "r+b") as f:  # a truncated data file is not trusted either
        f.truncate(200)
    decoded.clear()
    third = load_dataset(root, cache=cache, max_memory=TINY, skip_unreadable=True)
    assert len(decoded) == 11 and torch.equal(third.x, first.x)
    assert not list(cache.glob(".*"))  # no scratch or temporary files left behind


def test_a_full_disk_is_a_one_line_error(tmp_path, monkeypatch):
    import errno

    root, cache = tmp_path / "d", tmp_path / "cache"
    _rgb_folder(root)

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sources, "_reserve", full)
    with pytest.raises(LabelcleanError, match="cannot write decoded images .*No space left"):
        load_dataset(root, cache=cache, max_memory=TINY)
    assert list(cache.iterdir()) == []
