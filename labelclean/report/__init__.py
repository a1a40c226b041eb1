"""``report.html``: one self-contained page that explains a run, built from its files.

:func:`write_report` reads the run folder through the one reader
(:func:`labelclean.runfiles.read_run`: ``run.json``, ``metrics.csv``,
``scores.csv``, ``losses.npy``, ``margins.npy``, ``unreadable.csv``,
``checkpoint/model.json``) plus, read-only, the original images for thumbnails,
so ``labelclean report RUN_DIR`` can rebuild it at any time. It writes

* ``figures/*.png``: the matplotlib figures (Agg backend), and
* ``report.html``: summary, the figures (embedded again as base64 PNG), a paged
  gallery of the flagged samples and a per-class table.

The package, one job per module:

``run``       the run as the report sees it (:class:`RunFiles`, :func:`load_run`)
``data``      the numbers the figures draw; suspicion scores from the decision module
``registry``  the figure registry: :func:`register`, :func:`write_figures`, captions
``figures``   the figures, one function and one registration each
``plotting``  matplotlib helpers the figures share
``gallery``   the gallery's data and thumbnails
``tables``    per-class tables
``page``      the HTML page; its CSS and scripts are the files in ``static/``
"""

from __future__ import annotations

import os
from pathlib import Path

from .._io import write_text
from ..rundir import update_manifest
from .data import (
    Histogram,
    ScoreHistory,
    histogram_data,
    phase_spans,
    scores_at_t_c,
    suspicion_at,
    suspicion_history,
)

# importing the figures module registers the built-in figures, in display order
from .figures import (
    fig_accuracy,
    fig_loss_evolution,
    fig_loss_histogram,
    fig_order_parameters,
    fig_separation,
    fig_truth,
)
from .gallery import (
    MAX_THUMBNAILS,
    THUMBNAIL_SECONDS,
    gallery_data,
    image_locator,
    make_thumbnails,
    thumbnail,
    thumbnail_side,
)
from .page import render_html
from .registry import FIGURES, FigureSpec, figure_caption, figure_names, register, write_figures
from .run import RunFiles, load_run
from .tables import class_table, flagged_confusion

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"
#: The built-in figures, in display order (:data:`FIGURES` also holds any registered later).
FIGURE_NAMES = figure_names()


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
        missing or unreadable), or is damaged.
    """
    run = load_run(run_dir)
    figures = write_figures(run, run.root / FIGURES_DIR)
    gallery = gallery_data(run)
    page = render_html(run, figures, gallery)
    path = write_text(run.root / REPORT_FILE, page)
    # labelclean wrote these: keep the run's manifest current (rundir.update_manifest)
    update_manifest(run.root, [REPORT_FILE, *(f"{FIGURES_DIR}/{n}.png" for n in FIGURES)])
    return path


__all__ = [
    "FIGURES", "FIGURES_DIR", "FIGURE_NAMES", "MAX_THUMBNAILS", "REPORT_FILE",
    "THUMBNAIL_SECONDS", "FigureSpec", "Histogram", "RunFiles", "ScoreHistory", "class_table",
    "fig_accuracy", "fig_loss_evolution", "fig_loss_histogram", "fig_order_parameters",
    "fig_separation", "fig_truth", "figure_caption", "figure_names", "flagged_confusion",
    "gallery_data", "histogram_data", "image_locator", "load_run", "make_thumbnails",
    "phase_spans", "register", "render_html", "scores_at_t_c", "suspicion_at",
    "suspicion_history", "thumbnail", "thumbnail_side", "write_figures", "write_report",
]
