"""labelclean bench: injected noise, the truth metrics, the oracle and Q (tiny MLP runs)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import synthetic_images

from labelclean.bench import corrupt, format_table, prf, run_bench
from labelclean.cli import main
from labelclean.sources import Dataset

FAST = {"model": "mlp:32", "max_epochs": 6, "patience": 3, "probe_every": 0, "device": "cpu"}


def _data(n=300, seed=0):
    x, y, _, _ = synthetic_images(n, num_classes=3, noise_rate=0.0, seed=seed)
    return Dataset.from_arrays(x, y)


def test_corrupt_sets_the_mask_and_changes_exactly_those_labels():
    clean = _data()
    noisy = corrupt(clean, "symmetric", 0.3, seed=1)
    assert noisy.noise_mask.sum() == 90
    np.testing.assert_array_equal(noisy.y != clean.y, noisy.noise_mask)
    assert clean.noise_mask is None  # the trusted copy is untouched


def test_prf():
    flags = np.array([1, 1, 0, 0], bool)
    mask = np.array([1, 0, 1, 0], bool)
    assert prf(flags, mask) == pytest.approx((0.5, 0.5, 0.5))
    assert prf(np.zeros(4, bool), mask)[2] == 0.0


def test_run_bench_reports_truth_metrics_oracle_and_q(tmp_path):
    test = _data(150, seed=5)
    df = run_bench(_data(), noise="symmetric", rate=0.3, seeds=[0, 1], retrain=True,
                   test=test, out=tmp_path, **FAST)
    assert list(df.seed) == [0, 1]
    for col in ("precision", "recall", "f1", "auroc", "oracle_f1", "a_n", "a_c", "a_p"):
        assert df[col].between(0, 1).all(), col
    # The oracle is the best epoch of the same run: never worse than t_c's flags
    # up to the window (t_c's flags use the same rule, so equal at best).
    assert (df.oracle_f1 >= df.f1 - 1e-9).all()
    assert np.allclose(df.f1_gap, df.oracle_f1 - df.f1)
    assert np.allclose(df.true_rate, 0.3)
    assert (df.auroc > 0.8).all()  # easy synthetic data: the ranking separates
    assert (df.cpu_s > 0).all() and (df.wall_s > 0).all()
    assert np.allclose(df.Q, (df.a_c - df.a_n) / (df.a_p - df.a_n), equal_nan=True)
    saved = pd.read_csv(tmp_path / "bench.csv")
    assert len(saved) == 2 and (tmp_path / "flags_seed1.csv").exists()
    assert "oracle_f1" in format_table(df)


def test_cli_bench_on_a_feature_csv(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 4, (3, 6))
    y = rng.integers(0, 3, 240)
    x = centers[y] + rng.normal(0, 1, (240, 6))
    csv = tmp_path / "feat.csv"
    pd.DataFrame(x, columns=[f"f{i}" for i in range(6)]).assign(label=y).to_csv(csv, index=False)
    out = tmp_path / "bench"
    res = CliRunner().invoke(main, [
        "bench", str(csv), "--noise", "pairflip", "--rate", "0.2", "--seeds", "3", "4",
        "--model", "mlp:16", "--epochs", "5", "--probe-every", "0", "--device", "cpu",
        "--out", str(out),
    ])
    # 5 epochs of 8 steps stop before --min-steps: both runs are withheld, so bench
    # exits 3 as run would (tests/test_exit_status.py), and still writes its table
    df = pd.read_csv(out / "bench.csv")
    assert res.exit_code == 3, res.output
    assert df.verdict.tolist() == ["withheld", "withheld"]
    assert "oracle_f1" in res.output and "f1" in res.output
    assert df.seed.tolist() == [3, 4]


def test_retrain_needs_a_test_set():
    res = CliRunner().invoke(main, ["bench", "whatever.csv", "--retrain"])
    assert res.exit_code == 2 and "--test" in res.output
