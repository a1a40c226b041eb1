"""labelclean inside a training pipeline: clean the labels, then train on what is kept.

scikit-learn's handwritten digits (bundled, no download) as a pandas DataFrame of
64 pixel features and a ``label`` column, split into a training and a test set;
20% of the training labels are changed to another class, standing in for the
mistakes of a real labelling job. Then:

1. ``Cleaner().fit(frame)`` trains one model on the noisy set and flags the samples
   whose label is probably wrong (``result.verdict`` says whether it trusts its flags);
2. ``result.review_frame()`` is the table a person would review (what
   ``flagged_samples.csv`` holds);
3. a scikit-learn classifier is trained on all the noisy labels and on the kept
   samples only, and both are scored on the untouched test set.

Because the wrong labels were made here, it also prints how many of them were found
(a real dataset has no such truth). Takes well under a minute on a laptop CPU:

    python examples/pipeline.py [--noise 0.2] [--seed 0] [--out runs/pipeline]

Swap the DataFrame for your own data: a folder of class sub-folders, a CSV, a
DataFrame of image paths, a Hugging Face or torch dataset (docs/usage.md, "Inputs").
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from labelclean import Cleaner


def noisy_digits(noise: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """``(train, test, wrong)``: frames of 64 features + ``label``; ``wrong`` marks the
    training rows whose label was changed."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y)
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(y_train)) < noise
    # a wrong label is any other class, drawn at random
    y_noisy = np.where(wrong, (y_train + rng.integers(1, 10, len(y_train))) % 10, y_train)
    columns = [f"pixel_{i}" for i in range(x.shape[1])]
    train = pd.DataFrame(x_train, columns=columns).assign(label=y_noisy)
    test = pd.DataFrame(x_test, columns=columns).assign(label=y_test)
    return train, test, wrong


def test_accuracy(train: pd.DataFrame, test: pd.DataFrame) -> float:
    model = LogisticRegression(max_iter=2000)
    model.fit(train.drop(columns="label"), train["label"])
    return model.score(test.drop(columns="label"), test["label"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--noise", type=float, default=0.2, help="share of labels to change")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="also write the run folder here (flagged_samples.csv, report.html...)")
    args = ap.parse_args()

    train, test, wrong = noisy_digits(args.noise, args.seed)
    print(f"{len(train)} training samples, {int(wrong.sum())} of them with a wrong label")

    # 1. one early-stopped training run; every setting left at its default
    result = Cleaner(seed=args.seed).fit(train)
    print(f"verdict: {result.verdict}")

    # 2. what a person would review, most suspicious first
    review = result.review_frame()
    print(review[["row", "given_label", "suggested_label", "score", "action"]]
          .head(10).to_string(index=False))

    # 3. drop the flagged rows (none when the verdict is "withheld") and retrain.
    # result.scores has one row per sample; "index" is the row's position in `train`.
    scores = result.scores.sort_values("index")
    flagged = scores["flagged"].to_numpy(dtype=bool)
    kept = train[~flagged]
    found = int((flagged & wrong).sum())
    print(f"flagged {int(flagged.sum())}: {found} of the {int(wrong.sum())} wrong labels, "
          f"{int(flagged.sum()) - found} right ones")
    print(f"test accuracy trained on every noisy label: {test_accuracy(train, test):.3f}")
    print(f"test accuracy trained on the {len(kept)} kept:     {test_accuracy(kept, test):.3f}")

    if args.out:
        # the same folder `labelclean run` writes; `labelclean apply` reads it
        print(f"run folder written to {result.export(args.out, overwrite=True)}")


if __name__ == "__main__":
    main()
