"""Would labelclean find the wrong labels in data like mine? Measure it on labels you trust.

Take a set whose labels are right (here scikit-learn's handwritten digits, bundled,
as a DataFrame of 64 pixel features and a ``label`` column), let
:func:`labelclean.bench.run_bench` change a share of the labels on purpose, clean
the changed copy with the settings you would use, and score the flags against
what was changed: precision, recall and F1 per seed, the AUROC of the ranking, the
estimated against the true share of wrong labels, ``t_c``, and the *oracle* (the
best F1 any epoch of the same run would have given). With ``--retrain`` and a test
set it also trains on the noisy labels, on the kept samples and on the truly clean
ones, and reports ``Q = (a_c - a_n) / (a_p - a_n)``: how much of the accuracy the
wrong labels cost, cleaning won back.

    python examples/bench.py [--noise symmetric] [--rate 0.2] [--seeds 0 1] [--retrain]

The command line does the same on a folder or CSV (docs/usage.md, "bench"):

    labelclean bench data/ --noise symmetric --rate 0.2 --seeds 0 1 --out bench_out/first

Any keyword of ``Cleaner`` goes to ``run_bench`` as well (``model=...``, ``suspicion=...``):
the way to compare settings on your own kind of data before trusting one.
"""

from __future__ import annotations

import argparse

import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from labelclean.bench import format_table, run_bench


def digits_frames(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(train, test)``: 64 pixel features and the (right) ``label``."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y)
    columns = [f"pixel_{i}" for i in range(x.shape[1])]
    return (pd.DataFrame(x_train, columns=columns).assign(label=y_train),
            pd.DataFrame(x_test, columns=columns).assign(label=y_test))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", default="symmetric", choices=["symmetric", "pairflip", "classdep"],
                    help="how labels are changed")
    ap.add_argument("--rate", type=float, default=0.2, help="share of labels to change")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--retrain", action="store_true",
                    help="also report test accuracies and Q (three more trainings per seed)")
    ap.add_argument("--out", default=None, help="write bench.csv and each seed's scores here")
    args = ap.parse_args()

    train, test = digits_frames()
    table = run_bench(train, noise=args.noise, rate=args.rate, seeds=args.seeds,
                      retrain=args.retrain, test=test if args.retrain else None,
                      out=args.out, echo=print, progress=False)
    print(format_table(table))
    print("verdicts:", ", ".join(f"seed {s}: {v}" for s, v in zip(table["seed"],
                                                                   table["verdict"])))


if __name__ == "__main__":
    main()
