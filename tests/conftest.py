"""Shared fixtures: small synthetic datasets made on the fly (no downloads)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Two cores on CI: one torch thread per test process keeps timings predictable.
torch.set_num_threads(1)

SIDE = 16


def class_templates(num_classes: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((num_classes, SIDE, SIDE)) > 0.5).astype(np.float32)


def synthetic_images(
    n: int, num_classes: int = 3, noise_rate: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images uint8 (n, SIDE, SIDE), true labels, given labels, noise mask)``.

    Each class is a fixed random binary pattern plus pixel noise: easy to learn,
    so clean samples are fitted long before the relabelled ones.
    """
    rng = np.random.default_rng(seed)
    templates = class_templates(num_classes, seed)
    y = rng.integers(0, num_classes, n)
    x = templates[y] * 170 + rng.normal(0, 35, (n, SIDE, SIDE))
    x = x.clip(0, 255).astype(np.uint8)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, int(round(noise_rate * n)), replace=False)] = True
    given = y.copy()
    given[mask] = (y[mask] + rng.integers(1, num_classes, mask.sum())) % num_classes
    return x, y, given, mask


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray, fmt: str = "png") -> list[str]:
    """Write ``root/c<label>/<i>.<fmt>``; return the relative paths in sample order."""
    rel = []
    for i, (img, lab) in enumerate(zip(images, labels)):
        p = root / f"c{lab}" / f"{i:05d}.{fmt}"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(p)
        rel.append(p.relative_to(root).as_posix())
    return rel


def tree_digest(root: Path) -> str:
    """A hash of every file's path, size, mtime and content under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}|{st.st_mode}".encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="session")
def noisy_folder(tmp_path_factory) -> tuple[Path, dict[str, bool]]:
    """An image folder of 360 16x16 images, 3 classes, 20% wrong labels.

    Returns the root and ``{relative path: is_wrong}``.
    """
    root = tmp_path_factory.mktemp("noisy") / "data"
    x, _, given, mask = synthetic_images(360, 3, 0.2, seed=1)
    rel = write_folder(root, x, given)
    os.sync() if hasattr(os, "sync") else None
    return root, dict(zip(rel, mask.tolist()))


@pytest.fixture(scope="session")
def clean_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean") / "data"
    x, y, _, _ = synthetic_images(360, 3, 0.0, seed=2)
    write_folder(root, x, y)
    return root


# min_steps below the default keeps these runs short (132 steps); the defaults are
# exercised by tests/test_trust.py.
FAST = dict(model="mlp:64", max_epochs=12, patience=4, lr=0.02, batch_size=32, probe_every=0,
            min_steps=100, patience_steps=0)
