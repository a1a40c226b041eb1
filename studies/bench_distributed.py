"""One process against two (torch.distributed, gloo on the CPU): time per epoch and flags.

Cleans scikit-learn's digits (1,797 samples, 64 features, 20 % of the labels
flipped at random) with the default MLP three times through the command line:
one process with one thread, one process with two threads, and ``--nproc 2``
(torchrun, one thread per rank). Prints seconds per epoch (training, and the
per-epoch observation: eval pass, gathers, mixture fits, probe) and whether
the flags, ``t_c`` and per-sample losses agree with the one-process run.

    python studies/bench_distributed.py [--epochs 15] [--out /tmp/bench_dist]

docs/distributed.md quotes its output.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits

REPO = Path(__file__).resolve().parents[1]


def write_digits(path: Path, rate: float = 0.2, seed: int = 0) -> None:
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    flip = rng.random(len(y)) < rate
    given = y.copy()
    given[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    df = pd.DataFrame(x, columns=[f"p{i}" for i in range(x.shape[1])])
    df["label"] = given
    df.to_csv(path, index=False)


def run(csv: Path, out: Path, epochs: int, nproc: int, threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "labelclean", "run", str(csv), "--out", str(out),
           "--device", "cpu", "--batch-size", "32", "--max-epochs", str(epochs),
           "--probe-every", "5", "--no-embeddings", "--seed", "0"]
    if nproc > 1:
        cmd += ["--nproc", str(nproc)]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 3):  # 3: withheld, still a complete run
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    metrics = pd.read_csv(out / "metrics.csv")
    scores = pd.read_csv(out / "scores.csv")
    return {
        "wall": wall,
        "epochs": len(metrics),
        "train_s": float(metrics["seconds_train"].mean()),
        "observe_s": float(metrics["seconds_observe"].mean()),
        "t_c": json.loads((out / "run.json").read_text())["t_c"],
        "flags": set(scores.loc[scores["flagged"], "index"]),
        "losses": np.load(out / "losses.npy"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench_dist"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    csv = args.out / "digits.csv"
    write_digits(csv)
    setups = [("1 process, 1 thread", 1, 1), ("1 process, 2 threads", 1, 2),
              ("2 processes (gloo), 1 thread each", 2, 1)]
    rows = {name: run(csv, args.out / f"run{i}", args.epochs, nproc, threads)
            for i, (name, nproc, threads) in enumerate(setups)}
    ref = rows[setups[0][0]]
    print(f"{'setup':36s} {'epochs':>6s} {'train s/ep':>10s} {'observe s/ep':>12s} "
          f"{'wall s':>7s} {'t_c':>4s} {'flagged':>7s} {'same flags':>10s} {'max |dloss|':>11s}")
    for name, r in rows.items():
        n = min(len(r["losses"]), len(ref["losses"]))
        dloss = float(np.abs(r["losses"][:n] - ref["losses"][:n]).max())
        print(f"{name:36s} {r['epochs']:6d} {r['train_s']:10.3f} {r['observe_s']:12.3f} "
              f"{r['wall']:7.1f} {r['t_c']:4d} {len(r['flags']):7d} "
              f"{str(r['flags'] == ref['flags']):>10s} {dloss:11.2e}")


if __name__ == "__main__":
    main()
