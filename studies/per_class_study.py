"""Per-class estimates from a class's own canaries or from every canary, compared offline.

Reads the arrays studies/calibration.py saves per cell
(``estimate_inputs_seed*.npz``) and prints, per cell, the mean and the largest
absolute error of the per-class precision estimate (labelclean.estimate.point on
the samples given the class) against the true precision of the class's flags,
with the canaries carrying the class ("own") and with all of them ("all").
docs/benchmarks.md, "Calibration", quotes it.

    python studies/per_class_study.py bench_out/calibration/*/estimate_inputs_seed0.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from labelclean.estimate import point


def errors(path: Path) -> tuple[list[float], list[float]]:
    a = np.load(path)
    inside = ~a["held_out"]
    s, wrong, y = a["scores"][inside], a["wrong"][inside], a["y"][inside]
    c, cy = a["canary_scores"], a["canary_y"]
    own, every = [], []
    for k in np.unique(y):
        flags = s[y == k] > 0
        if flags.sum() < 5:  # too few flags for a true precision
            continue
        true_p = wrong[y == k][flags].mean()
        own.append(abs(point(s[y == k], c[cy == k])[0] - true_p))
        every.append(abs(point(s[y == k], c)[0] - true_p))
    return own, every


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args()
    print("| cell | own canaries: mean / max error | all canaries: mean / max error |")
    print("|---|---|---|")
    for f in args.files:
        own, every = errors(f)
        if not own:
            continue
        print(f"| {f.parent.name} | {np.nanmean(own):.3f} / {np.nanmax(own):.2f} | "
              f"{np.nanmean(every):.3f} / {np.nanmax(every):.2f} |")


if __name__ == "__main__":
    main()
