"""How likely the flags are right: one estimate from the run's own canaries.

The run trains on known-wrong canaries (:mod:`labelclean.canaries`) beside the
user's samples, and scores both the same way. Three quantities follow, each
with a bootstrap interval, overall and per class:

``recall``
    The share of canaries the flag rule flags: how often a wrong label is
    caught in this very run.
``noise_share``
    The share of the samples whose label is wrong, by mixture proportion
    estimation (Blanchard, Lee & Scott 2010; Scott 2015): the samples' score
    distribution ``F`` is a mix ``pi * H + (1 - pi) * G`` of the wrong labels'
    ``H`` (known from the canaries) and the right labels' ``G``. Above any
    threshold ``t``, ``F(>t) / H(>t) = pi + (1 - pi) G(>t) / H(>t)``, so the
    smallest such ratio over thresholds where ``H`` still has mass estimates
    ``pi`` (exactly when right labels never score as high as some wrong ones).
``precision``
    The flags' expected share of wrong labels: ``pi * recall * N / flagged``.

``residual_share`` is the estimated share of wrong labels among the samples
kept (not flagged). ``learned`` tests that the given labels are fitted better
than random labels on the same images: the AUC of the canaries' scores against
the samples' (0.5 when the given labels are no better than random ones).

The estimate assumes the canaries' random wrong labels score like the data's
own wrong labels. Human errors fall between similar classes and are harder to
tell apart than random ones; docs/benchmarks.md measures how far the estimate
is off on such labels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

#: The canary-score quantiles whose thresholds the mixture-proportion estimate
#: takes its minimum over: low ones, near the flag cut. Higher up the canaries'
#: tail outruns the data's own wrong labels (the canaries start training an
#: epoch late, and not every canary follows the data's pattern), and the
#: minimum falls towards 0; lower down, right labels the model gets wrong crowd
#: in. docs/benchmarks.md, "Calibration", has the cells this was chosen on.
MPE_QUANTILES = (0.2, 0.3)
#: Bootstrap resamples of the intervals, and their two-sided level.
BOOTSTRAP = 200
LEVEL = 0.9
#: ``learned`` needs the canaries-versus-samples AUC this many standard errors above 0.5.
LEARNED_Z = 3.0


@dataclass
class Interval:
    """A point estimate with its ``LEVEL`` bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


@dataclass
class ClassEstimate:
    """The estimate for the samples given one class."""

    name: str
    samples: int
    flagged: int
    canaries: int
    precision: Interval
    recall: Interval
    noise_share: Interval


@dataclass
class Estimate:
    """A run's estimate of its own flags; see the module docstring."""

    samples: int
    flagged: int
    canaries: int
    precision: Interval
    recall: Interval
    noise_share: Interval
    residual_share: Interval
    #: Canaries-versus-samples AUC and its z against 0.5.
    auc: float
    auc_z: float
    per_class: list[ClassEstimate] = field(default_factory=list)

    @property
    def learned(self) -> bool:
        return self.auc_z >= LEARNED_Z

    def to_dict(self) -> dict:
        out = asdict(self)
        out["learned"] = self.learned
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Estimate:
        iv = {k: Interval(**d[k]) for k in ("precision", "recall", "noise_share",
                                            "residual_share")}
        per_class = [ClassEstimate(**{**c, **{k: Interval(**c[k]) for k in
                                              ("precision", "recall", "noise_share")}})
                     for c in d.get("per_class", [])]
        return cls(samples=d["samples"], flagged=d["flagged"], canaries=d["canaries"],
                   auc=d["auc"], auc_z=d["auc_z"], per_class=per_class, **iv)


def noise_share(scores: np.ndarray, canary_scores: np.ndarray) -> float:
    """The mixture-proportion estimate of the wrong-label share (module docstring)."""
    scores, canary_scores = np.asarray(scores), np.asarray(canary_scores)
    if len(scores) == 0 or len(canary_scores) == 0:
        return float("nan")
    thresholds = np.quantile(canary_scores, MPE_QUANTILES)
    above_c = (canary_scores[None, :] > thresholds[:, None]).mean(1)
    above = (scores[None, :] > thresholds[:, None]).mean(1)
    ok = above_c > 0
    if not ok.any():
        return float("nan")
    return float(min(1.0, np.min(above[ok] / above_c[ok])))


def point(scores: np.ndarray, canary_scores: np.ndarray, cut: float = 0.0
          ) -> tuple[float, float, float, float]:
    """``(precision, recall, noise_share, residual_share)`` of the flags ``scores > cut``."""
    scores, canary_scores = np.asarray(scores), np.asarray(canary_scores)
    n, flagged = len(scores), int((scores > cut).sum())
    recall = float((canary_scores > cut).mean()) if len(canary_scores) else float("nan")
    pi = noise_share(scores, canary_scores)
    wrong_flagged = pi * recall * n
    # min() would turn a NaN (no canary above a threshold) into 1.0
    precision = float(np.clip(wrong_flagged / flagged, 0.0, 1.0)) if flagged else float("nan")
    kept = n - flagged
    residual = max(0.0, pi * n - wrong_flagged) / kept if kept else float("nan")
    return precision, recall, pi, residual


def auc(scores: np.ndarray, canary_scores: np.ndarray) -> tuple[float, float]:
    """``(AUC, z)``: how often a canary scores above a sample (ties count half), and
    that AUC's distance from 0.5 in standard errors under "no difference"."""
    s, c = np.asarray(scores, dtype=np.float64), np.asarray(canary_scores, dtype=np.float64)
    if len(s) == 0 or len(c) == 0:
        return float("nan"), 0.0
    ranks = _ranks(np.concatenate([c, s]))
    m, n = len(c), len(s)
    value = (ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    se = math.sqrt((m + n + 1) / (12 * m * n))
    return float(value), float((value - 0.5) / se)


def shift(scores: np.ndarray, canary_scores: np.ndarray) -> tuple[float, float]:
    """``(D, p)``: the one-sided two-sample Kolmogorov-Smirnov statistic, the most by
    which the samples' score distribution lies below the canaries' at any threshold,
    ``max_t F(<=t) - H(<=t)``, and its asymptotic p-value ``exp(-2 D^2 mn/(m+n))``
    under "the samples score like the canaries" (Smirnov 1939). Unlike the AUC it
    does not average the difference over the whole distribution: when most labels
    are wrong, the few right ones, fitted far better than any canary, still show."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    c = np.sort(np.asarray(canary_scores, dtype=np.float64))
    if len(s) == 0 or len(c) == 0:
        return float("nan"), 1.0
    t = np.concatenate([s, c])
    d = float(np.max(np.searchsorted(s, t, side="right") / len(s)
                     - np.searchsorted(c, t, side="right") / len(c)))
    d = max(d, 0.0)
    m, n = len(c), len(s)
    return d, float(math.exp(-2.0 * d * d * m * n / (m + n)))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks, 1-based (ties share their mean rank)."""
    order = np.argsort(values, kind="stable")
    sorted_v = values[order]
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    for f, c in zip(first[counts > 1], counts[counts > 1]):
        ranks[order[f:f + c]] = f + (c + 1) / 2
    return ranks


def _bootstrap(scores: np.ndarray, canary_scores: np.ndarray, cut: float,
               rng: np.random.Generator, reps: int) -> np.ndarray:
    """``(reps, 4)`` resampled :func:`point` estimates (samples and canaries resampled)."""
    out = np.full((reps, 4), np.nan)
    if len(scores) == 0 or len(canary_scores) == 0:
        return out
    for b in range(reps):
        s = scores[rng.integers(0, len(scores), len(scores))]
        c = canary_scores[rng.integers(0, len(canary_scores), len(canary_scores))]
        out[b] = point(s, c, cut)
    return out


def _interval(value: float, draws: np.ndarray) -> Interval:
    draws = draws[np.isfinite(draws)]
    if not math.isfinite(value) or len(draws) == 0:
        return Interval(float(value), float("nan"), float("nan"))
    a = (1 - LEVEL) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return Interval(float(value), float(min(lo, value)), float(max(hi, value)))


def estimate(
    scores: np.ndarray,
    canary_scores: np.ndarray,
    y: np.ndarray,
    canary_y: np.ndarray,
    classes: list[str],
    *,
    cut: float = 0.0,
    seed: int = 0,
    reps: int = BOOTSTRAP,
) -> Estimate:
    """The estimate for the flags ``scores > cut`` of samples labelled ``y``, from the
    canaries' ``canary_scores`` under their labels ``canary_y``; overall and per class
    (the samples given the class against every canary: the wrong labels of a class are
    assumed to score like the run's canaries; ``ClassEstimate.canaries`` counts those
    carrying the class, for the record)."""
    scores, canary_scores = np.asarray(scores, np.float64), np.asarray(canary_scores, np.float64)
    y, canary_y = np.asarray(y), np.asarray(canary_y)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0xE57])
    p, r, pi, res = point(scores, canary_scores, cut)
    draws = _bootstrap(scores, canary_scores, cut, rng, reps)
    value, z = auc(scores, canary_scores)
    per_class = []
    for i, name in enumerate(classes):
        # every canary, not only those carrying the class: a class's few canaries
        # made its estimate a lottery (docs/benchmarks.md, "Calibration")
        s = scores[y == i]
        pc = point(s, canary_scores, cut)
        d = _bootstrap(s, canary_scores, cut, rng, reps)
        per_class.append(ClassEstimate(
            name=str(name), samples=len(s), flagged=int((s > cut).sum()),
            canaries=int((canary_y == i).sum()),
            precision=_interval(pc[0], d[:, 0]), recall=_interval(pc[1], d[:, 1]),
            noise_share=_interval(pc[2], d[:, 2])))
    return Estimate(
        samples=len(scores), flagged=int((scores > cut).sum()), canaries=len(canary_scores),
        precision=_interval(p, draws[:, 0]), recall=_interval(r, draws[:, 1]),
        noise_share=_interval(pi, draws[:, 2]), residual_share=_interval(res, draws[:, 3]),
        auc=value, auc_z=z, per_class=per_class)
