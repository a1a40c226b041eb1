"""The report's figures, one function each, registered in display order.

To add a figure: write ``fig_<name>(run) -> Figure | None`` below and put
``@register("<name>", caption=..., needs=...)`` on it (:mod:`.registry`);
nothing else changes. The suspicion scores a figure shows come from
:mod:`.data`, i.e. from the decision module, never recomputed here.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .data import (
    epochs_of,
    histogram_data,
    metric_column,
    phase_spans,
    suspicion_history,
)
from .plotting import decorate, legend, new_figure, plot_line, wrap
from .registry import register
from .run import RunFiles

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure


@register(
    "accuracy",
    needs=("train_accuracy|eval_accuracy|val_accuracy|train_loss|eval_loss",),
    caption="Accuracy and loss on the training set (given labels) and, when a validation "
            "set was given, on it. Shaded bands are the learning phases; the dashed line is "
            "t_c.",
)
def fig_accuracy(run: RunFiles) -> MplFigure | None:
    """Accuracy (training running average, eval pass, validation) and loss over epochs."""
    m, x = run.metrics, epochs_of(run)
    acc = [(c, lbl) for c, lbl in (
        ("train_accuracy", "train (during the epoch)"),
        ("eval_accuracy", "train (eval pass, given labels)"),
        ("val_accuracy", "validation"),
    ) if metric_column(m, c) is not None]
    loss = [(c, lbl) for c, lbl in (
        ("train_loss", "train (during the epoch)"), ("eval_loss", "train (eval pass)"),
    ) if metric_column(m, c) is not None]
    panels = [(t, y, cols) for t, y, cols in (
        ("Accuracy", "accuracy", acc), ("Loss", "mean cross-entropy", loss)) if cols]
    if not panels:
        return None
    fig, axes = new_figure(len(panels))
    spans = phase_spans(run)
    for ax, (title, ylabel, cols) in zip(axes, panels, strict=True):
        for c, lbl in cols:
            plot_line(ax, x, metric_column(m, c), lbl)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if title == "Loss" and all((metric_column(m, c) > 0).all() for c, _ in cols):
            ax.set_yscale("log")
        decorate(ax, run, spans)
        legend(ax, loc="best")
    return fig


@register(
    "separation",
    needs=("m_c", "m_w"),
    shows_score=True,
    caption="The two loss populations fitted every epoch. The paper's cleaning time t_c is "
            "where they are furthest apart (ΔL = m_w − m_c largest; phase II).",
    suspicion_captions={
        "aum": "The two populations of the suspicion score fitted every epoch t: each "
               "sample's score is minus its area under the margin (AUM, its given-label "
               "logit minus the largest other logit, averaged over epochs 1..t), so "
               "m_c, m_w and the mixture's crossing are in margin units (negated). "
               "t_c is where the populations are furthest apart. Samples are flagged "
               "where AUM < 0 (score above the dashed line at 0), not at the mixture's "
               "crossing.",
        "logloss": "The two populations of the suspicion score (the log of the loss) fitted "
                   "every epoch; m_c, m_w and the threshold l_c are in log-loss units. t_c "
                   "is where they are furthest apart (ΔL = m_w − m_c largest; phase II).",
    },
)
def fig_separation(run: RunFiles) -> MplFigure | None:
    """The two suspicion-score populations' means +- sd, the threshold (and, for AUM,
    the flag rule's cut at 0), and delta_L, over epochs."""
    m, x = run.metrics, epochs_of(run)
    m_c, m_w = metric_column(m, "m_c"), metric_column(m, "m_w")
    if m_c is None or m_w is None:
        return None
    aum = run.suspicion == "aum"
    fig, (a1, a2) = new_figure(2)
    spans = phase_spans(run)
    s_c, s_w = metric_column(m, "s_c"), metric_column(m, "s_w")
    for mean, sd, colour, name in (
        (m_c, s_c, "#2471a3", "clean: m_c ± s_c"),
        (m_w, s_w, "#c0392b", "mislabelled: m_w ± s_w"),
    ):
        a1.plot(x, mean, color=colour, marker="o", ms=3, label=name)
        if sd is not None:
            a1.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.18, lw=0)
    if aum:
        plot_line(a1, x, metric_column(m, "threshold"), "mixture crossing (not the flag rule)",
                   color="#777", ls=":", lw=1)
        a1.axhline(0.0, color="k", ls="--", lw=1, label="flag rule: AUM < 0 (score > 0)")
    else:
        plot_line(a1, x, metric_column(m, "threshold"), "threshold l_c", color="k", ls="--", lw=1)
    if run.suspicion == "loss" and run.window == 1:
        # L_c, L_w are mean raw losses: comparable to m_c, m_w only then.
        plot_line(a1, x, metric_column(m, "L_c_true"), "L_c (true split)", color="#2471a3", ls=":")
        plot_line(a1, x, metric_column(m, "L_w_true"), "L_w (true split)", color="#c0392b", ls=":")
    a1.set_ylabel(wrap(run.quantity_at("t", short=True)))
    noun = "Loss" if run.suspicion == "loss" else "Suspicion-score"
    a1.set_title(f"{noun} populations (mixture fit per epoch)")
    lo = float(np.nanmin(m_c - (s_c if s_c is not None else 0)))
    hi = float(np.nanmax(m_w + (s_w if s_w is not None else 0)))
    if run.suspicion == "loss":  # losses are >= 0: start the axis near 0
        a1.set_ylim(max(lo, -0.05 * hi), hi * 1.05 if hi > 0 else 1)
    elif np.isfinite(lo) and np.isfinite(hi):  # signed scores (log losses, minus AUM)
        if aum:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        pad = 0.05 * (hi - lo) if hi > lo else 1.0
        a1.set_ylim(lo - pad, hi + pad)
    dl = metric_column(m, "delta_L")
    plot_line(a2, x, dl, "ΔL = m_w − m_c", color="#7d3c98")
    if dl is not None and metric_column(m, "unstable") is not None:
        bad = m["unstable"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
        if bad.any():
            a2.plot(x[bad], dl.to_numpy()[bad], "x", color="k", ms=7, label="unstable epoch")
    a2.set_ylabel("ΔL" if run.suspicion == "loss" else "ΔL (in the score's units)")
    a2.set_title("Separation ΔL (t_c maximises the detector's score)")
    sep = metric_column(m, "separation")
    if sep is not None:
        twin = a2.twinx()
        twin.plot(x, sep, color="#999", ls="--", lw=1, label="Ashman's D (right axis)")
        twin.set_ylabel("Ashman's D", color="#777")
        legend(twin, loc="lower right")
    for ax in (a1, a2):
        decorate(ax, run, spans)
        legend(ax, loc="best")
    return fig



def _loss_range(losses: np.ndarray) -> float:
    """Upper end of the loss axis for the per-epoch heatmap.

    The median over epochs of each epoch's 99.5th percentile: one diverged epoch
    with enormous losses must not squash every other epoch into the first bin.
    """
    q = [np.quantile(row[np.isfinite(row)], 0.995) for row in losses if np.isfinite(row).any()]
    hi = float(np.median(q)) if q else 1.0
    return hi if np.isfinite(hi) and hi > 0 else 1.0


def _value_range(values: np.ndarray, nonnegative: bool) -> tuple[float, float]:
    """``(lo, hi)`` of the per-epoch heatmap's value axis.

    Losses: from 0 to :func:`_loss_range`. Signed scores (log losses, minus
    AUM), which do not blow up the way single losses can: the 0.5th to 99.5th
    percentile of all epochs' values together.
    """
    if nonnegative:
        return 0.0, _loss_range(values)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    lo, hi = (float(q) for q in np.quantile(finite, [0.005, 0.995]))
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def _plain_losses_caption(run: RunFiles) -> str | None:
    # An AUM run without margins.npy: the heatmap falls back to plain losses.
    if run.suspicion == "aum" and run.margins is None:
        return ("How the per-sample loss distribution drifted: each column is one epoch "
                "(darker = more samples). This run flagged by the AUM, but margins.npy is "
                "missing, so this shows plain losses, without the AUM mixture.")
    return None


@register(
    "loss_evolution",
    needs=("losses|margins",),
    shows_score=True,
    caption_for=_plain_losses_caption,
    caption="How the per-sample loss distribution drifted: each column is one epoch "
            "(darker = more samples). The clean population sinks towards zero; the "
            "mislabelled one stays high until the network starts memorising it.",
    suspicion_captions={
        "aum": "How each sample's suspicion score (minus the AUM over epochs 1..t) "
               "drifted: each column is one epoch t (darker = more samples), with "
               "the per-epoch mixture drawn over it. Samples above the dashed line "
               "at 0 (AUM < 0: on average the model preferred another class to "
               "the given one) are the ones flagged.",
        "logloss": "How the suspicion score (the log of the loss) drifted: each column "
                   "is one epoch (darker = more samples), with the per-epoch mixture "
                   "and threshold l_c drawn over it.",
    },
)
def fig_loss_evolution(run: RunFiles) -> MplFigure | None:
    """Heatmap of the per-sample suspicion score (the loss for the default suspicion)
    after every epoch (paper fig 6A), with the per-epoch mixture drawn over it."""
    from matplotlib.colors import PowerNorm

    hist = suspicion_history(run)
    if hist is None:
        return None
    values = np.where(np.isfinite(hist.values), hist.values, np.nan)
    aum = hist.in_score_units and run.suspicion == "aum"
    nonnegative = not hist.in_score_units or run.suspicion == "loss"
    lo, hi = _value_range(values, nonnegative)
    m, x = run.metrics, epochs_of(run)
    if not nonnegative:  # keep the mixture's means and, for AUM, the cut at 0 in view
        means = [c.to_numpy(dtype=float)
                 for c in (metric_column(m, "m_c"), metric_column(m, "m_w")) if c is not None]
        means = np.concatenate(means + [np.zeros(1) if aum else np.zeros(0)])
        means = means[np.isfinite(means)]
        if len(means):
            lo, hi = min(lo, float(means.min())), max(hi, float(means.max()))
        pad = 0.03 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    bins = np.linspace(lo, hi, 61)
    epochs = np.arange(1, values.shape[0] + 1)
    grid = np.zeros((len(bins) - 1, len(epochs)))
    for j, row in enumerate(values):
        row = row[np.isfinite(row)]
        # Values beyond the axis land in the end bins so every column still sums to 1.
        counts, _ = np.histogram(np.clip(row, lo, hi), bins=bins)
        grid[:, j] = counts / max(1, len(row))
    fig, (ax,) = new_figure(1, height=3.8)
    fig.set_size_inches(11.2, 3.8)
    image = ax.imshow(
        grid, origin="lower", aspect="auto", cmap="magma_r", norm=PowerNorm(0.4),
        extent=(0.5, len(epochs) + 0.5, lo, hi), interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label="fraction of samples", pad=0.01)
    if hist.in_score_units:
        names = (("m_c", "m_c", "#2e86c1", "-"), ("m_w", "m_w", "#17a589", "-"))
        names += ((("threshold", "mixture crossing", "#1e8449", ":"),) if aum else
                  (("threshold", "threshold l_c", "#1e8449", "--"),))
        for name, label, colour, style in names:
            col = metric_column(m, name)
            if col is not None:
                ax.plot(x, col, color=colour, ls=style, lw=1.4, marker="o", ms=2.5, label=label)
        if aum:
            ax.axhline(0.0, color="k", ls="--", lw=1.2, label="flag rule: AUM < 0 (score > 0)")
    decorate(ax, run, phase_spans(run), shade=False)
    ax.grid(False)
    ax.set_xlim(0.5, len(epochs) + 0.5)
    ax.set_ylim(lo, hi)
    ax.set_ylabel(wrap(run.quantity_at("t", short=True) if hist.in_score_units
                        else hist.label))
    clipped = (f"values above {hi:.3g} are counted in the top bin" if nonnegative else
               f"values outside {lo:.3g} to {hi:.3g} are counted in the end bins")
    ax.set_title(f"Distribution of the {hist.label} after every epoch\n({clipped})",
                 fontsize=10)
    legend(ax, loc="upper right")
    return fig


def _normal_pdf(x: np.ndarray, m: float, s: float) -> np.ndarray:
    s = max(float(s), 1e-9)
    return np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))


def _linear_ylim(density: np.ndarray, bins: np.ndarray, threshold: float) -> float:
    """Top of the linear density axis.

    A clean population squeezed near zero loss can be a hundred times taller than
    the mislabelled one; then the clean peak is cut off at 8x the tallest bar
    above the threshold so the mislabelled population stays visible (the log
    panel shows both in full).
    """
    top = float(density.max()) * 1.15
    if np.isfinite(threshold):
        above = density[bins[:-1] >= threshold]
        if len(above) and above.max() > 0:
            top = min(top, 8 * float(above.max()))
    return top


@register(
    "loss_histogram",
    shows_score=True,
    caption="Per-sample losses at t_c with the fitted two-Gaussian mixture (paper fig. "
            "6B). Samples above the threshold l_c are flagged.",
    suspicion_captions={
        "aum": "Each sample's suspicion score at t_c, minus its area under the "
               "margin over epochs 1..t_c, with the two-Gaussian mixture fitted to "
               "it. Samples with a score above 0 (AUM < 0) are flagged once a "
               "second population has been found; the mixture's own crossing point "
               "(dotted) is drawn for reference only.",
        "logloss": "Each sample's suspicion score at t_c (the log of its loss) with the "
                   "two-Gaussian mixture fitted to it. Samples above the threshold l_c "
                   "are flagged.",
    },
)
def fig_loss_histogram(run: RunFiles) -> MplFigure | None:
    """Histogram of the suspicion scores at t_c (the losses for the default
    suspicion) with the fitted mixture and the flagging cut (paper fig 6B)."""
    h = histogram_data(run)
    if h is None:
        return None
    aum = run.suspicion == "aum"
    m_c, s_c, m_w, s_w, r = (h.mixture[k] for k in ("m_c", "s_c", "m_w", "s_w", "r"))
    lo, hi, density = h.lo, h.hi, h.density
    grid = np.linspace(lo, hi, 400)
    fig, axes = new_figure(2, height=3.6)
    for ax, log in zip(axes, (False, True), strict=True):
        # One filled step polygon: far cheaper to draw than 80 bar patches.
        ax.stairs(density, h.bins, fill=True, color="#aab7c4", label=f"at t_c = {run.t_c}")
        if np.isfinite(m_c + s_c + m_w + s_w + r):
            pc, pw = (1 - r) * _normal_pdf(grid, m_c, s_c), r * _normal_pdf(grid, m_w, s_w)
            ax.plot(grid, pc, color="#2471a3", lw=1.5, label=f"clean: N({m_c:.3g}, {s_c:.3g}²)")
            ax.plot(grid, pw, color="#c0392b", lw=1.5,
                    label=f"mislabelled: N({m_w:.3g}, {s_w:.3g}²), r={r:.3f}")
            ax.plot(grid, pc + pw, color="k", lw=0.8, ls=":", label="mixture")
        if aum:
            ax.axvline(0.0, color="k" if h.noisy else "#888", ls="--", lw=1.2,
                       label="flag rule: AUM < 0 (score > 0)")
            if np.isfinite(h.threshold) and lo <= h.threshold <= hi:
                ax.axvline(h.threshold, color="#7f8c8d", ls=":", lw=1.2,
                           label=f"mixture crossing {h.threshold:.3g} (not used to flag)")
        elif np.isfinite(h.cut):
            fixed = run.suspicion_spec is not None and run.suspicion_spec.fixed_cut is not None
            ax.axvline(h.cut, color="k" if h.noisy else "#888", ls="--", lw=1.2,
                       label=f"flag rule: score > {h.cut:.3g}" if fixed
                       else f"threshold l_c = {h.cut:.3g}")
        if h.noisy and np.isfinite(h.cut) and h.cut < hi:
            ax.axvspan(max(h.cut, lo), hi, color="#f5b7b1", alpha=0.25, lw=0, label="flagged")
        ax.set_xlim(lo, hi)
        ax.set_xlabel(wrap(run.quantity))
        ax.set_ylabel("density" + (" (log)" if log else ""))
        ax.grid(alpha=0.3, lw=0.5)
        if log:
            positive = density[density > 0]
            ax.set_yscale("log")
            if len(positive):
                ax.set_ylim(positive.min() / 2, positive.max() * 3)
        elif density.max() > 0:
            ax.set_ylim(0, _linear_ylim(density, h.bins, h.cut))
    noun = "Losses" if run.suspicion == "loss" and run.window == 1 else "Suspicion scores"
    axes[0].set_title(f"{noun} at t_c with the fitted mixture")
    if density.max() > axes[0].get_ylim()[1]:
        axes[0].set_title(f"{noun} at t_c with the fitted mixture (clean peak cut off)")
    note = "" if h.noisy else " — no second population: nothing flagged"
    axes[1].set_title("Same, log density" + note)
    legend(axes[0], loc="upper right" if run.suspicion == "loss" else "best", fontsize=7.5)
    hidden = [f"{n} sample{'s' if n > 1 else ''} {side} {edge:.3g}"
              for n, side, edge in ((h.below, "below", lo), (h.above, "above", hi)) if n]
    if hidden:
        axes[1].text(0.99, 0.02, ", ".join(hidden) + " not shown",
                     transform=axes[1].transAxes, ha="right", fontsize=8, color="#555")
    return fig


#: The order-parameter columns (``metrics.csv``) drawn, per panel.
ORDER_PARAMETER_GROUPS = (
    ("Gradient magnitudes", ("A", "A_0", "A_0c", "A_0w", "A_0c_true", "A_0w_true")),
    ("Alignment", ("R", "R_cw", "R_cw_true")),
)


@register(
    "order_parameters",
    needs=("|".join(c for _, cols in ORDER_PARAMETER_GROUPS for c in cols),),
    caption="Order parameters of the minibatch gradients at the probed epochs "
            "(paper eqs 5-15).",
)
def fig_order_parameters(run: RunFiles) -> MplFigure | None:
    """The gradient order parameters (paper eqs 5-15) at the probed epochs, when present."""
    m, x = run.metrics, epochs_of(run)
    present = [(t, [c for c in cols if metric_column(m, c) is not None])
               for t, cols in ORDER_PARAMETER_GROUPS]
    present = [(t, cols) for t, cols in present if cols]
    if not present:
        return None
    fig, axes = new_figure(len(present))
    spans = phase_spans(run)
    for ax, (title, cols) in zip(axes, present, strict=True):
        for c in cols:
            plot_line(ax, x, metric_column(m, c), c, ls=":" if c.endswith("_true") else "-")
        values = np.concatenate([metric_column(m, c).dropna().to_numpy(dtype=float) for c in cols])
        if title == "Gradient magnitudes" and len(values) and (values > 0).all():
            ax.set_yscale("log")
        ax.set_title(title)
        decorate(ax, run, spans)
        legend(ax, loc="best")
    return fig


@register(
    "truth",
    needs=("true_precision|true_recall|true_f1",),
    caption="Using the trusted noise marks given for research: how good the flags would have "
            "been at each epoch.",
)
def fig_truth(run: RunFiles) -> MplFigure | None:
    """Precision / recall / F1 of the would-be flags per epoch, against a trusted noise mask."""
    m, x = run.metrics, epochs_of(run)
    cols = [c for c in ("true_precision", "true_recall", "true_f1")
            if metric_column(m, c) is not None]
    if not cols:
        return None
    fig, (ax,) = new_figure(1, height=3.2)
    fig.set_size_inches(7.5, 3.2)
    for c in cols:
        plot_line(ax, x, metric_column(m, c), c.replace("true_", ""))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Flags at each epoch against the known wrong labels")
    decorate(ax, run, phase_spans(run))
    legend(ax, loc="best")
    return fig
