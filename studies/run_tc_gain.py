"""Per-epoch F1 and the t_c a minimum gain would pick, from one mnist_benchmark.py run.

Rebuilds the injected truth of ``mnist_benchmark.py --n N --noise 0.4 --seed 0``,
scores the flags AUM < 0 would give after every epoch (from the run's
``margins.npy``) and replays the online peak of Ashman's D (``metrics.csv``
``separation``) with each minimum relative gain.

    python studies/run_tc_gain.py --n 40000 --run bench_out/scale_40000/run
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from mnist_benchmark import MNIST
from tc_rules import online_peak

from labelclean.noise import inject_noise, precision_recall_f1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--noise", type=float, default=0.4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mnist", type=Path, default=MNIST)
    args = ap.parse_args()
    d = np.load(args.mnist)
    idx = np.sort(np.random.default_rng(args.seed).choice(len(d["y_train"]), args.n, replace=False))
    _, mask = inject_noise(d["y_train"][idx], 10, args.noise, "symmetric", seed=args.seed)
    scores = pd.read_csv(args.run / "scores.csv").sort_values("index")
    # sample ids are <label>/<position in the subsample>.png
    truth = mask[scores["sample_id"].str.extract(r"/(\d+)\.png$")[0].astype(int).to_numpy()]
    margins = np.load(args.run / "margins.npy")
    metrics = pd.read_csv(args.run / "metrics.csv")
    aum = np.cumsum(margins, 0) / np.arange(1, len(margins) + 1)[:, None]
    f1 = [precision_recall_f1(a < 0, truth)[2] for a in aum]
    print("F1 of AUM < 0 per epoch:", np.round(f1, 3).tolist())
    print("Ashman's D per epoch:", metrics.separation.round(3).tolist())
    start = 2  # the default rule searches from epoch 3 (AUM_MIN_EPOCHS)
    for gain in (0.0, 0.005, 0.01, 0.02):
        t = start + online_peak(metrics.separation.to_numpy()[start:],
                                metrics.train_loss.to_numpy()[start:], 5, min_gain=gain)
        print(f"min_gain {gain}: t_c {t + 1}, F1 {f1[t]:.3f}, "
              f"stops after {min(len(metrics), t + 6)} epochs")


if __name__ == "__main__":
    main()
