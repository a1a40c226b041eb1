"""The report's figures: one registration each, in display order.

A figure is a function ``draw(run) -> matplotlib Figure | None`` (None: nothing
to draw for this run) registered with :func:`register`, which records its name
(``figures/<name>.png``, ``id="fig-<name>"``), its caption and the data it
needs. Registering is all it takes: :func:`write_figures` draws every
registered figure, the page shows each with its caption, and the run's
manifest records the PNG.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .._io import atomic_write
from .data import metric_column
from .run import RunFiles

#: What ``needs`` can name besides a ``metrics.csv`` column: the per-epoch arrays.
ARRAYS = ("losses", "margins")


@dataclass(frozen=True)
class FigureSpec:
    """One registered figure (see :func:`register`)."""

    name: str
    draw: Callable[[RunFiles], object | None]
    #: The caption under the figure (plain text).
    caption: str
    #: What the run must have for the figure to be drawn at all; each entry is a
    #: ``metrics.csv`` column (with a finite value) or one of :data:`ARRAYS`,
    #: and ``"a|b"`` means either. ``draw`` may still return None.
    needs: tuple[str, ...] = ()
    #: Captions replacing ``caption`` for the suspicions other than ``"loss"``.
    suspicion_captions: Mapping[str, str] = field(default_factory=dict)
    #: The figure's values are the run's suspicion score (its caption then says
    #: so for an unknown suspicion and for a window of several epochs).
    shows_score: bool = False
    #: A caption for runs the others do not fit (None: use the others).
    caption_for: Callable[[RunFiles], str | None] | None = None


#: Every registered figure by name, in display order.
FIGURES: dict[str, FigureSpec] = {}


def register(
    name: str,
    *,
    caption: str,
    needs: tuple[str, ...] = (),
    suspicion_captions: Mapping[str, str] | None = None,
    shows_score: bool = False,
    caption_for: Callable[[RunFiles], str | None] | None = None,
) -> Callable[[Callable[[RunFiles], object | None]], Callable[[RunFiles], object | None]]:
    """Decorator: register ``draw`` as the figure ``name`` (after those registered before).

    ``name`` must be new and usable as a file name.
    """
    if name in FIGURES:
        raise ValueError(f"a report figure named {name!r} is already registered")
    if not name or not name.replace("_", "").isalnum():
        raise ValueError(f"a figure name must be letters, digits and '_', not {name!r}")

    def add(draw: Callable[[RunFiles], object | None]) -> Callable[[RunFiles], object | None]:
        FIGURES[name] = FigureSpec(name, draw, caption, tuple(needs),
                               dict(suspicion_captions or {}), shows_score, caption_for)
        return draw

    return add


def figure_names() -> tuple[str, ...]:
    """The registered figures' names, in display order."""
    return tuple(FIGURES)


def has_data(run: RunFiles, needs: tuple[str, ...]) -> bool:
    """Whether ``run`` has what ``needs`` names (see :attr:`FigureSpec.needs`)."""
    def present(what: str) -> bool:
        if what in ARRAYS:
            values = getattr(run, what)
            return values is not None and values.shape[0] > 0
        return metric_column(run.metrics, what) is not None

    return all(any(present(w) for w in need.split("|")) for need in needs)


def write_figures(run: RunFiles, folder: Path) -> dict[str, bytes | str]:
    """Draw every registered figure that the run's data allows; write each as
    ``folder/<name>.png``.

    Returns ``{name: png_bytes}`` for the figures drawn, in display order; a
    figure that failed to draw maps to the error text instead (the report shows
    it rather than losing the whole page). Stale PNGs of figures not drawn this
    time are removed.
    """
    out: dict[str, bytes | str] = {}
    for name, figure in FIGURES.items():
        if not has_data(run, figure.needs):
            continue
        try:
            fig = figure.draw(run)
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
    for name in FIGURES:
        if name not in out or isinstance(out[name], str):
            (folder / f"{name}.png").unlink(missing_ok=True)
    return out


def figure_caption(name: str, run: RunFiles) -> str:
    """The caption under figure ``name`` for this run's suspicion (plain text)."""
    figure = FIGURES.get(name)
    if figure is None:
        return ""
    special = figure.caption_for(run) if figure.caption_for is not None else None
    if special is not None:
        return special
    kind = run.suspicion
    text = figure.suspicion_captions.get(kind, figure.caption)
    if not figure.shows_score:
        return text
    if run.suspicion_spec is None:
        return (text + f" This run's suspicion score is {kind!r}, which this report does not "
                "know: the populations and the histogram are in its units, not in losses.")
    if run.windowed:
        what = "the loss" if kind == "loss" else "the log of the loss"
        text += (f" Here each sample's value is {what} averaged over the last {run.window} "
                 "epochs (the run's window), which is what the mixture was fitted to; the "
                 "paper uses the loss of the epoch itself (window 1).")
    return text

