"""One story of exit statuses (issue 26; docs/usage.md, "Exit status"): the same outcome
exits with the same status from every command: 0 done, 2 bad input, 3 withheld
(``decision.WITHHELD_EXIT_STATUS``), in one process or under ``run --nproc``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import synthetic_images, write_folder
from PIL import Image

from labelclean import distributed
from labelclean.cli import main
from labelclean.decision import WITHHELD_EXIT_STATUS

REPO = Path(__file__).resolve().parents[1]
#: Short, and never convincing: without canaries the estimate verdict always withholds.
WITHHELD = ["--model", "mlp:64", "--probe-every", "0", "--epochs", "5", "--canaries", "0",
            "--verdict", "estimate"]
#: Short, and flags the 20% wrong labels of the noisy folder (as tests/test_api.py).
FLAGGED = ["--model", "mlp:64", "--max-epochs", "12", "--patience", "4", "--lr", "0.02",
           "--batch-size", "32", "--probe-every", "0", "--min-steps", "100",
           "--patience-steps", "0"]


def cli(*args) -> object:
    return CliRunner().invoke(main, [str(a) for a in args])


def test_the_withheld_status_is_three():
    assert WITHHELD_EXIT_STATUS == 3


@pytest.fixture(scope="module")
def flagged_run(noisy_folder, tmp_path_factory) -> Path:
    root, _ = noisy_folder
    out = tmp_path_factory.mktemp("status") / "run"
    r = cli("run", root, "--out", out, *FLAGGED)
    assert r.exit_code == 0, r.output
    assert json.loads((out / "run.json").read_text())["verdict"]["status"] == "flagged"
    return out


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small") / "data"
    x, _, given, _ = synthetic_images(150, 3, 0.2, seed=3)
    write_folder(root, x, given)
    return root


# ------------------------------------------------------------------------------- run


def test_run_exits_0_when_done_and_report_and_apply_exit_0_on_its_folder(flagged_run,
                                                                         tmp_path):
    assert cli("report", flagged_run).exit_code == 0
    r = cli("apply", flagged_run, "--out", tmp_path / "final")
    assert r.exit_code == 0, r.output


def test_a_withheld_run_exits_3(small_folder, tmp_path):
    r = cli("run", small_folder, "--out", tmp_path / "o", *WITHHELD)
    assert r.exit_code == 3, r.output
    assert "(exit status 3)" in r.output
    assert json.loads((tmp_path / "o" / "run.json").read_text())["verdict"]["status"] == \
        "withheld"
    # apply and report read a withheld run as any other: nothing flagged, every sample kept
    assert cli("report", tmp_path / "o").exit_code == 0
    r = cli("apply", tmp_path / "o", "--out", tmp_path / "final")
    assert r.exit_code == 0 and "removed 0" in r.output, r.output


@pytest.mark.parametrize("args", [
    ["run", "{empty}", "--out", "{tmp}/o"],                          # no images
    ["run", "{tmp}/missing", "--out", "{tmp}/o"],                    # no such input
    ["run", "{data}", "--out", "{tmp}/o", "--lr", "-1"],             # a refused setting
    ["run", "{data}", "--out", "{tmp}/o", "--no-such-option"],       # usage (click)
    ["run", "{data}"],                                               # --out missing
    ["demo", "--out", "{tmp}/d", "--noise", "1.5"],
    ["bench", "{data}", "--rate", "2"],
    ["bench", "{data}", "--seed", "1", "--seeds", "2"],
    ["bench", "{data}", "--seeds", "-1"],
    ["report", "{tmp}"],                                             # not a run folder
    ["apply", "{tmp}", "--out", "{tmp}/final"],
    ["apply", "{tmp}/missing", "--out", "{tmp}/final"],
])
def test_bad_input_exits_2_from_every_command(args, small_folder, tmp_path):
    (tmp_path / "empty").mkdir()
    values = {"empty": tmp_path / "empty", "tmp": tmp_path, "data": small_folder}
    r = cli(*(a.format(**values) for a in args))
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------ demo


def _noise_digits(root: Path, noise: float, seed: int, size: int = 32) -> pd.DataFrame:
    """A small stand-in for the digits whose labels are all noise: never convincing."""
    x, y, _, _ = synthetic_images(120, 3, 0.0, seed=seed)
    # not default_rng(seed): synthetic_images drew the true labels from that very
    # stream, and the "random" labels were the true ones
    given = np.random.default_rng(seed + 1).integers(0, 3, len(y))
    rows = []
    for i, (img, g) in enumerate(zip(x, given)):
        rel = f"{g}/{i:04d}.png"
        (root / str(g)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(root / rel)
        rows.append((rel, int(y[i]), int(g), bool(y[i] != g)))
    return pd.DataFrame(rows, columns=["path", "true_label", "given_label", "is_noisy"])


def test_a_withheld_demo_exits_3(tmp_path, monkeypatch):
    import labelclean.demo

    monkeypatch.setattr(labelclean.demo, "write_digits_folder", _noise_digits)
    monkeypatch.setattr(labelclean.demo, "DEMO_MODEL", "mlp:16")
    r = cli("demo", "--out", tmp_path / "d")
    assert r.exit_code == 3, r.output
    assert "(exit status 3)" in r.output
    summary = json.loads((tmp_path / "d" / "demo.json").read_text())
    assert summary["verdict"]["status"] == "withheld"


# ----------------------------------------------------------------------------- bench


def test_bench_exits_3_when_every_seed_was_withheld_and_seed_picks_the_seed(small_folder,
                                                                            tmp_path):
    r = cli("bench", small_folder, "--seed", "7", "--out", tmp_path / "b", *WITHHELD)
    assert r.exit_code == 3, r.output
    assert "every seed's run was withheld (exit status 3)" in r.output
    df = pd.read_csv(tmp_path / "b" / "bench.csv")
    assert df["seed"].tolist() == [7] and df["verdict"].tolist() == ["withheld"]


def test_bench_exits_0_when_a_seed_flagged(clean_folder, tmp_path):
    r = cli("bench", clean_folder, "--seeds", "0", "--out", tmp_path / "b", *FLAGGED)
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "b" / "bench.csv")
    assert df["seed"].tolist() == [0] and df["verdict"].tolist() == ["flagged"]


# ------------------------------------------------------------------- run --nproc N


def _features(path: Path, n: int = 120, missing_label: bool = False) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    df = pd.DataFrame(rng.normal(0, 1.5, (3, 8))[y] + rng.normal(0, 1, (n, 8)),
                      columns=[f"f{i}" for i in range(8)])
    df["label"] = y.astype(str)
    if missing_label:
        df.loc[5, "label"] = ""
    df.to_csv(path, index=False)


def _nproc(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env.pop(distributed.STATUS_ENV, None)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(tmp_path / "tmp")  # where the launcher keeps rank 0's status
    return subprocess.run([sys.executable, "-m", "labelclean", "run", str(tmp_path / "f.csv"),
                           "--out", str(tmp_path / "o"), "--nproc", "2", "--device", "cpu",
                           *args], capture_output=True, text=True, env=env, timeout=300)


def test_a_withheld_run_exits_3_under_nproc_too(tmp_path):
    _features(tmp_path / "f.csv")
    done = _nproc(tmp_path, *WITHHELD)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "(exit status 3)" in done.stderr
    assert "ChildFailedError" not in done.stderr  # rank 0 did not fail: it was withheld
    assert json.loads((tmp_path / "o" / "run.json").read_text())["verdict"]["status"] == \
        "withheld"
    assert not list((tmp_path / "tmp").glob("labelclean-status-*"))  # removed


def test_bad_input_exits_2_under_nproc_too(tmp_path):
    _features(tmp_path / "f.csv", missing_label=True)  # found only once the ranks read it
    done = _nproc(tmp_path, *WITHHELD)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "labelclean: error:" in done.stderr
    assert not (tmp_path / "o").exists()


def test_the_status_file_is_rank_0s_only(tmp_path, monkeypatch):
    status = tmp_path / "status"
    monkeypatch.setenv(distributed.STATUS_ENV, str(status))
    for k, v in {"WORLD_SIZE": "2", "RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    assert not distributed.record_status(3) and not status.exists()
    monkeypatch.setenv("RANK", "0")
    assert distributed.record_status(3) and status.read_text().strip() == "3"
    monkeypatch.delenv("WORLD_SIZE")  # one process: nothing to record
    monkeypatch.delenv("RANK")
    assert not distributed.record_status(2)
