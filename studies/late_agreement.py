"""How many flags does a model that agrees with the label at t_c make, and how good are they?

A row flagged by its area under the margin (AUM < 0) whose model, at ``t_c``,
predicts the given label is a label fitted late. This measures their share of
the flags, their precision, and F1 with and without them, on an MNIST subset
with injected noise (default settings otherwise).

    python studies/late_agreement.py --n 4000 --rate 0.4 --noise symmetric
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from labelclean import Cleaner, Dataset
from labelclean.noise import inject_noise, precision_recall_f1

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "mnist.npz"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    d = np.load(MNIST)
    idx = np.sort(np.random.default_rng(0).choice(60_000, args.n, replace=False))
    noisy, mask = inject_noise(d["y_train"][idx], 10, args.rate, args.noise, seed=0)
    res = Cleaner(probe_every=0).fit(Dataset.from_arrays(d["x_train"][idx], noisy,
                                                         noise_mask=mask))
    s = res.scores.sort_values("index")
    flags, agrees = s["flagged"].to_numpy(), s["model_agrees"].to_numpy()
    late = flags & agrees
    print(f"t_c {res.t_c}, {flags.sum()} flagged, {late.sum()} of them fitted late "
          f"(precision {mask[late].mean() if late.any() else float('nan'):.3f})")
    print(f"F1 with them    {precision_recall_f1(flags, mask)[2]:.3f}")
    print(f"F1 without them {precision_recall_f1(flags & ~agrees, mask)[2]:.3f}")


if __name__ == "__main__":
    main()
