"""Label the learning phases of a training history (paper sections 3 and 4).

The rules, thresholds and smoothing are described in ``docs/phases.md``; the
numbers live in :class:`PhaseThresholds`. In short:

1. **Smooth.** Each input column is replaced by a centred rolling median over
   3 consecutive rows where it is finite (3 epochs when every epoch is probed,
   3 probes otherwise); a single outlying epoch disappears.
2. **Evidence.** For each epoch the smoothed order parameters give the set of
   phases they are compatible with (e.g. ``A_0c < 4 A_0w`` and ``R_cw > 0``:
   phase III). Where the order parameters are missing (NaN), a weaker
   fallback is used: the trend of ``m_w`` (mislabelled loss) with labels, of
   the train accuracy without; its disagreement counts 0.2 instead of 1.
3. **Monotone fit.** The phase sequence is the non-decreasing one
   (I -> II -> III -> IV, or fast learning -> exploration) that disagrees with
   the least evidence (dynamic programming over epochs); among equally good
   fits the one whose transitions come latest. A single contradicting epoch
   can therefore never reorder the phases.
4. **Unknown.** An epoch with no evidence at all is labelled by monotonicity
   only when that is forced (its neighbours with evidence share a phase, or it
   precedes a first phase / follows a last one); otherwise ``"unknown"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

NOISY_PHASES = ("I", "II", "III", "IV")
CLEAN_PHASES = ("fast learning", "exploration")
UNKNOWN = "unknown"


@dataclass(frozen=True)
class PhaseThresholds:
    """Every number the labelling uses; see ``docs/phases.md`` for their meaning.

    With label noise (section 4):

    ``balance_ratio``
        ``A_0c >= balance_ratio * A_0w`` is "``A_0c >> A_0w``" (phase I);
        below it the directed activities are comparable (II, III, IV).
    ``aligned_r_cw``
        ``R_cw > aligned_r_cw`` is "``g_c`` and ``g_w`` aligned" (phase III).
    ``activity_drop``
        ``A <= activity_drop *`` (running maximum of ``A``) is "activity has
        fallen" (phase IV).

    Without label noise (section 3), "exploration" needs two of:
    ``R < diffusive_r`` (``R ~ 0``), ``sigma_lambda2 > large_sigma``
    (``sigma_lambda^2 >> 1``), ``A <= small_activity *`` (running max of ``A``).

    Fallbacks where the order parameters are NaN: with noise, the relative
    per-epoch change of the smoothed ``m_w`` (``> mw_rising``: I; ``<
    mw_falling``: III; otherwise II) and ``m_w <= mw_memorised *`` (running max
    of ``m_w``): IV; without noise, ``train_accuracy >= fit_accuracy``:
    exploration. Fallback evidence weighs ``fallback_weight`` against 1 for
    the order parameters.
    """

    smooth_window: int = 3
    balance_ratio: float = 4.0
    aligned_r_cw: float = 0.0
    activity_drop: float = 0.5
    diffusive_r: float = 0.05
    large_sigma: float = 10.0
    small_activity: float = 0.25
    mw_rising: float = 0.02
    mw_falling: float = -0.05
    mw_memorised: float = 0.1
    fit_accuracy: float = 0.99
    fallback_weight: float = 0.2


DEFAULT_THRESHOLDS = PhaseThresholds()


# --------------------------------------------------------------------------- helpers


def _column(history: pd.DataFrame, name: str) -> np.ndarray:
    if name not in history:
        return np.full(len(history), np.nan)
    return pd.to_numeric(history[name], errors="coerce").to_numpy(dtype=np.float64)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling median over ``window`` consecutive finite values; NaN stays NaN."""
    out = np.full(len(values), np.nan)
    ok = np.isfinite(values)
    if ok.any():
        s = pd.Series(values[ok])
        out[ok] = s.rolling(window, center=True, min_periods=1).median().to_numpy()
    return out


def _running_max(values: np.ndarray) -> np.ndarray:
    filled = np.where(np.isfinite(values), values, -np.inf)
    out = np.maximum.accumulate(filled) if len(filled) else filled
    return np.where(np.isfinite(out), out, np.nan)


def _monotone_fit(compat: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Non-decreasing phase indices minimising the weight of contradicted evidence.

    ``compat[t, p]``: epoch ``t``'s evidence allows phase ``p``; ``weight[t]``:
    what contradicting it costs. Ties go to the lexicographically smallest
    sequence (latest transitions).
    """
    t_len, n_p = compat.shape
    cost = weight[:, None] * ~compat
    best = np.zeros((t_len, n_p))  # best[t, p]: min cost of t.. given phase p at t
    suffix = np.zeros((t_len + 1, n_p))  # suffix[t, p] = min_{q >= p} best[t, q]
    for t in range(t_len - 1, -1, -1):
        best[t] = cost[t] + (suffix[t + 1] if t + 1 < t_len else 0.0)
        suffix[t] = np.minimum.accumulate(best[t][::-1])[::-1]
    out = np.zeros(t_len, dtype=int)
    lo = 0
    for t in range(t_len):
        target = suffix[t, lo]
        p = lo + int(np.argmax(best[t, lo:] <= target + 1e-9))
        out[t] = lo = p
    return out


def _finalise(fit: np.ndarray, weight: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """Phase names; epochs without evidence only where monotonicity forces the phase."""
    labels = [names[p] for p in fit]
    has = np.flatnonzero(weight > 0)
    if len(has) == 0:
        return [UNKNOWN] * len(fit)
    last = len(names) - 1
    for t in np.flatnonzero(weight == 0):
        prev = has[has < t]
        nxt = has[has > t]
        a = fit[prev[-1]] if len(prev) else None
        b = fit[nxt[0]] if len(nxt) else None
        if a is None:
            forced = b == 0
        elif b is None:
            forced = a == last
        else:
            forced = a == b
        labels[t] = names[a if a is not None else b] if forced else UNKNOWN
    return labels


# --------------------------------------------------------------------------- evidence


def _noisy_evidence(h: pd.DataFrame, th: PhaseThresholds) -> tuple[np.ndarray, np.ndarray, list]:
    w = th.smooth_window
    a0c = _smooth(_column(h, "A_0c"), w)
    a0w = _smooth(_column(h, "A_0w"), w)
    rcw = _smooth(_column(h, "R_cw"), w)
    act = _smooth(_column(h, "A"), w)
    mw = _smooth(_column(h, "m_w"), w)
    t_len = len(h)
    compat = np.ones((t_len, 4), dtype=bool)
    weight = np.zeros(t_len)
    source = ["none"] * t_len
    peak_a = _running_max(act)
    peak_mw = _running_max(mw)
    prev_mw = np.nan
    for t in range(t_len):
        if math.isfinite(a0c[t]) and math.isfinite(a0w[t]) and math.isfinite(rcw[t]):
            # Comparable directed activities unless A_0c >= ratio * A_0w (a non-positive
            # A_0w estimate means |g_w| is lost in the noise: clean-dominated).
            if a0c[t] <= 0:
                balanced = True
            elif a0w[t] <= 0:
                balanced = False
            else:
                balanced = a0c[t] < th.balance_ratio * a0w[t]
            aligned = rcw[t] > th.aligned_r_cw
            fallen = bool(math.isfinite(act[t]) and act[t] <= th.activity_drop * peak_a[t])
            compat[t] = [
                not balanced,
                balanced and not aligned and not fallen,
                balanced and aligned,
                fallen and not aligned,
            ]
            weight[t] = 1.0
            source[t] = "order parameters"
        elif math.isfinite(mw[t]):
            if mw[t] <= th.mw_memorised * peak_mw[t]:
                phase = 3
            elif math.isfinite(prev_mw) and prev_mw > 0:
                change = (mw[t] - prev_mw) / prev_mw
                phase = 0 if change > th.mw_rising else 2 if change < th.mw_falling else 1
            else:
                phase = 0
            compat[t] = np.arange(4) == phase
            weight[t] = th.fallback_weight
            source[t] = "m_w trend"
        if math.isfinite(mw[t]):
            prev_mw = mw[t]
    smoothed = {"A_0c": a0c, "A_0w": a0w, "R_cw": rcw, "A": act, "m_w": mw}
    return compat, weight, [source, smoothed]


def _clean_evidence(h: pd.DataFrame, th: PhaseThresholds) -> tuple[np.ndarray, np.ndarray, list]:
    w = th.smooth_window
    r = _smooth(_column(h, "R"), w)
    sig = _smooth(_column(h, "sigma_lambda2"), w)
    act = _smooth(_column(h, "A"), w)
    acc = _smooth(_column(h, "train_accuracy"), w)
    peak_a = _running_max(act)
    t_len = len(h)
    compat = np.ones((t_len, 2), dtype=bool)
    weight = np.zeros(t_len)
    source = ["none"] * t_len
    for t in range(t_len):
        votes = []
        if math.isfinite(r[t]):
            votes.append(r[t] < th.diffusive_r)
        if math.isfinite(sig[t]):
            votes.append(sig[t] > th.large_sigma)
        if math.isfinite(act[t]):
            votes.append(act[t] <= th.small_activity * peak_a[t])
        if len(votes) >= 2:
            explore = sum(votes) >= 2
            weight[t] = 1.0
            source[t] = "order parameters"
        elif math.isfinite(acc[t]):
            explore = acc[t] >= th.fit_accuracy
            weight[t] = th.fallback_weight
            source[t] = "train accuracy"
        else:
            continue
        compat[t] = [not explore, explore]
    smoothed = {"R": r, "sigma_lambda2": sig, "A": act, "train_accuracy": acc}
    return compat, weight, [source, smoothed]


# --------------------------------------------------------------------------- public API


def phase_table(
    history: pd.DataFrame, *, noisy: bool, thresholds: PhaseThresholds | None = None
) -> pd.DataFrame:
    """The labelling with its workings, one row per history row (same index).

    Columns: ``epoch``, ``phase``, ``evidence`` (``"order parameters"``, ``"m_w
    trend"``, ``"train accuracy"`` or ``"none"``), ``compatible`` (the phases
    the epoch's own evidence allows, ``|``-separated) and the smoothed inputs
    (``<name>_smooth``).
    """
    th = thresholds or DEFAULT_THRESHOLDS
    names = NOISY_PHASES if noisy else CLEAN_PHASES
    if len(history) == 0:
        return pd.DataFrame(
            {"epoch": [], "phase": pd.Series([], dtype=object), "evidence": [], "compatible": []},
            index=history.index,
        )
    epochs = (
        _column(history, "epoch") if "epoch" in history else np.arange(len(history), dtype=float)
    )
    order = np.argsort(epochs, kind="stable")
    h = history.iloc[order]
    compat, weight, (source, smoothed) = _noisy_evidence(h, th) if noisy else _clean_evidence(h, th)
    fit = _monotone_fit(compat, weight)
    labels = _finalise(fit, weight, names)
    table = pd.DataFrame(
        {
            "epoch": epochs[order],
            "phase": labels,
            "evidence": source,
            "compatible": [
                "|".join(n for n, ok in zip(names, row, strict=True) if ok) if wt > 0 else ""
                for row, wt in zip(compat, weight, strict=True)
            ],
            **{f"{k}_smooth": v for k, v in smoothed.items()},
        },
    )
    table = table.iloc[np.argsort(order, kind="stable")]  # back to the history's row order
    table.index = history.index
    return table


def label_phases(
    history: pd.DataFrame, *, noisy: bool, thresholds: PhaseThresholds | None = None
) -> pd.Series:
    """One phase label per history row (aligned with ``history.index``).

    ``noisy=True``: ``"I"``, ``"II"``, ``"III"``, ``"IV"`` (section 4: I:
    ``A_0c >> A_0w``; II: comparable and ``R_cw <= 0``; III: ``R_cw > 0``; IV:
    activity ``A`` fallen and ``R_cw <= 0`` again). ``noisy=False``: ``"fast
    learning"`` or ``"exploration"`` (section 3). ``"unknown"`` where neither
    the order parameters nor the fallback give evidence and monotonicity does
    not force a phase. Phases never go back in time (monotone fit); inputs are
    smoothed by a 3-point rolling median. See ``docs/phases.md``.

    ``history`` needs an ``epoch`` column (row order otherwise) and any of the
    order-parameter columns of :func:`~labelclean.order_parameters.probe_order_parameters`
    (NaN where not probed), ``m_w`` and ``train_accuracy`` for the fallbacks.
    """
    table = phase_table(history, noisy=noisy, thresholds=thresholds)
    return table["phase"].astype(object).rename("phase")


def phase_boundaries(phases: pd.Series, epochs) -> dict[str, tuple[int, int]]:
    """First and last epoch of each phase present, in order of first appearance.

    ``epochs`` is aligned with ``phases`` by position (e.g. ``history["epoch"]``).
    ``"unknown"`` epochs are left out.
    """
    labels = np.asarray(pd.Series(phases).astype(object))
    ep = np.asarray(epochs)
    if len(labels) != len(ep):
        raise ValueError(f"{len(labels)} phases but {len(ep)} epochs")
    out: dict[str, tuple[int, int]] = {}
    for name in pd.unique(labels[np.argsort(ep, kind="stable")]):
        if name == UNKNOWN or not isinstance(name, str):
            continue
        sel = ep[labels == name]
        out[name] = (int(sel.min()), int(sel.max()))
    return out
