"""Matplotlib helpers the figures share: a bare figure, the phase shading, t_c, lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .run import RunFiles

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PHASE_COLOURS = {"I": "#dbe9f6", "II": "#d5efcf", "III": "#fde3c8", "IV": "#f3d3d3"}
OTHER_PHASE_COLOURS = ("#e8e0f0", "#e0f0ee", "#f0ecd8")


def new_figure(ncols: int, height: float = 3.4) -> tuple[Figure, list[Axes]]:
    """A figure of ``ncols`` side-by-side axes: ``(fig, [ax, ...])``."""
    # A bare Figure on an Agg canvas, not pyplot: no global backend switch in the
    # caller's process (a notebook keeps its inline plots), nothing to close.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6 * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, squeeze=False)
    return fig, list(axes[0])


def decorate(
    ax: Axes, run: RunFiles, spans: list[tuple[str, int, int]], shade: bool = True
) -> None:
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


def plot_line(ax: Axes, x, y: pd.Series | None, label: str, **kw) -> bool:
    """Plot the finite points of ``y`` over ``x``; False (nothing drawn) when ``y`` is None."""
    if y is None:
        return False
    ok = np.isfinite(y.to_numpy(dtype=float))
    ax.plot(np.asarray(x)[ok], y.to_numpy(dtype=float)[ok], marker="o", ms=3, label=label, **kw)
    return True


def legend(ax: Axes, loc: str, fontsize: float = 8) -> None:
    """A legend, only when something on ``ax`` carries a label."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=fontsize, loc=loc)


def wrap(label: str) -> str:
    """An axis label over two lines at its parenthesis."""
    return label.replace(" (", "\n(", 1)
