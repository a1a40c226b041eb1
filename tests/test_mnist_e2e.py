"""End-to-end on MNIST from ../shared (slow: minutes; CI runs these with ``-m slow``).

The same set-up as docs/benchmarks.md, smaller: an image folder of MNIST
training images with symmetric label noise, cleaned with default settings
through the CLI, and the flags compared with the injected truth.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from labelclean import load_checkpoint
from labelclean.cli import main
from labelclean.noise import inject_noise

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"

pytestmark = pytest.mark.slow

if not MNIST.is_file() and not os.environ.get("CI"):
    pytest.skip("../shared/datasets/mnist.npz is not here (CI has it)", allow_module_level=True)


def _folder(root: Path, n: int, noise: float, seed: int) -> dict[str, bool]:
    d = np.load(MNIST)
    idx = np.sort(np.random.default_rng(seed).choice(60_000, n, replace=False))
    noisy, mask = inject_noise(d["y_train"][idx], 10, noise, "symmetric", seed=seed)
    truth = {}
    for i, (img, lab, wrong) in enumerate(zip(d["x_train"][idx], noisy, mask)):
        p = root / str(lab) / f"{i:05d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(p)
        truth[p.relative_to(root).as_posix()] = bool(wrong)
    return truth


def test_mnist_40_percent_noise_default_settings(tmp_path):
    torch.set_num_threads(2)
    truth = _folder(tmp_path / "data", 10_000, 0.4, seed=0)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", str(tmp_path / "data"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    flagged = set(pd.read_csv(out / "flagged_samples.csv")["path"])
    wrong = {p for p, w in truth.items() if w}
    tp = len(flagged & wrong)
    precision, recall = tp / len(flagged), tp / len(wrong)
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 >= 0.9, (precision, recall)
    run = json.loads((out / "run.json").read_text())
    assert abs(run["estimated_noise_rate"] - 0.4) < 0.05
    d = np.load(MNIST)
    ck = load_checkpoint(out)
    probs = ck.predict_proba(torch.from_numpy(d["x_test"][:2000, None].copy()))
    acc = (np.asarray(ck.classes)[probs.argmax(1)].astype(int) == d["y_test"][:2000]).mean()
    assert acc >= 0.85


def test_mnist_without_noise_flags_almost_nothing(tmp_path):
    torch.set_num_threads(2)
    _folder(tmp_path / "data", 4_000, 0.0, seed=1)
    out = tmp_path / "run"
    # Without a population the AUM rule trains to --epochs (docs/phases.md):
    # 12 bounds the test's time; the offline study ran clean MNIST for 20.
    r = CliRunner().invoke(
        main,
        ["run", str(tmp_path / "data"), "--out", str(out), "--probe-every", "0", "--epochs", "12"],
    )
    assert r.exit_code == 0, r.output
    run = json.loads((out / "run.json").read_text())
    assert run["flagged"] / run["samples"] < 0.02
