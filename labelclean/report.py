"""``report.html``: one self-contained page that explains a run, built from its files.

:func:`write_report` reads only what a run folder holds (``run.json``,
``metrics.csv``, ``scores.csv``, ``losses.npy``, ``margins.npy``, ``unreadable.csv``,
``checkpoint/model.json``) plus, read-only, the original images for thumbnails,
so ``labelclean report RUN_DIR`` can rebuild it at any time. It writes

* ``figures/*.png``: the matplotlib figures (Agg backend), and
* ``report.html``: summary, the figures (embedded again as base64 PNG), a paged
  gallery of the flagged samples and a per-class table.

The page needs nothing but a browser: no network, no external CSS or JS. The
gallery's data (one small base64 PNG thumbnail per flagged image) sits in one
JSON array; the script renders one page of it at a time, so the DOM stays small
even with tens of thousands of flagged samples. Everything user-supplied
(paths, class names) is escaped, and the script builds the gallery with
``textContent``, never ``innerHTML``.

For the browser test the script leaves markers on ``<body>``:
``data-js-errors`` (uncaught errors so far), ``data-gallery-items`` (items on
the page now), ``data-gallery-total`` (items passing the filters) and
``data-gallery-ready``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_write, write_text
from .decision import LOG_EPS
from .errors import LabelcleanError
from .rundir import check_scores, update_manifest

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
#: Every flagged sample is in the gallery; at most this many get a thumbnail.
MAX_THUMBNAILS = 50_000
#: Thumbnails stop after this many seconds (the rest of the gallery has none).
THUMBNAIL_SECONDS = 60.0
THUMBNAIL_CHUNK = 256
#: Colour thumbnails are quantised to this many colours: PNG of photos stays small.
THUMB_COLOURS = 128
PHASE_COLOURS = {"I": "#dbe9f6", "II": "#d5efcf", "III": "#fde3c8", "IV": "#f3d3d3"}
OTHER_PHASE_COLOURS = ("#e8e0f0", "#e0f0ee", "#f0ecd8")
#: Per-class confusion among flagged samples is drawn as a matrix up to this many classes.
MAX_MATRIX_CLASSES = 25
MAX_UNREADABLE_ROWS = 200
FIGURE_NAMES = (
    "accuracy", "separation", "loss_evolution", "loss_histogram", "order_parameters", "truth",
)


@dataclass
class RunFiles:
    """What a run folder holds, as read by :func:`load_run`.

    ``scores`` is one row per training sample (string columns kept as text, so a
    class named ``"01"`` stays ``"01"``); ``losses`` and ``margins`` are
    ``(epochs, N)`` or ``None`` when ``losses.npy`` / ``margins.npy`` is
    missing; ``unreadable`` is empty when the run skipped nothing.
    """

    root: Path
    run: dict
    metrics: pd.DataFrame
    scores: pd.DataFrame
    losses: np.ndarray | None
    unreadable: pd.DataFrame
    model: dict
    margins: np.ndarray | None = None

    @property
    def t_c(self) -> int:
        return int(self.run["t_c"])

    @property
    def window(self) -> int:
        """Epochs each sample's loss suspicion averages its loss over (1: the paper's loss)."""
        try:
            return max(1, int(self.run.get("params", {}).get("window") or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def suspicion(self) -> str:
        """The per-sample suspicion score the mixture was fitted to and the flags read
        (``params["suspicion"]``): ``"loss"``, ``"logloss"`` or ``"aum"``; ``"loss"``
        for runs made before the choice existed."""
        return str(self.run.get("params", {}).get("suspicion") or "loss").lower()

    @property
    def windowed(self) -> bool:
        """Whether the suspicion averages the loss over more than one epoch."""
        return self.suspicion in ("loss", "logloss") and self.window > 1

    @property
    def quantity(self) -> str:
        """What the mixture at t_c was fitted to, for axis labels."""
        return self.quantity_at("t_c")

    def quantity_at(self, epoch: str, short: bool = False) -> str:
        """What the mixture at epoch ``epoch`` (``"t_c"``, or ``"t"`` for figures
        over epochs) was fitted to, in words; ``short`` for a narrow axis."""
        kind, w = self.suspicion, self.window
        if kind == "aum":
            if short:
                return f"suspicion score (−AUM over epochs 1..{epoch})"
            return f"suspicion score (minus the area under the margin over epochs 1..{epoch})"
        if kind == "logloss":
            what = "the per-sample loss" if w == 1 else f"the loss averaged over {w} epochs"
            if short:
                what = "loss" if w == 1 else f"loss over {w} epochs"
            return f"suspicion score (log of {what})"
        if kind == "loss":
            if w == 1:
                return "per-sample loss"
            return f"suspicion score (loss averaged over {w} epochs)"
        return f"suspicion score ({kind})"

    @property
    def flag_cut(self) -> float:
        """Where the flags were cut, in the score's units: 0 for AUM (flagged when
        AUM < 0, i.e. score > 0), else the mixture's threshold ``l_c`` at t_c
        (NaN when run.json has none). Nothing is flagged, whatever the cut, when
        the run found no second population."""
        if self.suspicion == "aum":
            return 0.0
        mix = self.run.get("mixture_at_t_c") or {}
        try:
            return float(mix.get("threshold", np.nan))
        except (TypeError, ValueError):
            return float("nan")

    @property
    def flag_rule(self) -> str:
        """The flagging rule, in words."""
        if self.suspicion == "aum":
            return "flagged where AUM < 0, i.e. score > 0"
        return "flagged where the score is above the mixture's threshold l_c"

    @property
    def classes(self) -> list[str]:
        classes = self.model.get("classes") or self.run.get("input", {}).get("classes") or []
        return [str(c) for c in classes]

    @property
    def flagged(self) -> pd.DataFrame:
        """Flagged samples, most suspicious first."""
        f = self.scores[self.scores["flagged"]]
        return f.sort_values("rank", kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- entry point


def write_report(run_dir: str | os.PathLike) -> Path:
    """Build ``run_dir/report.html`` and ``run_dir/figures/*.png`` from the run's files.

    Parameters
    ----------
    run_dir:
        A folder written by :func:`labelclean.export.export_result`.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    LabelcleanError
        When ``run_dir`` is not a labelclean run (``run.json`` or ``scores.csv``
        missing or unreadable).
    """
    run = load_run(run_dir)
    figures = write_figures(run, run.root / FIGURES_DIR)
    gallery = gallery_data(run)
    page = render_html(run, figures, gallery)
    path = write_text(run.root / REPORT_FILE, page)
    # labelclean wrote these: keep the run's manifest current (rundir.update_manifest)
    update_manifest(run.root, [REPORT_FILE, *(f"{FIGURES_DIR}/{n}.png" for n in FIGURE_NAMES)])
    return path


def load_run(run_dir: str | os.PathLike) -> RunFiles:
    """Read the files of a run folder (see :class:`RunFiles`)."""
    root = Path(run_dir).resolve()
    run_file = root / "run.json"
    if not run_file.is_file():
        raise LabelcleanError(f"{root} is not a labelclean run: run.json is missing")
    try:
        run = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LabelcleanError(f"cannot read {run_file}: {e}") from None
    scores_file = root / "scores.csv"
    if not scores_file.is_file():
        raise LabelcleanError(f"{root} is not a complete labelclean run: scores.csv is missing")
    text_columns = {c: str for c in (
        "sample_id", "given_label", "predicted_label", "suggested_label")}
    scores = pd.read_csv(scores_file, dtype=text_columns, keep_default_na=False)
    scores["flagged"] = scores["flagged"].astype(str).str.lower().isin(["true", "1"])
    check_scores(root, run, scores)  # a truncated or edited scores.csv is refused
    metrics_file = root / "metrics.csv"
    metrics = pd.read_csv(metrics_file) if metrics_file.is_file() else pd.DataFrame()
    losses = _read_losses(root / "losses.npy", len(scores))
    margins = _read_losses(root / "margins.npy", len(scores))
    unreadable_file = root / "unreadable.csv"
    unreadable = (
        pd.read_csv(unreadable_file, dtype=str, keep_default_na=False)
        if unreadable_file.is_file()
        else pd.DataFrame({"path": [], "reason": []})
    )
    model_file = root / "checkpoint" / "model.json"
    model = json.loads(model_file.read_text(encoding="utf-8")) if model_file.is_file() else {}
    return RunFiles(root, run, metrics, scores, losses, unreadable, model, margins)


def _read_losses(path: Path, n: int) -> np.ndarray | None:
    # Memory-mapped: only the rows the figures touch are read from disk.
    if not path.is_file():
        return None
    losses = np.load(path, mmap_mode="r")
    if losses.ndim != 2 or losses.shape[1] != n:
        return None
    return losses


# ----------------------------------------------------------------------------- figures


def write_figures(run: RunFiles, folder: Path) -> dict[str, bytes | str]:
    """Draw every figure that the run's data allows; write each as ``folder/<name>.png``.

    Returns ``{name: png_bytes}`` for the figures drawn, in display order; a
    figure that failed to draw maps to the error text instead (the report shows
    it rather than losing the whole page). Stale PNGs of figures not drawn this
    time are removed.
    """
    makers: dict[str, Callable[[RunFiles], object | None]] = {
        "accuracy": fig_accuracy,
        "separation": fig_separation,
        "loss_evolution": fig_loss_evolution,
        "loss_histogram": fig_loss_histogram,
        "order_parameters": fig_order_parameters,
        "truth": fig_truth,
    }
    out: dict[str, bytes | str] = {}
    for name, make in makers.items():
        try:
            fig = make(run)
        except Exception as e:  # noqa: BLE001 - one odd column must not cost the report
            warnings.warn(f"report figure {name} failed: {e!r}", stacklevel=2)
            out[name] = f"{type(e).__name__}: {e}"
            continue
        if fig is None:
            continue
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        png = buf.getvalue()
        atomic_write(folder / f"{name}.png", lambda tmp, png=png: Path(tmp).write_bytes(png))
        out[name] = png
    for name in FIGURE_NAMES:
        if name not in out or isinstance(out[name], str):
            (folder / f"{name}.png").unlink(missing_ok=True)
    return out


def _column(metrics: pd.DataFrame, name: str) -> pd.Series | None:
    """A numeric metrics column with at least one finite value, else None."""
    if name not in metrics.columns:
        return None
    col = pd.to_numeric(metrics[name], errors="coerce")
    return col if np.isfinite(col.to_numpy(dtype=float)).any() else None


def _epochs(run: RunFiles) -> np.ndarray:
    if "epoch" in run.metrics.columns:
        return run.metrics["epoch"].to_numpy()
    return np.arange(1, len(run.metrics) + 1)


def phase_spans(run: RunFiles) -> list[tuple[str, int, int]]:
    """Contiguous ``(phase, first_epoch, last_epoch)`` runs, from ``metrics.phase``
    when present, else from ``run.json`` ``phase_boundaries``; empty when neither."""
    m = run.metrics
    if "phase" in m.columns and m["phase"].notna().any():
        spans: list[tuple[str, int, int]] = []
        for epoch, phase in zip(_epochs(run), m["phase"], strict=True):
            if not isinstance(phase, str) or not phase.strip():
                continue
            if spans and spans[-1][0] == phase and spans[-1][2] == epoch - 1:
                spans[-1] = (phase, spans[-1][1], int(epoch))
            else:
                spans.append((phase, int(epoch), int(epoch)))
        return spans
    bounds = run.run.get("phase_boundaries") or {}
    return [(str(k), int(v[0]), int(v[1])) for k, v in bounds.items() if v and len(v) == 2]


def _decorate(ax, run: RunFiles, spans: list[tuple[str, int, int]], shade: bool = True) -> None:
    """Shade the phases (or, over a heatmap, only mark their edges), mark t_c, integer epochs."""
    from matplotlib.ticker import MaxNLocator

    others = iter(OTHER_PHASE_COLOURS * 10)
    for phase, a, b in spans:
        colour = PHASE_COLOURS.get(phase) or next(others)
        if shade:
            ax.axvspan(a - 0.5, b + 0.5, color=colour, alpha=0.8, lw=0, zorder=0)
        elif a > spans[0][1]:
            ax.axvline(a - 0.5, color="#777", lw=0.8, ls=":")
        ax.text((a + b) / 2, 0.98, phase, transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=8, color="#555")
    ax.axvline(run.t_c, color="#c0392b", ls="--", lw=1.2, zorder=3)
    ax.text(run.t_c, 0.02, " t_c", transform=ax.get_xaxis_transform(), color="#c0392b",
            fontsize=8, ha="left", va="bottom", zorder=4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3, lw=0.5)


def _plot_line(ax, x, y: pd.Series | None, label: str, **kw) -> bool:
    if y is None:
        return False
    ok = np.isfinite(y.to_numpy(dtype=float))
    ax.plot(np.asarray(x)[ok], y.to_numpy(dtype=float)[ok], marker="o", ms=3, label=label, **kw)
    return True


def _legend(ax, loc: str, fontsize: float = 8) -> None:
    """A legend, only when something on ``ax`` carries a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, loc=loc)


def _figure(ncols: int, height: float = 3.4):
    # A bare Figure on an Agg canvas, not pyplot: no global backend switch in the
    # caller's process (a notebook keeps its inline plots), nothing to close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6 * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def fig_accuracy(run: RunFiles):
    """Accuracy (training running average, eval pass, validation) and loss over epochs."""
    m, x = run.metrics, _epochs(run)
    acc = [(c, lbl) for c, lbl in (
        ("train_accuracy", "train (during the epoch)"),
        ("eval_accuracy", "train (eval pass, given labels)"),
        ("val_accuracy", "validation"),
    ) if _column(m, c) is not None]
    loss = [(c, lbl) for c, lbl in (
        ("train_loss", "train (during the epoch)"), ("eval_loss", "train (eval pass)"),
    ) if _column(m, c) is not None]
    panels = [(t, y, cols) for t, y, cols in (
        ("Accuracy", "accuracy", acc), ("Loss", "mean cross-entropy", loss)) if cols]
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    spans = phase_spans(run)
    for ax, (title, ylabel, cols) in zip(axes, panels, strict=True):
        for c, lbl in cols:
            _plot_line(ax, x, _column(m, c), lbl)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if title == "Loss" and all((_column(m, c) > 0).all() for c, _ in cols):
            ax.set_yscale("log")
        _decorate(ax, run, spans)
        _legend(ax, loc="best")
    return fig


def fig_separation(run: RunFiles):
    """The two suspicion-score populations' means +- sd, the threshold (and, for AUM,
    the flag rule's cut at 0), and delta_L, over epochs."""
    m, x = run.metrics, _epochs(run)
    m_c, m_w = _column(m, "m_c"), _column(m, "m_w")
    if m_c is None or m_w is None:
        return None
    aum = run.suspicion == "aum"
    fig, (a1, a2) = _figure(2)
    spans = phase_spans(run)
    s_c, s_w = _column(m, "s_c"), _column(m, "s_w")
    for mean, sd, colour, name in (
        (m_c, s_c, "#2471a3", "clean: m_c ± s_c"),
        (m_w, s_w, "#c0392b", "mislabelled: m_w ± s_w"),
    ):
        a1.plot(x, mean, color=colour, marker="o", ms=3, label=name)
        if sd is not None:
            a1.fill_between(x, mean - sd, mean + sd, color=colour, alpha=0.18, lw=0)
    if aum:
        _plot_line(a1, x, _column(m, "threshold"), "mixture crossing (not the flag rule)",
                   color="#777", ls=":", lw=1)
        a1.axhline(0.0, color="k", ls="--", lw=1, label="flag rule: AUM < 0 (score > 0)")
    else:
        _plot_line(a1, x, _column(m, "threshold"), "threshold l_c", color="k", ls="--", lw=1)
    if run.suspicion == "loss" and run.window == 1:
        # L_c, L_w are mean raw losses: comparable to m_c, m_w only then.
        _plot_line(a1, x, _column(m, "L_c_true"), "L_c (true split)", color="#2471a3", ls=":")
        _plot_line(a1, x, _column(m, "L_w_true"), "L_w (true split)", color="#c0392b", ls=":")
    a1.set_ylabel(_wrap(run.quantity_at("t", short=True)))
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
    dl = _column(m, "delta_L")
    _plot_line(a2, x, dl, "ΔL = m_w − m_c", color="#7d3c98")
    if dl is not None and _column(m, "unstable") is not None:
        bad = m["unstable"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
        if bad.any():
            a2.plot(x[bad], dl.to_numpy()[bad], "x", color="k", ms=7, label="unstable epoch")
    a2.set_ylabel("ΔL" if run.suspicion == "loss" else "ΔL (in the score's units)")
    a2.set_title("Separation ΔL (t_c maximises the detector's score)")
    sep = _column(m, "separation")
    if sep is not None:
        twin = a2.twinx()
        twin.plot(x, sep, color="#999", ls="--", lw=1, label="Ashman's D (right axis)")
        twin.set_ylabel("Ashman's D", color="#777")
        _legend(twin, loc="lower right")
    for ax in (a1, a2):
        _decorate(ax, run, spans)
        _legend(ax, loc="best")
    return fig


def _wrap(label: str) -> str:
    """An axis label over two lines at its parenthesis."""
    return label.replace(" (", "\n(", 1)


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


def _subsample_rows(losses: np.ndarray, limit: int = 20_000) -> np.ndarray:
    # Quantiles and histograms of 20k points look the same as of 1M; reading less is faster.
    if losses.shape[1] <= limit:
        return np.asarray(losses, dtype=np.float64)
    idx = np.linspace(0, losses.shape[1] - 1, limit).astype(int)
    return np.asarray(losses[:, idx], dtype=np.float64)


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
    """Each sample's suspicion score after every epoch, rebuilt from the run's files.

    ``"loss"``: the loss averaged over the run's ``window`` (``losses.npy``);
    ``"logloss"``: its log; ``"aum"``: minus the given-label margin averaged
    over epochs ``1..t`` (``margins.npy``). An AUM run without ``margins.npy``,
    or a suspicion this report does not know, falls back to the per-sample loss
    of each epoch (``in_score_units`` False). None when the files are missing.
    The cleaner leaves epochs it found unstable out of the loss windows; this
    does not, so after such an epoch the windowed values can differ a little.
    """
    kind = run.suspicion
    if kind == "aum" and run.margins is not None and run.margins.shape[0] > 0:
        margins = _subsample_rows(run.margins)
        aum = np.cumsum(margins, axis=0) / np.arange(1, len(margins) + 1)[:, None]
        return ScoreHistory(-aum, run.quantity_at("t"), True)
    if run.losses is None or run.losses.shape[0] == 0:
        return None
    losses = _subsample_rows(run.losses)
    if kind in ("loss", "logloss"):
        values = _windowed(losses, run.window)
        if kind == "logloss":
            values = np.log(values + LOG_EPS)
        return ScoreHistory(values, run.quantity_at("t"), True)
    return ScoreHistory(losses, "per-sample loss", False)


def fig_loss_evolution(run: RunFiles):
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
    m, x = run.metrics, _epochs(run)
    if not nonnegative:  # keep the mixture's means and, for AUM, the cut at 0 in view
        means = [c.to_numpy(dtype=float) for c in (_column(m, "m_c"), _column(m, "m_w"))
                 if c is not None]
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
    fig, (ax,) = _figure(1, height=3.8)
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
            col = _column(m, name)
            if col is not None:
                ax.plot(x, col, color=colour, ls=style, lw=1.4, marker="o", ms=2.5, label=label)
        if aum:
            ax.axhline(0.0, color="k", ls="--", lw=1.2, label="flag rule: AUM < 0 (score > 0)")
    _decorate(ax, run, phase_spans(run), shade=False)
    ax.grid(False)
    ax.set_xlim(0.5, len(epochs) + 0.5)
    ax.set_ylim(lo, hi)
    ax.set_ylabel(_wrap(run.quantity_at("t", short=True) if hist.in_score_units
                        else hist.label))
    clipped = (f"values above {hi:.3g} are counted in the top bin" if nonnegative else
               f"values outside {lo:.3g} to {hi:.3g} are counted in the end bins")
    ax.set_title(f"Distribution of the {hist.label} after every epoch\n({clipped})",
                 fontsize=10)
    _legend(ax, loc="upper right")
    return fig


def _windowed(losses: np.ndarray, window: int) -> np.ndarray:
    """Row ``t`` -> mean of rows ``t - window + 1 .. t`` (fewer at the start), as the
    cleaner averages losses into suspicion scores before fitting the mixture."""
    if window <= 1:
        return losses
    sums = np.cumsum(np.vstack([np.zeros((1, losses.shape[1])), losses]), axis=0)
    t = np.arange(1, losses.shape[0] + 1)
    start = np.maximum(0, t - window)
    return (sums[t] - sums[start]) / (t - start)[:, None]


def scores_at_t_c(run: RunFiles) -> np.ndarray:
    """What the mixture at ``t_c`` was fitted to, per sample, in index order.

    ``scores.csv``'s ``score`` when present (the run's suspicion score: the
    windowed loss, its log, or minus the AUM), else ``losses.npy`` row
    ``t_c - 1`` (the paper's loss at ``t_c``), else ``scores.loss``.
    """
    by_index = run.scores.sort_values("index")
    if "score" in by_index.columns:
        return by_index["score"].to_numpy(dtype=np.float64)
    if run.losses is not None and 1 <= run.t_c <= run.losses.shape[0]:
        return np.asarray(run.losses[run.t_c - 1], dtype=np.float64)
    return by_index["loss"].to_numpy(dtype=np.float64)


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


def _float(d: dict, key: str) -> float:
    try:
        return float(d.get(key, np.nan))
    except (TypeError, ValueError):
        return float("nan")


@dataclass
class Histogram:
    """What :func:`fig_loss_histogram` draws (see :func:`histogram_data`)."""

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
    """The suspicion scores at t_c binned for :func:`fig_loss_histogram`; None when
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
    params = {k: _float(mix, k) for k in ("m_c", "s_c", "m_w", "s_w", "r")}
    threshold, cut = _float(mix, "threshold"), run.flag_cut
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


def fig_loss_histogram(run: RunFiles):
    """Histogram of the suspicion scores at t_c (the losses for the default
    suspicion) with the fitted mixture and the flagging cut (paper fig 6B)."""
    h = histogram_data(run)
    if h is None:
        return None
    aum = run.suspicion == "aum"
    m_c, s_c, m_w, s_w, r = (h.mixture[k] for k in ("m_c", "s_c", "m_w", "s_w", "r"))
    lo, hi, density = h.lo, h.hi, h.density
    grid = np.linspace(lo, hi, 400)
    fig, axes = _figure(2, height=3.6)
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
            ax.axvline(h.cut, color="k" if h.noisy else "#888", ls="--", lw=1.2,
                       label=f"threshold l_c = {h.cut:.3g}")
        if h.noisy and np.isfinite(h.cut) and h.cut < hi:
            ax.axvspan(max(h.cut, lo), hi, color="#f5b7b1", alpha=0.25, lw=0, label="flagged")
        ax.set_xlim(lo, hi)
        ax.set_xlabel(_wrap(run.quantity))
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
    _legend(axes[0], loc="upper right" if run.suspicion == "loss" else "best", fontsize=7.5)
    hidden = [f"{n} sample{'s' if n > 1 else ''} {side} {edge:.3g}"
              for n, side, edge in ((h.below, "below", lo), (h.above, "above", hi)) if n]
    if hidden:
        axes[1].text(0.99, 0.02, ", ".join(hidden) + " not shown",
                     transform=axes[1].transAxes, ha="right", fontsize=8, color="#555")
    return fig


def fig_order_parameters(run: RunFiles):
    """The gradient order parameters (paper eqs 5-15) at the probed epochs, when present."""
    m, x = run.metrics, _epochs(run)
    groups = [
        ("Gradient magnitudes", ["A", "A_0", "A_0c", "A_0w", "A_0c_true", "A_0w_true"]),
        ("Alignment", ["R", "R_cw", "R_cw_true"]),
    ]
    present = [(t, [c for c in cols if _column(m, c) is not None]) for t, cols in groups]
    present = [(t, cols) for t, cols in present if cols]
    if not present:
        return None
    fig, axes = _figure(len(present))
    spans = phase_spans(run)
    for ax, (title, cols) in zip(axes, present, strict=True):
        for c in cols:
            _plot_line(ax, x, _column(m, c), c, ls=":" if c.endswith("_true") else "-")
        values = np.concatenate([_column(m, c).dropna().to_numpy(dtype=float) for c in cols])
        if title == "Gradient magnitudes" and len(values) and (values > 0).all():
            ax.set_yscale("log")
        ax.set_title(title)
        _decorate(ax, run, spans)
        _legend(ax, loc="best")
    return fig


def fig_truth(run: RunFiles):
    """Precision / recall / F1 of the would-be flags per epoch, against a trusted noise mask."""
    m, x = run.metrics, _epochs(run)
    cols = [c for c in ("true_precision", "true_recall", "true_f1") if _column(m, c) is not None]
    if not cols:
        return None
    fig, (ax,) = _figure(1, height=3.2)
    fig.set_size_inches(7.5, 3.2)
    for c in cols:
        _plot_line(ax, x, _column(m, c), c.replace("true_", ""))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Flags at each epoch against the known wrong labels")
    _decorate(ax, run, phase_spans(run))
    _legend(ax, loc="best")
    return fig


# ----------------------------------------------------------------------------- gallery


def image_locator(run: dict) -> Callable[[str], Path | None]:
    """Map a sample id (the ``path`` column) to its original image file.

    ``"folder"`` inputs: ``source/<path>``; ``"paths"`` inputs: the CSV's folder
    joined with the path unless it is absolute. Other inputs have no images.
    """
    inp = run.get("input", {})
    source, origin = Path(inp.get("source", ".")), inp.get("origin")
    if inp.get("kind") != "images":
        return lambda sample_id: None
    if origin == "folder":
        return lambda sample_id: source / sample_id
    if origin in ("paths", "dataframe"):
        base = source.parent if origin == "paths" else source  # a DataFrame's root
        return lambda sample_id: Path(sample_id) if os.path.isabs(sample_id) else base / sample_id
    return lambda sample_id: None


def thumbnail_side(n: int) -> int:
    """Thumbnail side in pixels: smaller as the gallery grows, to bound the page size."""
    return 64 if n <= 2_000 else 48 if n <= 10_000 else 32


def thumbnail(path: Path | None, side: int) -> str | None:
    """A base64 PNG of ``path`` shrunk to fit ``side`` x ``side``; None if unreadable."""
    from PIL import Image

    from .sources import to_l_or_rgb

    if path is None:
        return None
    try:
        with Image.open(path) as im:
            im.draft(None, (side, side))  # JPEG: decode at reduced scale, much faster
            if im.mode in ("P", "1"):
                im = im.convert("RGBA")  # palette images resize poorly (nearest only)
            # Shrink first: the mode conversion then touches side x side pixels, not millions.
            im.thumbnail((side, side), Image.Resampling.BILINEAR)
            im = to_l_or_rgb(im)
            if im.mode == "RGB":
                im = im.quantize(THUMB_COLOURS, method=Image.Quantize.FASTOCTREE)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _file_uri(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.resolve().as_uri()
    except ValueError:
        return None


def gallery_data(run: RunFiles) -> dict:
    """Everything the gallery script needs, as JSON-ready data.

    Returns ``{"kind", "fields", "items", "classes", "thumb_side", "thumbs_omitted"}``;
    each item is a list in ``fields`` order: rank, sample id, given label,
    predicted label, predicted probability, p_noisy, loss, base64 PNG thumbnail
    (or None), link to the original file (or None), the run's suspicion
    ``score`` (None for runs whose scores.csv has none). Items are in rank
    order: most suspicious first.
    """
    flagged = run.flagged
    kind = run.run.get("input", {}).get("kind", "images")
    locate = image_locator(run.run)
    side = thumbnail_side(len(flagged))
    files = [locate(s) for s in flagged["sample_id"]]
    thumbs: list[str | None] = [None] * len(files)
    attempted = 0
    if kind == "images":
        thumbs, attempted = make_thumbnails(files, side)
    has_score = "score" in flagged.columns
    scores = flagged["score"] if has_score else [None] * len(flagged)
    # a row whose model agrees with its label at t_c shows the class it was
    # ranked below on average (its suggested label), not the given label twice
    shown = flagged["suggested_label"] if "suggested_label" in flagged else flagged[
        "predicted_label"]
    items = [
        [int(rank), sid, given, pred, round(float(prob), 4), round(float(p), 4),
         round(float(loss), 4), th, _file_uri(f), None if sc is None else round(float(sc), 4)]
        for rank, sid, given, pred, prob, p, loss, th, f, sc in zip(
            flagged["rank"], flagged["sample_id"], flagged["given_label"],
            shown, flagged["predicted_prob"], flagged["p_noisy"],
            flagged["loss"], thumbs, files, scores, strict=True,
        )
    ]
    return {
        "kind": kind,
        "fields": ["rank", "id", "given", "predicted", "prob", "p_noisy", "loss", "thumb", "href",
                   "score"],
        "has_score": has_score,
        "items": items,
        "classes": run.classes,
        "thumb_side": side,
        "thumbs_omitted": len(files) - attempted if kind == "images" else 0,
    }


def make_thumbnails(
    files: list[Path | None], side: int, limit: int = MAX_THUMBNAILS,
    budget_s: float = THUMBNAIL_SECONDS,
) -> tuple[list[str | None], int]:
    """Thumbnails of ``files`` in order, until ``limit`` files or ``budget_s`` seconds.

    The budget keeps a report of tens of thousands of large photos from
    delaying every export by minutes; the most suspicious samples come first,
    so they are the ones that get thumbnails. Returns the thumbnails (None
    where missing, unreadable or not attempted) and how many files were tried.
    """
    thumbs: list[str | None] = [None] * len(files)
    started = time.perf_counter()
    done = 0
    # PIL releases the GIL while decoding and encoding: threads do help.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        while done < min(limit, len(files)) and time.perf_counter() - started < budget_s:
            chunk = files[done : min(limit, done + THUMBNAIL_CHUNK)]
            thumbs[done : done + len(chunk)] = pool.map(lambda f: thumbnail(f, side), chunk)
            done += len(chunk)
    return thumbs, done


# ----------------------------------------------------------------------------- tables


def class_table(run: RunFiles) -> pd.DataFrame:
    """Per given class: samples, flagged, flagged fraction and the commonest predictions
    among its flagged samples (``"7 (12), 1 (3)"``)."""
    s = run.scores
    classes = run.classes or sorted(s["given_label"].unique())
    samples = s["given_label"].value_counts()
    f = s[s["flagged"]]
    flagged = f["given_label"].value_counts()
    rows = []
    for c in classes:
        preds = f.loc[f["given_label"] == c, "predicted_label"].value_counts().head(3)
        rows.append({
            "class": c,
            "samples": int(samples.get(c, 0)),
            "flagged": int(flagged.get(c, 0)),
            "flagged_pct": 100.0 * flagged.get(c, 0) / max(1, samples.get(c, 0)),
            "flagged_predicted_as": ", ".join(f"{k} ({v})" for k, v in preds.items()),
        })
    return pd.DataFrame(rows)


def flagged_confusion(run: RunFiles) -> pd.DataFrame:
    """Counts of given (rows) -> predicted (columns) label among the flagged samples."""
    classes = run.classes or sorted(run.scores["given_label"].unique())
    f = run.flagged
    table = pd.crosstab(f["given_label"], f["predicted_label"])
    return table.reindex(index=classes, columns=classes, fill_value=0).fillna(0).astype(int)


# ----------------------------------------------------------------------------- HTML


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _num(x: float | int, digits: int = 4) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def _row(label: str, shown: str, key: str | None = None, value: object = None) -> str:
    """A summary table row; ``data-key``/``data-value`` carry the raw value for tests."""
    attrs = ""
    if key is not None:
        attrs = f' data-key="{_e(key)}" data-value="{_e(value)}"'
    return f"<tr><th>{_e(label)}</th><td{attrs}>{shown}</td></tr>"


def summary_html(run: RunFiles) -> str:
    """The summary table: counts, noise rate, t_c, phases, model, time, unreadable."""
    r = run.run
    inp = r.get("input", {})
    mix = r.get("mixture_at_t_c") or {}
    timing = r.get("timing", {})
    params = r.get("params", {})
    n, flagged = int(r.get("samples", len(run.scores))), int(r.get("flagged", 0))
    rate = float(r.get("estimated_noise_rate", flagged / max(1, n)))
    epochs = timing.get("epochs_trained", len(run.metrics))
    verdict = r.get("verdict") or {}
    rows = [
        *([_row("verdict", _e(verdict.get("text", "")), "verdict", verdict.get("status"))]
          if verdict else []),
        _row("input", f"{_e(inp.get('source', '?'))} <span class=muted>({_e(inp.get('origin'))}, "
             f"{_e(inp.get('kind'))}, {len(run.classes)} classes)</span>"),
        _row("samples", _num(n), "samples", n),
        _row("flagged", f"{_num(flagged)} <span class=muted>(kept {_num(n - flagged)})</span>",
             "flagged", flagged),
        _row("estimated noise rate", f"{100 * rate:.2f}%", "estimated_noise_rate", rate),
    ]
    rows.append(_row("suspicion score", f"{_e(run.quantity)} <span class=muted>"
                     f"({_e(run.flag_rule)})</span>", "suspicion", run.suspicion))
    if not r.get("second_population_found", True) and flagged == 0:
        what = "losses" if run.suspicion == "loss" else "suspicion scores"
        rows.append(_row("second population", f"not found: the {what} look like one "
                         "population, so nothing was flagged"))
    threshold = _num(_float(mix, "threshold"))
    cut = (f"flag rule AUM &lt; 0, not the mixture's crossing {threshold}"
           if run.suspicion == "aum" else f"threshold l_c {threshold}")
    rows.append(_row(
        "t_c", f"epoch {run.t_c} of {_e(epochs)} trained "
        f"<span class=muted>(ΔL {_num(_float(mix, 'delta_L'))}, mixture weight r "
        f"{_num(_float(mix, 'r'), 3)}, {cut})</span>", "t_c", run.t_c,
    ))
    if r.get("stop_reason"):
        rows.append(_row("stopped", _e(r["stop_reason"])))
    spans = r.get("phase_boundaries") or {}
    if spans:
        text = ", ".join(f"{_e(k)}: epochs {v[0]}–{v[1]}" for k, v in spans.items())
        in_ii = r.get("t_c_in_phase_II")
        if in_ii is not None:
            text += f" <span class=muted>(t_c {'in' if in_ii else 'not in'} phase II)</span>"
        rows.append(_row("phases", text, "phase_boundaries", json.dumps(spans)))
    if "val_accuracy_at_t_c" in r:
        rows.append(_row("validation accuracy at t_c", f"{r['val_accuracy_at_t_c']:.4f}",
                         "val_accuracy_at_t_c", r["val_accuracy_at_t_c"]))
    truth = r.get("against_truth")
    if truth:
        rows.append(_row(
            "against the known noise",
            f"precision {truth['precision']:.3f}, recall {truth['recall']:.3f}, "
            f"F1 {truth['f1']:.3f} <span class=muted>(true noise rate "
            f"{100 * truth['true_noise_rate']:.1f}%)</span>",
        ))
    model = params.get("model") or run.model.get("model", "?")
    extra = ", pretrained" if params.get("pretrained") else ""
    rows.append(_row("model", f"{_e(model)}{_e(extra)} <span class=muted>on "
                     f"{_e(params.get('device', '?'))}, input "
                     f"{_e('×'.join(map(str, inp.get('input_shape', []))))}</span>",
                     "model", model))
    total = timing.get("total_seconds")
    if total is not None:
        train, observe = timing.get("train_seconds", 0.0), timing.get("observe_seconds", 0.0)
        shown = (f"{total:.1f} s <span class=muted>(training {train:.1f} s, "
                 f"observing {observe:.1f} s)</span>")
        rows.append(_row("time taken", shown, "total_seconds", total))
    n_bad = len(run.unreadable) or int(inp.get("unreadable", 0))
    if n_bad:
        rows.append(_row("unreadable images", f'{_num(n_bad)} left out '
                         '<a href="#unreadable">(list)</a>', "unreadable", n_bad))
    return "<table class=summary>" + "".join(rows) + "</table>"


def settings_html(run: RunFiles) -> str:
    """All parameters and library versions, folded away."""
    def kv(d: dict) -> str:
        return "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.items())

    return (
        "<details><summary>All settings and versions</summary><div class=cols>"
        f"<table class=kv>{kv(run.run.get('params', {}))}</table>"
        f"<table class=kv>{kv(run.run.get('environment', {}))}</table></div></details>"
    )


FIGURE_TEXT = {
    "accuracy": "Accuracy and loss on the training set (given labels) and, when a validation "
                "set was given, on it. Shaded bands are the learning phases; the dashed line is "
                "t_c.",
    "separation": "The two loss populations fitted every epoch. The paper's cleaning time t_c is "
                  "where they are furthest apart (ΔL = m_w − m_c largest; phase II).",
    "loss_evolution": "How the per-sample loss distribution drifted: each column is one epoch "
                      "(darker = more samples). The clean population sinks towards zero; the "
                      "mislabelled one stays high until the network starts memorising it.",
    "loss_histogram": "Per-sample losses at t_c with the fitted two-Gaussian mixture (paper fig. "
                      "6B). Samples above the threshold l_c are flagged.",
    "order_parameters": "Order parameters of the minibatch gradients at the probed epochs "
                        "(paper eqs 5-15).",
    "truth": "Using the trusted noise marks given for research: how good the flags would have "
             "been at each epoch.",
}

#: Captions of the figures whose values are the suspicion score, for the
#: suspicions other than ``"loss"``.
SUSPICION_TEXT = {
    "aum": {
        "separation": "The two populations of the suspicion score fitted every epoch t: each "
                      "sample's score is minus its area under the margin (AUM, its given-label "
                      "logit minus the largest other logit, averaged over epochs 1..t), so "
                      "m_c, m_w and the mixture's crossing are in margin units (negated). "
                      "t_c is where the populations are furthest apart. Samples are flagged "
                      "where AUM < 0 (score above the dashed line at 0), not at the mixture's "
                      "crossing.",
        "loss_evolution": "How each sample's suspicion score (minus the AUM over epochs 1..t) "
                          "drifted: each column is one epoch t (darker = more samples), with "
                          "the per-epoch mixture drawn over it. Samples above the dashed line "
                          "at 0 (AUM < 0: on average the model preferred another class to "
                          "the given one) are the ones flagged.",
        "loss_histogram": "Each sample's suspicion score at t_c, minus its area under the "
                          "margin over epochs 1..t_c, with the two-Gaussian mixture fitted to "
                          "it. Samples with a score above 0 (AUM < 0) are flagged once a "
                          "second population has been found; the mixture's own crossing point "
                          "(dotted) is drawn for reference only.",
    },
    "logloss": {
        "separation": "The two populations of the suspicion score (the log of the loss) fitted "
                      "every epoch; m_c, m_w and the threshold l_c are in log-loss units. t_c "
                      "is where they are furthest apart (ΔL = m_w − m_c largest; phase II).",
        "loss_evolution": "How the suspicion score (the log of the loss) drifted: each column "
                          "is one epoch (darker = more samples), with the per-epoch mixture "
                          "and threshold l_c drawn over it.",
        "loss_histogram": "Each sample's suspicion score at t_c (the log of its loss) with the "
                          "two-Gaussian mixture fitted to it. Samples above the threshold l_c "
                          "are flagged.",
    },
}

#: Figures whose values are the run's suspicion score (not plain losses).
WINDOWED_FIGURES = ("separation", "loss_evolution", "loss_histogram")


def figure_caption(name: str, run: RunFiles) -> str:
    """The caption under figure ``name`` for this run's suspicion (plain text)."""
    kind = run.suspicion
    text = SUSPICION_TEXT.get(kind, {}).get(name, FIGURE_TEXT.get(name, ""))
    if name not in WINDOWED_FIGURES:
        return text
    if kind == "aum" and name == "loss_evolution" and run.margins is None:
        return ("How the per-sample loss distribution drifted: each column is one epoch "
                "(darker = more samples). This run flagged by the AUM, but margins.npy is "
                "missing, so this shows plain losses, without the AUM mixture.")
    if kind not in ("loss", "logloss", "aum"):
        return (text + f" This run's suspicion score is {kind!r}, which this report does not "
                "know: the populations and the histogram are in its units, not in losses.")
    if run.windowed:
        what = "the loss" if kind == "loss" else "the log of the loss"
        text += (f" Here each sample's value is {what} averaged over the last {run.window} "
                 "epochs (the run's window), which is what the mixture was fitted to; the "
                 "paper uses the loss of the epoch itself (window 1).")
    return text


def figures_html(figures: dict[str, bytes | str], run: RunFiles) -> str:
    """The figures as ``<figure>`` elements with captions (for ``run``'s suspicion
    and window), PNGs inline."""
    parts = []
    for name, png in figures.items():
        text = _e(figure_caption(name, run))
        if isinstance(png, str):
            parts.append(f"<figure><p class=warn>The {_e(name)} figure could not be drawn: "
                         f"{_e(png)}</p></figure>")
            continue
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="fig-{_e(name)}"><img alt="{_e(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{text} '
            f'<span class=muted>(figures/{_e(name)}.png)</span></figcaption></figure>'
        )
    return "".join(parts)


def class_table_html(run: RunFiles) -> str:
    """Per-class table and, for up to MAX_MATRIX_CLASSES classes, the flagged confusion matrix."""
    t = class_table(run)
    head = ("<tr><th>class</th><th>samples</th><th>flagged</th><th>flagged %</th>"
            "<th>flagged ones predicted as</th></tr>")
    body = "".join(
        f"<tr><td>{_e(c)}</td><td>{n:,}</td><td>{f:,}</td><td>{pct:.1f}</td>"
        f"<td class=txt>{_e(preds)}</td></tr>"
        for c, n, f, pct, preds in zip(
            t["class"], t["samples"], t["flagged"], t["flagged_pct"],
            t["flagged_predicted_as"], strict=True,
        )
    )
    out = f"<table class=grid id=class-table>{head}{body}</table>"
    if 0 < len(run.classes) <= MAX_MATRIX_CLASSES and run.scores["flagged"].any():
        out += confusion_html(flagged_confusion(run))
    return out


def confusion_html(table: pd.DataFrame) -> str:
    """Given (rows) x predicted (columns) counts, shaded by count."""
    top = max(1, int(table.to_numpy().max()))
    head = "<tr><th>given ↓ / predicted →</th>" + "".join(
        f"<th>{_e(c)}</th>" for c in table.columns) + "</tr>"
    rows = []
    for given, counts in table.iterrows():
        cells = "".join(
            f'<td style="background:rgba(192,57,43,{0.08 + 0.7 * v / top:.2f})">{v}</td>'
            if v else "<td class=zero>·</td>"
            for v in counts.to_numpy()
        )
        rows.append(f"<tr><th>{_e(given)}</th>{cells}</tr>")
    return ("<h3>Flagged samples: given label → predicted label</h3>"
            f"<table class='grid confusion'>{head}{''.join(rows)}</table>")


def unreadable_html(run: RunFiles) -> str:
    u = run.unreadable
    if not len(u):
        return ""
    shown = u.head(MAX_UNREADABLE_ROWS)
    rows = "".join(f"<tr><td>{_e(p)}</td><td>{_e(r)}</td></tr>"
                   for p, r in zip(shown["path"], shown["reason"], strict=True))
    more = (f"<p class=muted>… and {len(u) - len(shown):,} more: see unreadable.csv</p>"
            if len(u) > len(shown) else "")
    return (f"<section id=unreadable><h2>Unreadable images ({len(u):,})</h2>"
            "<p>These files could not be decoded and were left out of training and of the "
            "cleaned dataset.</p>"
            f"<table class=grid><tr><th>path</th><th>reason</th></tr>{rows}</table>{more}"
            "</section>")


def _json_for_script(obj: object) -> str:
    # Inside <script> only "</" could end the element early; escaping every "<" is simplest.
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")


def verdict_banner_html(run: RunFiles) -> str:
    """A banner at the top of the page for a withheld run (flags forced or not)."""
    verdict = run.run.get("verdict") or {}
    if verdict.get("status") != "withheld":
        return ""
    head = ("Withheld, flags forced: the flags below were written on request, but the run "
            "is not convincing" if verdict.get("forced") else
            "Withheld: nothing was flagged, because the run is not convincing")
    return (f"<div class=banner id=verdict-banner role=alert><b>{_e(head)}.</b> "
            f"{_e(verdict.get('reason', ''))}.<br>Try: {_e(verdict.get('advice', ''))}.</div>")


def render_html(run: RunFiles, figures: dict[str, bytes | str], gallery: dict) -> str:
    """The whole page as one string."""
    inp = run.run.get("input", {})
    n_flagged = len(gallery["items"])
    title = f"labelclean report: {Path(inp.get('source', run.root.name)).name}"
    omitted = gallery["thumbs_omitted"]
    omitted_note = (
        f"<p class=muted>Only the {n_flagged - omitted:,} most suspicious samples have "
        f"thumbnails (at most {MAX_THUMBNAILS:,}, made within {THUMBNAIL_SECONDS:.0f} s); the "
        f"other {omitted:,} are listed without one and link to the original file.</p>"
        if omitted else ""
    )
    id_column = "path" if gallery["kind"] == "images" else "row"
    high = "high-loss" if run.suspicion == "loss" else "high-score"
    measure = ("the run's suspicion <code>score</code> (what the ranking sorts by)"
               if gallery["has_score"] else
               f"<code>p_noisy</code> (posterior of the {high} population)")
    intro = (
        "Each card: path and rank; given label → <b>predicted label</b> with the model's "
        f"probability; {measure} and the loss at t_c (hover for all numbers). A thumbnail "
        "opens the original image. A sample the model fitted late (at t_c it agrees with its "
        "label, but ranked it below another class on average) shows that runner-up class "
        "after the arrow, with the given label's probability; see its <code>reason</code> in "
        "<code>flagged_samples.csv</code>."
        if gallery["kind"] == "images" else
        "One row per flagged sample: its row in the input CSV, the given and predicted labels, "
        f"the model's probability, <code>p_noisy</code> (posterior of the {high} population) "
        "and the loss at t_c."
    )
    return "".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head>",
        '<body data-js-errors="0" data-gallery-items="0" data-gallery-total="0" '
        'data-gallery-ready="0">',
        f"<script>{ERROR_JS}</script>",
        f"<header><h1>{_e(title)}</h1><nav><a href=#summary>Summary</a>"
        "<a href=#training>Training</a><a href=#gallery-section>Flagged samples</a>"
        "<a href=#classes>Classes</a></nav></header><main>",
        verdict_banner_html(run),
        f"<section id=summary><h2>Summary</h2>{summary_html(run)}{settings_html(run)}</section>",
        f"<section id=training><h2>Training and the "
        f"{'loss' if run.suspicion == 'loss' else 'suspicion-score'} populations</h2>"
        f"{figures_html(figures, run)}</section>",
        f"<section id=gallery-section><h2>Flagged samples ({n_flagged:,}), most suspicious "
        "first</h2>",
        f"<p class=muted>{intro} "
        "To act on them, edit the <code>action</code> column of "
        "<code>flagged_samples.csv</code> (<code>remove</code>, <code>keep</code> or "
        "<code>relabel:&lt;class&gt;</code>) and run <code>labelclean apply "
        f"{_e(run.root)} --out DIR</code>.</p>{omitted_note}",
        GALLERY_CONTROLS.replace("part of the path", f"part of the {id_column}"),
        (f"<div id=gallery class=cards data-id-column={id_column}></div>"
         if gallery["kind"] == "images" else
         "<table class=grid id=gallery-table><thead><tr><th>rank</th><th>row</th>"
         "<th>given</th><th>predicted</th><th>p(pred)</th><th>p_noisy</th><th>loss</th>"
         f"{'<th>score</th>' if gallery['has_score'] else ''}</tr></thead>"
         "<tbody id=gallery></tbody></table>"),
        "<div class=pager id=pager-bottom></div></section>",
        f"<section id=classes><h2>Per class</h2>{class_table_html(run)}</section>",
        unreadable_html(run),
        "</main>",
        f'<script type="application/json" id="gallery-data">{_json_for_script(gallery)}</script>',
        f"<script>{GALLERY_JS}</script></body></html>",
    ])


CSS = """
.banner{background:#fde8e8;border:2px solid #c62828;color:#5b0000;padding:.8em 1em;
margin:1em 0;border-radius:6px}
:root{--fg:#1c2833;--muted:#6c7a89;--line:#dfe4ea;--accent:#c0392b;--bg:#fff;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 background:var(--bg)}
header{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);
 padding:8px 24px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}
nav a{margin-right:14px;color:var(--accent);text-decoration:none}
main{max-width:1200px;margin:0 auto;padding:8px 24px 48px}
h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:15px;margin:20px 0 8px}
.muted{color:var(--muted)} .warn{color:var(--accent)}
code{background:var(--soft);padding:0 3px;border-radius:3px}
table{border-collapse:collapse}
table.summary th{text-align:left;font-weight:600;padding:3px 18px 3px 0;vertical-align:top;
 white-space:nowrap}
table.summary td{padding:3px 0}
table.grid th,table.grid td{border:1px solid var(--line);padding:3px 8px;text-align:right}
table.grid th{background:var(--soft)}
table.grid td:first-child,table.grid td.txt{text-align:left}
table.confusion td,table.confusion th{text-align:center;min-width:34px}
table.confusion td.zero{color:#ccc}
table.kv{font-size:12px;margin-right:24px} table.kv th{text-align:left;padding-right:12px;
 font-weight:500;color:var(--muted)}
.cols{display:flex;flex-wrap:wrap;gap:12px}
details{margin:10px 0} summary{cursor:pointer;color:var(--muted)}
figure{margin:16px 0} figure img{max-width:100%;height:auto;display:block}
figcaption{color:var(--muted);font-size:13px;max-width:900px}
.controls{display:flex;flex-wrap:wrap;gap:10px 16px;align-items:center;margin:8px 0;
 padding:8px 10px;background:var(--soft);border-radius:6px}
.controls label{font-size:13px;color:var(--muted)}
.controls select,.controls input{font:inherit;font-size:13px;margin-left:4px}
.pager{display:flex;gap:6px;align-items:center;margin:8px 0;font-size:13px}
.pager button{font:inherit;font-size:13px;padding:2px 9px;cursor:pointer}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px}
.gitem{border:1px solid var(--line);border-radius:6px;padding:6px;font-size:12px;
 background:#fff;overflow:hidden}
.gitem>div{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.gitem .top{display:flex;justify-content:space-between;gap:6px}
.gitem .thumb{display:flex;align-items:center;justify-content:center;height:72px;
 background:var(--soft);border-radius:4px;margin-bottom:4px}
.gitem img{width:64px;height:64px;object-fit:contain;image-rendering:pixelated}
.gitem .noimg{color:var(--muted);font-size:11px}
.gitem .id{font-family:ui-monospace,monospace;font-size:11px;overflow:hidden;
 text-overflow:ellipsis;color:var(--muted)}
.gitem .lab{font-size:13px} .gitem .lab b{color:var(--accent)}
.gitem .rank{color:var(--muted);flex:none} .gitem .meta{font-size:11px}
#gallery-table td{font-variant-numeric:tabular-nums}
"""

ERROR_JS = """
(function(){function bump(){var b=document.body;
b.setAttribute('data-js-errors',String(Number(b.getAttribute('data-js-errors')||0)+1));}
window.addEventListener('error',bump);window.addEventListener('unhandledrejection',bump);})();
"""

GALLERY_CONTROLS = """
<div class=controls>
<label>given <select id=f-given><option value="">any</option></select></label>
<label>predicted <select id=f-pred><option value="">any</option></select></label>
<label>search <input id=f-q type=search placeholder="part of the path" size=18></label>
<label>order <select id=f-order><option value=rank>most suspicious first</option>
<option value=rank-desc>least suspicious first</option>
<option value=given>by given label</option></select></label>
<label>per page <select id=f-size><option>50</option><option selected>100</option>
<option>200</option><option>500</option></select></label>
</div>
<div class=pager id=pager-top></div>
"""

GALLERY_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("gallery-data").textContent);
  var items = data.items, body = document.body, root = document.getElementById("gallery");
  var RANK = 0, ID = 1, GIVEN = 2, PRED = 3, PROB = 4, PN = 5, LOSS = 6, THUMB = 7, HREF = 8,
    SCORE = 9;
  var state = {page: 0, size: 100, given: "", pred: "", q: "", order: "rank"};
  var view = items;
  var byId = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(x, d) { return Number(x).toFixed(d); }
  function num(x) { return Number(x).toPrecision(3); }

  function fillSelect(sel, values) {
    values.forEach(function (v) {
      var o = el("option", null, v); o.value = v; sel.appendChild(o);
    });
  }
  function present(col) {
    var seen = {}, out = [];
    items.forEach(function (it) { seen[it[col]] = true; });
    data.classes.forEach(function (c) { if (seen[c]) { out.push(c); delete seen[c]; } });
    return out.concat(Object.keys(seen).sort());
  }

  function card(it) {
    var c = el("div", "gitem");
    var t = el(it[HREF] ? "a" : "div", "thumb");
    if (it[HREF]) { t.href = it[HREF]; t.target = "_blank"; t.title = "open the original image"; }
    if (it[THUMB]) {
      var img = el("img");
      img.alt = it[ID];
      img.src = "data:image/png;base64," + it[THUMB];
      t.appendChild(img);
    } else {
      t.appendChild(el("span", "noimg", "no thumbnail"));
    }
    c.appendChild(t);
    var top = el("div", "top");
    var id = el("span", "id", it[ID]); id.title = it[ID];
    top.appendChild(id);
    top.appendChild(el("span", "rank", "#" + it[RANK]));
    c.appendChild(top);
    var lab = el("div", "lab");
    lab.title = "given label \\u2192 predicted label (model probability)";
    lab.appendChild(el("span", "given", it[GIVEN]));
    lab.appendChild(document.createTextNode(" \\u2192 "));
    lab.appendChild(el("b", null, it[PRED]));
    lab.appendChild(el("span", "muted", " " + fmt(it[PROB], 2)));
    c.appendChild(lab);
    var first = data.has_score ? "score " + num(it[SCORE]) : "p_noisy " + fmt(it[PN], 2);
    c.appendChild(el("div", "muted meta", first + " \\u00b7 loss " + num(it[LOSS])));
    c.title = "rank " + it[RANK] + (data.has_score ? ", score " + num(it[SCORE]) : "") +
      ", loss " + num(it[LOSS]) + ", p_noisy " + fmt(it[PN], 3) + ", p(predicted) " +
      fmt(it[PROB], 3);
    return c;
  }
  function row(it) {
    var tr = el("tr");
    var cells = [String(it[RANK]), it[ID], it[GIVEN], it[PRED], fmt(it[PROB], 3), fmt(it[PN], 3),
      fmt(it[LOSS], 4)];
    if (data.has_score) cells.push(num(it[SCORE]));
    cells.forEach(function (v, i) {
      tr.appendChild(el("td", i === 1 || i === 2 || i === 3 ? "txt" : null, v));
    });
    return tr;
  }

  function pager(div, pages) {
    div.replaceChildren();
    function btn(label, page, off) {
      var b = el("button", null, label); b.disabled = off;
      b.addEventListener("click", function () { state.page = page; render(); });
      div.appendChild(b);
    }
    btn("\\u00ab", 0, state.page === 0);
    btn("\\u2039 prev", state.page - 1, state.page === 0);
    var start = view.length ? state.page * state.size + 1 : 0;
    var end = Math.min(view.length, (state.page + 1) * state.size);
    div.appendChild(el("span", null, " page " + (state.page + 1) + " of " + pages + " (items " +
      start + "\\u2013" + end + " of " + view.length + ") "));
    btn("next \\u203a", state.page + 1, state.page >= pages - 1);
    btn("\\u00bb", pages - 1, state.page >= pages - 1);
  }

  function render() {
    var pages = Math.max(1, Math.ceil(view.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var start = state.page * state.size, end = Math.min(view.length, start + state.size);
    var frag = document.createDocumentFragment();
    var make = data.kind === "images" ? card : row;
    for (var i = start; i < end; i++) frag.appendChild(make(view[i]));
    root.replaceChildren(frag);
    pager(byId("pager-top"), pages);
    pager(byId("pager-bottom"), pages);
    body.setAttribute("data-gallery-items", String(end - start));
    body.setAttribute("data-gallery-total", String(view.length));
  }

  function update() {
    var q = state.q.toLowerCase();
    view = items.filter(function (it) {
      return (!state.given || it[GIVEN] === state.given) &&
        (!state.pred || it[PRED] === state.pred) && (!q || it[ID].toLowerCase().indexOf(q) >= 0);
    });
    if (state.order === "rank-desc") view = view.slice().reverse();
    if (state.order === "given") {
      var order = {};
      data.classes.forEach(function (c, i) { order[c] = i; });
      view = view.slice().sort(function (a, b) {
        return (order[a[GIVEN]] - order[b[GIVEN]]) || (a[RANK] - b[RANK]);
      });
    }
    state.page = 0;
    render();
  }

  fillSelect(byId("f-given"), present(GIVEN));
  fillSelect(byId("f-pred"), present(PRED));
  function onChange(id, key) {
    byId(id).addEventListener("change", function (e) { state[key] = e.target.value; update(); });
  }
  onChange("f-given", "given");
  onChange("f-pred", "pred");
  onChange("f-order", "order");
  byId("f-size").addEventListener("change", function (e) {
    state.size = Number(e.target.value); state.page = 0; render();
  });
  var timer = null;
  byId("f-q").addEventListener("input", function (e) {
    clearTimeout(timer);
    timer = setTimeout(function () { state.q = e.target.value; update(); }, 150);
  });
  update();
  body.setAttribute("data-gallery-ready", "1");
})();
"""
