"""Known-wrong canaries: the evidence a run holds out for itself.

A canary is one of the user's samples, held out of training under its given
label and trained on instead, from the epoch the model has learned the labels
on, under a wrong label drawn from the data's own confusion
(:func:`canary_labels`). The canaries are trained on like every other row, so their suspicion
scores show, in this very run, how samples whose label is wrong score: the
share of canaries the flag rule flags estimates the rule's recall, and the
whole distribution of their scores lets :mod:`labelclean.estimate` estimate
how many of the user's labels are wrong, hence the precision of the flags.
No canary is ever a sample of the result: they appear in no output but the
estimate.

A canary is wrong whenever the given label of its sample is right; when that
label is itself wrong, the canary's label may be the true class (rarely: the
canaries then flatter nothing, they only make the recall look a little lower).
"""

from __future__ import annotations

import math

import numpy as np

#: Canaries per sample (``Cleaner(canaries=...)``'s default) ...
DEFAULT_SHARE = 0.05
#: ... but at least this many per class (the per-class estimates need them) ...
MIN_PER_CLASS = 10
#: ... and never more than this share of the samples.
MAX_SHARE = 0.1


def canary_count(n: int, num_classes: int, share: float = DEFAULT_SHARE) -> int:
    """How many canaries ``n`` samples of ``num_classes`` classes get (0 with ``share=0``)."""
    if share <= 0 or num_classes < 2:
        return 0
    wanted = max(math.ceil(share * n), MIN_PER_CLASS * num_classes)
    return int(min(wanted, math.floor(max(share, MAX_SHARE) * n)))


def canary_rows(y: np.ndarray, num_classes: int, share: float = DEFAULT_SHARE,
                seed: int = 0) -> np.ndarray:
    """The samples whose inputs become canaries, sorted: a function of ``(y,
    num_classes, share, seed)`` only, so a resumed run and every rank of a
    distributed run hold out the same ones. Drawn without replacement."""
    m = canary_count(len(y), num_classes, share)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xCA9A])
    return np.sort(rng.choice(len(y), size=m, replace=False)).astype(np.int64)


def confusion(pred: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts: row ``t``, column ``j`` counts the samples the model
    predicts as ``t`` that are given label ``j``. Before the model memorises, its
    predictions stand for the true classes, and the off-diagonal of row ``t``
    shows which wrong labels the data gives to samples of class ``t``."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (np.asarray(pred), np.asarray(y)), 1)
    return counts


def canary_labels(given: np.ndarray, top: np.ndarray, counts: np.ndarray,
                  seed: int = 0) -> np.ndarray:
    """A wrong label for each canary: its sample is given label ``given``, and the
    model (out of sample: the sample is held out) sees it as class ``top``.

    The label is drawn from the data's own wrong labels of class ``top``: ``j`` with
    probability proportional to ``counts[top, j]`` (:func:`confusion`; plus one, so
    that every class stays possible), over the classes other than ``top`` and
    ``given``. Wrong labels of the data's own pattern (pair flips, human
    confusions between similar classes) are harder to tell from right ones than
    uniformly random labels, and the canaries must be as hard, or the estimate
    flatters the flags. Neither the model's class nor the given label is drawn:
    either may be the sample's true class, and a canary under its true class would
    be no canary.
    """
    given, top = np.asarray(given, dtype=np.int64), np.asarray(top, dtype=np.int64)
    k = counts.shape[0]
    rows = np.arange(len(given))
    weights = np.asarray(counts, dtype=np.float64)[top] + 1.0
    weights[rows, top] = 0.0
    weights[rows, given] = 0.0
    empty = weights.sum(1) == 0  # two classes, and the model disagrees: no third
    weights[empty] = 1.0
    weights[rows, given] = 0.0
    weights /= weights.sum(1, keepdims=True)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x1AB])
    u = rng.random(len(given))[:, None]
    return np.minimum((u > weights.cumsum(1)).sum(1), k - 1).astype(np.int64)
