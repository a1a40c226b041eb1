"""Injecting label noise with a known mask, for the demo and benchmarks.

Three models of noise, each returning the noisy labels and the boolean mask of
changed labels (a changed label always differs from the original):

``symmetric``
    A fraction ``rate`` of samples, chosen uniformly, get a label drawn
    uniformly from the *other* classes (the paper's set-up).
``pairflip``
    A fraction ``rate`` of each class ``k`` is relabelled ``k + 1 (mod K)``.
``classdep``
    Class-dependent: a random transition matrix where each class sends its
    corrupted samples to ``sparsity`` other classes (default 2), with random
    proportions; a fraction ``rate`` of each class is corrupted.
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("symmetric", "pairflip", "classdep")


def inject_noise(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    kind: str = "symmetric",
    seed: int = 0,
    sparsity: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(noisy_labels, noise_mask)`` for integer ``labels``.

    Exactly ``round(rate * n)`` labels are changed for ``symmetric``; for the
    per-class kinds, ``round(rate * n_k)`` in each class ``k``.
    """
    if not 0 <= rate < 1:
        raise ValueError(f"rate must be in [0, 1), got {rate}")
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise kind must be one of {NOISE_KINDS}")
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    noisy = y.copy()
    mask = np.zeros(len(y), dtype=bool)
    if kind == "symmetric":
        idx = rng.choice(len(y), int(round(rate * len(y))), replace=False)
        shift = rng.integers(1, num_classes, size=len(idx))
        noisy[idx] = (y[idx] + shift) % num_classes
        mask[idx] = True
        return noisy, mask
    targets = _transition_targets(num_classes, kind, rng, sparsity)
    for k in range(num_classes):
        members = np.flatnonzero(y == k)
        idx = rng.choice(members, int(round(rate * len(members))), replace=False)
        dest, probs = targets[k]
        noisy[idx] = rng.choice(dest, size=len(idx), p=probs)
        mask[idx] = True
    return noisy, mask


def precision_recall_f1(flags: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of boolean ``flags`` against the true noise ``mask``."""
    flags, mask = np.asarray(flags, dtype=bool), np.asarray(mask, dtype=bool)
    tp = int((flags & mask).sum())
    p = tp / max(1, int(flags.sum()))
    r = tp / max(1, int(mask.sum()))
    return p, r, (0.0 if tp == 0 else 2 * p * r / (p + r))


def _transition_targets(
    num_classes: int, kind: str, rng: np.random.Generator, sparsity: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for k in range(num_classes):
        if kind == "pairflip":
            out.append((np.array([(k + 1) % num_classes]), np.array([1.0])))
            continue
        others = np.array([c for c in range(num_classes) if c != k])
        dest = rng.choice(others, size=min(sparsity, len(others)), replace=False)
        w = rng.dirichlet(np.ones(len(dest)))
        out.append((dest, w))
    return out
