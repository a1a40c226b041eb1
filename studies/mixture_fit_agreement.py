"""Would a cheaper mixture fit change any decision? Replayed on the offline study's saved runs.

For every saved run (``tc_sweep.py`` output) and epoch, minus the AUM is fitted
with the library's settings (up to 20,000 points, 3 k-means initialisations)
and with cheaper ones (1 initialisation; a 10,000-point subsample; both), and
the bimodality test and the AUM population gate (``decision.aum_population``)
are compared, with the time each fit took.

    python studies/mixture_fit_agreement.py bench_out/tc_rt/*.npz bench_out/cnn/regnetx*.npz \\
        --csv bench_out/mixture_fit_agreement.csv
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

import labelclean.mixture as mx
from labelclean.decision import aum_population, suspicion_scores

VARIANTS = {"library": (20_000, 3), "n_init1": (20_000, 1), "points10k": (10_000, 3),
            "points10k_n_init1": (10_000, 1)}


def _with_n_init(gaussian_mixture, n_init: int):
    """``GaussianMixture`` with ``n_init`` forced, whatever the caller passes."""
    def make(*args, **kwargs):
        return gaussian_mixture(*args, **{**kwargs, "n_init": n_init})
    return make


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--csv", type=Path, required=True)
    args = ap.parse_args()
    original = mx.GaussianMixture, mx.MAX_FIT_POINTS
    rows = []
    try:
        for path in args.runs:
            d = np.load(path)
            for t in range(len(d["margins"])):
                s = suspicion_scores([d["losses"][t]], d["margins"][: t + 1], "aum", 0)
                row = {"run": path.stem, "epoch": t + 1}
                for name, (points, n_init) in VARIANTS.items():
                    mx.MAX_FIT_POINTS = points
                    mx.GaussianMixture = _with_n_init(original[0], n_init)
                    start = time.perf_counter()
                    m = mx.fit_loss_mixture(s, seed=0)
                    row.update({f"{name}_seconds": time.perf_counter() - start,
                                f"{name}_D": m.separation, f"{name}_bimodal": m.bimodal,
                                f"{name}_population": aum_population(m, s)})
                rows.append(row)
    finally:
        mx.GaussianMixture, mx.MAX_FIT_POINTS = original
    df = pd.DataFrame(rows)
    df.to_csv(args.csv, index=False)
    for name in list(VARIANTS)[1:]:
        bimodal = int((df[f"{name}_bimodal"] != df.library_bimodal).sum())
        print(f"{name}: bimodal differs in {bimodal}, population gate in "
              f"{int((df[f'{name}_population'] != df.library_population).sum())} of {len(df)} "
              f"epochs; median |dD| {(df[f'{name}_D'] - df.library_D).abs().median():.2g}; "
              f"time {df[f'{name}_seconds'].sum() / df.library_seconds.sum():.2f}x")


if __name__ == "__main__":
    main()
