"""The numbers the figures draw, taken from the run's files.

Every suspicion score shown comes from the decision module: ``scores.csv``'s
``score`` (what :class:`labelclean.decision.TcPolicy` fitted the mixture to at
t_c), or the run's suspicion (:mod:`labelclean.suspicions`) replayed over the stored
``losses.npy`` / ``margins.npy``; the report never computes a score its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..decision import TcPolicy
from .run import RunFiles

#: Heatmap quantiles and histograms of this many samples look the same as of a
#: million; reading fewer columns of the per-epoch arrays is faster.
MAX_HEATMAP_SAMPLES = 20_000


def metric_column(metrics: pd.DataFrame, name: str) -> pd.Series | None:
    """A numeric metrics column with at least one finite value, else None."""
    if name not in metrics.columns:
        return None
    col = pd.to_numeric(metrics[name], errors="coerce")
    return col if np.isfinite(col.to_numpy(dtype=float)).any() else None


def epochs_of(run: RunFiles) -> np.ndarray:
    """The epoch of each ``metrics.csv`` row."""
    if "epoch" in run.metrics.columns:
        return run.metrics["epoch"].to_numpy()
    return np.arange(1, len(run.metrics) + 1)


def phase_spans(run: RunFiles) -> list[tuple[str, int, int]]:
    """Contiguous ``(phase, first_epoch, last_epoch)`` runs, from ``metrics.phase``
    when present, else from ``run.json`` ``phase_boundaries``; empty when neither."""
    m = run.metrics
    if "phase" in m.columns and m["phase"].notna().any():
        spans: list[tuple[str, int, int]] = []
        for epoch, phase in zip(epochs_of(run), m["phase"], strict=True):
            if not isinstance(phase, str) or not phase.strip():
                continue
            if spans and spans[-1][0] == phase and spans[-1][2] == epoch - 1:
                spans[-1] = (phase, spans[-1][1], int(epoch))
            else:
                spans.append((phase, int(epoch), int(epoch)))
        return spans
    bounds = run.run.get("phase_boundaries") or {}
    return [(str(k), int(v[0]), int(v[1])) for k, v in bounds.items() if v and len(v) == 2]


def float_of(d: dict, key: str) -> float:
    """``d[key]`` as a float; NaN when missing or not a number."""
    try:
        return float(d.get(key, np.nan))
    except (TypeError, ValueError):
        return float("nan")


# ----------------------------------------------------------------------------- scores


def aum_start(run: RunFiles) -> int:
    """The epoch the AUM's area starts at: the first at which the model had learned
    every class (``TcPolicy.learned`` on ``metrics.classes_learned``), as the
    policy does; 1 for runs whose metrics do not say."""
    learned = metric_column(run.metrics, "classes_learned")
    k = len(run.classes)
    if learned is None or not k:
        return 1
    policy = TcPolicy(suspicion="aum")
    for epoch, n in zip(epochs_of(run), learned, strict=True):
        if np.isfinite(n) and policy.learned(int(n), k):
            return int(epoch)
    return 1


def area_start_at(run: RunFiles, t: int, start: int = 1) -> int:
    """The first epoch of the margins the policy had summed after epoch ``t``:
    ``metrics.csv``'s ``aum_from`` (what the policy recorded), else ``start``
    (:func:`aum_start`) once ``t`` reached it, else 1."""
    first = start if t >= start else 1
    recorded = metric_column(run.metrics, "aum_from")
    if recorded is not None and t <= len(recorded):
        value = recorded.to_numpy(dtype=float)[t - 1]
        first = int(value) if np.isfinite(value) else first  # as the policy averaged
    return first


def suspicion_at(run: RunFiles, t: int, losses: np.ndarray | None,
                 margins: np.ndarray | None, start: int = 1) -> np.ndarray | None:
    """The run's suspicion score after epoch ``t`` (1-based), by its suspicion's
    :meth:`~labelclean.suspicions.Suspicion.replay` on the rows of ``losses`` /
    ``margins`` (``(epochs, n)``): the last ``window`` epochs' losses, or the
    margins of epochs :func:`area_start_at` ``..t`` (``start``: :func:`aum_start`;
    before it the area runs from epoch 1, as in the policy). None for a
    suspicion this process has not registered."""
    spec = run.suspicion_spec
    if spec is None:
        return None
    return spec.replay(losses, margins, t, area_start_at(run, t, start))


def _stored(run: RunFiles) -> dict[str, np.ndarray | None]:
    return {"losses": run.losses, "margins": run.margins}


def scores_at_t_c(run: RunFiles) -> np.ndarray:
    """What the mixture at ``t_c`` was fitted to, per sample, in index order.

    ``scores.csv``'s ``score`` when present (stored by the decision module:
    the windowed loss, its log, or minus the AUM); for runs made before it was
    stored, :func:`suspicion_at` ``t_c`` from ``losses.npy`` / ``margins.npy``;
    else ``scores.loss``.
    """
    if "score" in run.scores.columns:
        return run.scores["score"].to_numpy(dtype=np.float64)
    spec, t_c, stored = run.suspicion_spec, run.t_c, _stored(run)
    if spec is not None and all(
            stored[u] is not None and 1 <= t_c <= stored[u].shape[0] for u in spec.uses):
        arrays = {k: None if v is None or k not in spec.uses
                  else np.asarray(v[:t_c], dtype=np.float64) for k, v in stored.items()}
        values = suspicion_at(run, t_c, arrays["losses"], arrays["margins"], aum_start(run))
        if values is not None:
            return values
    return run.scores["loss"].to_numpy(dtype=np.float64)


def _subsample_columns(values: np.ndarray) -> np.ndarray:
    if values.shape[1] <= MAX_HEATMAP_SAMPLES:
        return np.asarray(values, dtype=np.float64)
    idx = np.linspace(0, values.shape[1] - 1, MAX_HEATMAP_SAMPLES).astype(int)
    return np.asarray(values[:, idx], dtype=np.float64)


@dataclass
class ScoreHistory:
    """Per-sample values after every epoch, for the heatmap (:func:`suspicion_history`)."""

    #: ``(epochs, n)``: row ``t - 1`` is epoch ``t`` (n: at most 20,000 samples).
    values: np.ndarray
    #: What the values are, for the title.
    label: str
    #: The values are the run's suspicion score, the quantity the per-epoch
    #: mixtures (``m_c``, ``m_w``, ``threshold`` in metrics.csv) were fitted to;
    #: otherwise they are plain losses and those must not be drawn over them.
    in_score_units: bool


def suspicion_history(run: RunFiles) -> ScoreHistory | None:
    """Each sample's suspicion score after every epoch (:func:`suspicion_at`).

    An AUM run without ``margins.npy``, or a suspicion the decision module
    does not know, falls back to the per-sample loss of each epoch
    (``in_score_units`` False). None when the files are missing. The policy
    leaves epochs it found unstable out of the loss windows; the files do not
    say which those were, so after such an epoch the windowed values can
    differ a little (``scores.csv``, which the histogram shows, is exact).
    """
    spec, stored = run.suspicion_spec, _stored(run)
    if spec is not None and all(stored[u] is not None and stored[u].shape[0] > 0
                                for u in spec.uses):
        arrays = {k: _subsample_columns(stored[k]) if k in spec.uses else None
                  for k in stored}
        epochs = min(arrays[u].shape[0] for u in spec.uses)
        start = aum_start(run) if "margins" in spec.uses else 1
        values = [suspicion_at(run, t, arrays["losses"], arrays["margins"], start)
                  for t in range(1, epochs + 1)]
        if all(v is not None for v in values):
            return ScoreHistory(np.stack(values), run.quantity_at("t"), True)
    if run.losses is None or run.losses.shape[0] == 0:
        return None
    return ScoreHistory(_subsample_columns(run.losses), "per-sample loss", False)


# ----------------------------------------------------------------------------- histogram


@dataclass
class Histogram:
    """What the loss-histogram figure draws (see :func:`histogram_data`)."""

    #: Every finite suspicion score at t_c (``scores.csv`` ``score``), in index order.
    values: np.ndarray
    bins: np.ndarray
    #: Per bin, relative to all ``values`` so that the mixture curves match.
    density: np.ndarray
    #: The flagging rule's cut in the score's units: 0 for AUM, else ``l_c``.
    cut: float
    #: The mixture's crossing point (``l_c``); for AUM not what flags.
    threshold: float
    #: ``m_c, s_c, m_w, s_w, r`` of the mixture at t_c (NaN when missing).
    mixture: dict
    #: A second population was found, so the samples above ``cut`` were flagged.
    noisy: bool
    #: Samples below / above the drawn range.
    below: int
    above: int

    @property
    def lo(self) -> float:
        return float(self.bins[0])

    @property
    def hi(self) -> float:
        return float(self.bins[-1])


def histogram_data(run: RunFiles) -> Histogram | None:
    """The suspicion scores at t_c binned for the histogram figure; None when
    there are none.

    The range covers the bulk of the scores (0.5th to 99.5th percentile, from
    0 for losses), the mislabelled component to ``m_w + 2.5 s_w`` and the
    flagging cut; the AUM's cut at 0 is always in view.
    """
    values = scores_at_t_c(run)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    mix = run.run.get("mixture_at_t_c") or {}
    params = {k: float_of(mix, k) for k in ("m_c", "s_c", "m_w", "s_w", "r")}
    threshold, cut = float_of(mix, "threshold"), run.flag_cut
    aum = run.suspicion == "aum"
    bimodal = bool(mix.get("bimodal", run.run.get("second_population_found", False)))
    # For AUM a second population may also have shown in the window's losses.
    noisy = bimodal or bool(run.scores["flagged"].any())
    bottom, top = float(values.min()), float(values.max())
    m_w, s_w, m_c, s_c = params["m_w"], params["s_w"], params["m_c"], params["s_c"]
    hi = float(np.quantile(values, 0.995))
    if np.isfinite(m_w + s_w):
        hi = max(hi, m_w + 2.5 * s_w)
    hi = min(hi, top)
    if run.suspicion == "loss":
        lo = min(0.0, bottom)
    else:
        lo = float(np.quantile(values, 0.005))
        if np.isfinite(m_c + s_c):
            lo = min(lo, m_c - 2.5 * s_c)
        lo = max(lo, bottom)
    marks = [x for x in (cut, threshold) if np.isfinite(x) and bottom <= x <= top]
    if aum:
        marks.append(0.0)
    span = hi - lo if hi > lo else 1.0
    for x in marks:
        lo, hi = min(lo, x - 0.03 * span), max(hi, x + 0.03 * span)
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, 81)
    shown = values[(values >= lo) & (values <= hi)]
    counts, _ = np.histogram(shown, bins=bins)
    density = counts / (len(values) * (bins[1] - bins[0]))
    return Histogram(values, bins, density, cut, threshold, params, noisy,
                     int((values < lo).sum()), int((values > hi).sum()))
