"""The mixture-proportion thresholds of labelclean.estimate, compared offline.

Reads the arrays studies/calibration.py saves per cell
(``estimate_inputs_seed*.npz``: the samples' scores at ``t_c``, the truth, the
held-out mask, the canaries' scores) and prints, for each set of canary-score
quantiles, the estimated precision / wrong-label share against the true ones.

    python studies/estimator_grid.py bench_out/calibration/*/estimate_inputs_seed0.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import labelclean.estimate as estimate

GRIDS = ((0.5, 0.65, 0.8), (0.2, 0.3), (0.1, 0.2, 0.3), (0.25,), (0.1,))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    print("| cell | true precision | true wrong share | "
          + " | ".join(f"quantiles {g}" for g in GRIDS) + " |")
    print("|" + "---|" * (3 + len(GRIDS)))
    for f in args.files:
        a = np.load(f)
        inside = ~a["held_out"]
        s, wrong, c = a["scores"][inside], a["wrong"][inside], a["canary_scores"]
        true_p = wrong[s > 0].mean() if (s > 0).any() else float("nan")
        cells = []
        for grid in GRIDS:
            estimate.MPE_QUANTILES = grid
            p, _, pi, _ = estimate.point(s, c, 0.0)
            cells.append(f"{p:.2f} / {pi:.2f}")
        print(f"| {f.parent.name} | {true_p:.2f} | {wrong.mean():.2f} | " + " | ".join(cells)
              + " |")


if __name__ == "__main__":
    main()
