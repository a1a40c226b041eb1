"""Small real runs shared by test_report.py, test_review.py and test_report_browser.py.

:func:`build_runs` trains three tiny runs (an image folder, a CSV of image
paths with one broken image, a CSV of features) once per test session and
exports them; the test modules reach them through their own session fixtures,
which all call it with the same folder, so the work is done once.
:func:`suspicion_runs` trains two more on a CSV of features, flagged by the AUM
and by the log loss instead of the default loss.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from labelclean import Cleaner

SIDE = 16
CLASSES = ("c0", "c1", "c2")


@dataclass(frozen=True)
class Runs:
    """Where the shared runs and their inputs live."""

    folder_data: Path  # root/<class>/<nnnn>.png; file names repeat across classes
    folder_run: Path
    csv_data: Path  # folder holding labels.csv and imgs/
    csv_file: Path
    csv_run: Path
    features_file: Path
    features_run: Path


def pattern(c: int, rng: np.random.Generator) -> np.ndarray:
    """A noisy 16x16 image of class ``c``: horizontal, vertical or diagonal stripes."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE]
    base = [((yy // 2) % 2), ((xx // 2) % 2), (((yy + xx) // 3) % 2)][c] * 200
    return np.clip(base + 20 + rng.normal(0, 40, (SIDE, SIDE)), 0, 255).astype(np.uint8)


def noisy_labels(n: int, rng: np.random.Generator, noise: float = 0.15) -> tuple[list, list]:
    truth = [i % 3 for i in range(n)]
    given = [(t + int(rng.integers(1, 3))) % 3 if rng.random() < noise else t for t in truth]
    return truth, given


def write_folder(root: Path, n: int = 300, seed: int = 0) -> None:
    """``root/c<k>/<nnnn>.png``, numbered per class so names collide across classes."""
    rng = np.random.default_rng(seed)
    truth, given = noisy_labels(n, rng)
    counters = [0, 0, 0]
    for t, g in zip(truth, given, strict=True):
        folder = root / CLASSES[g]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pattern(t, rng), "L").save(folder / f"{counters[g]:04d}.png")
        counters[g] += 1


def write_path_csv(root: Path, n: int = 300, seed: int = 1) -> Path:
    """``root/labels.csv`` (path,label,note) over ``root/imgs/*.png``, integer labels,
    and one broken image in the middle."""
    rng = np.random.default_rng(seed)
    truth, given = noisy_labels(n, rng)
    (root / "imgs").mkdir(parents=True)
    rows = []
    for i, (t, g) in enumerate(zip(truth, given, strict=True)):
        Image.fromarray(pattern(t, rng), "L").save(root / "imgs" / f"{i:04d}.png")
        rows.append((f"imgs/{i:04d}.png", g, f"note {i}"))
        if i == n // 2:
            (root / "imgs" / "broken.png").write_bytes(b"not a png")
            rows.append(("imgs/broken.png", 0, "broken"))
    path = root / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label", "note"]).to_csv(path, index=False)
    return path


def write_features(path: Path, n: int = 300, seed: int = 2) -> Path:
    """Three Gaussian clusters in 8-D with 15 % wrong labels, as ``f0..f7,label``."""
    rng = np.random.default_rng(seed)
    truth, given = noisy_labels(n, rng)
    centres = rng.normal(0, 3, (3, 8))
    x = centres[truth] + rng.normal(0, 1, (n, 8))
    table = pd.DataFrame(x, columns=[f"f{k}" for k in range(8)])
    table["label"] = [CLASSES[g] for g in given]
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return path


def fit_and_export(data: Path, out: Path, **kw) -> Path:
    # the classic runs use the loss suspicion (its l_c threshold is what many
    # report tests check); suspicion_runs() covers AUM, the default, and log-loss
    kw.setdefault("suspicion", "loss")
    # short runs of the 0.3 settings: learn-before-deciding (test_trust.py) is off here
    result = Cleaner(model="mlp:32", max_epochs=4, patience=2, seed=0, batch_size=128, lr=0.1,
                     min_steps=0, **kw).fit(data)
    assert result.n_flagged > 0, f"the test run on {data} flagged nothing"
    result.export(out)
    return out


@functools.cache
def build_runs(base: Path) -> Runs:
    """Build (once per session and ``base``) the three runs under ``base``."""
    folder_data = base / "folder_data"
    write_folder(folder_data)
    csv_data = base / "csv_data"
    csv_file = write_path_csv(csv_data)
    features_file = write_features(base / "features_data" / "features.csv")
    return Runs(
        folder_data=folder_data,
        folder_run=fit_and_export(folder_data, base / "folder_run"),
        csv_data=csv_data,
        csv_file=csv_file,
        csv_run=fit_and_export(csv_file, base / "csv_run", skip_unreadable=True),
        features_file=features_file,
        features_run=fit_and_export(features_file, base / "features_run"),
    )


@dataclass(frozen=True)
class SuspicionRuns:
    """Runs made with the other suspicion scores (``Cleaner(suspicion=...)``)."""

    features_file: Path
    aum_run: Path
    logloss_run: Path


@functools.cache
def suspicion_runs(base: Path) -> SuspicionRuns:
    """Build (once per session and ``base``) an AUM and a log-loss run of a feature
    table under ``base``: a few seconds each."""
    features_file = write_features(base / "suspicion_data" / "features.csv", seed=3)
    return SuspicionRuns(
        features_file=features_file,
        aum_run=fit_and_export(features_file, base / "aum_run", suspicion="aum"),
        logloss_run=fit_and_export(features_file, base / "logloss_run", suspicion="logloss"),
    )


def tree_digest(root: Path) -> str:
    """A hash of every file's relative path, content and mode under ``root``."""
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*")):
        h.update(str(f.relative_to(root)).encode())
        if f.is_file():
            h.update(f.read_bytes())
            h.update(str(f.stat().st_mode).encode())
    return h.hexdigest()


def write_fake_run(root: Path, n: int, classes: int = 5, epochs: int = 6) -> Path:
    """A run folder as export writes it, for a feature table of ``n`` samples, all
    flagged, without training: to check the report's size limits quickly."""
    rng = np.random.default_rng(0)
    names = [f"k{c}" for c in range(classes)]
    loss = np.sort(rng.gamma(2.0, 1.0, n))[::-1]
    given, pred = rng.integers(0, classes, n), rng.integers(0, classes, n)
    root.mkdir(parents=True)
    pd.DataFrame({
        "rank": np.arange(1, n + 1), "sample_id": [f"row {i}" for i in range(n)],
        "index": np.arange(n), "given_label": [names[g] for g in given],
        "predicted_label": [names[p] for p in pred], "predicted_prob": rng.random(n),
        "given_prob": rng.random(n), "loss": loss, "margin": -loss,
        "p_noisy": rng.random(n), "flagged": True,
    }).to_csv(root / "scores.csv", index=False)
    losses = rng.gamma(2.0, 1.0, (epochs, n)).astype(np.float32)
    np.save(root / "losses.npy", losses)
    metrics = pd.DataFrame({
        "epoch": np.arange(1, epochs + 1), "train_accuracy": np.linspace(0.3, 0.9, epochs),
        "m_c": np.linspace(1, 0.2, epochs), "s_c": 0.2, "m_w": 3.0, "s_w": 0.5,
        "delta_L": np.linspace(2, 2.8, epochs),
    })
    metrics.to_csv(root / "metrics.csv", index=False)
    (root / "checkpoint").mkdir()
    (root / "checkpoint" / "model.json").write_text(json.dumps({"model": "mlp:8",
                                                                "classes": names}))
    run = {
        "input": {"source": str(root / "missing.csv"), "origin": "features",
                  "kind": "features", "samples": n, "classes": names, "unreadable": 0},
        "params": {"model": "mlp:8", "device": "cpu"}, "t_c": 3, "samples": n,
        "flagged": n, "kept": 0, "estimated_noise_rate": 1.0,
        "second_population_found": True,
        "mixture_at_t_c": {"m_c": 0.5, "s_c": 0.2, "m_w": 3.0, "s_w": 0.5, "r": 0.3,
                           "delta_L": 2.5, "threshold": 1.2, "bimodal": True},
        "phase_boundaries": {}, "timing": {"total_seconds": 1.0, "epochs_trained": epochs},
    }
    (root / "run.json").write_text(json.dumps(run))
    return root


@functools.cache
def big_report(base: Path) -> Path:
    """A 50,000-flagged-sample fake run with its report, built once per session."""
    from labelclean.report import write_report

    run_dir = write_fake_run(base / "big_run", 50_000)
    write_report(run_dir)
    return run_dir
