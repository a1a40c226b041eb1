"""Writing a run's results under ``--out``, and nowhere else.

Layout of an output folder (``--out`` is the run folder itself: the cleaned
image tree is the ``cleaned/`` folder inside it, so ``--out cleaned/`` puts it at
``cleaned/cleaned/``; name ``--out`` after the run, e.g. ``runs/first``)::

    cleaned/               image folder input: <class>/<image> without flagged samples
    cleaned.csv            any other input: the CSV (DataFrame) without flagged rows;
                           for a Hugging Face or torch dataset, `index,label` of kept samples
                           (which one: the input's writer, labelclean.writers)
    flagged_samples.csv    flagged samples, most suspicious first, with an editable `action`
    scores.csv             every training sample's scores at t_c
    metrics.csv            one row per epoch
    losses.npy, margins.npy  (epochs, N) float32 per-sample loss / margin after every epoch
    pred_probs.npy         (N, K) float32 softmax probabilities at t_c, rows in sample order
    embeddings.npy         (N, D) float32 penultimate features at t_c (unless turned off)
    checkpoint/            model.safetensors + model.json at t_c
    unreadable.csv         images that could not be decoded (only when skipped)
    run.json               parameters, versions, t_c, counts, the observers' run-level
                           results (phase_boundaries...), timings
    report.html, figures/  the report and its figures (see labelclean.report)
    .labelclean-run        the marker and manifest of the files above (labelclean.rundir)

The whole folder is written as a hidden sibling of ``--out`` and swapped into
place once complete (:mod:`labelclean.rundir`), so ``--out`` holds either the
previous complete run or the new one. ``cleaned/`` holds copies (copy-on-write
clones where the filesystem has them) unless links are asked for. Text cells of
``flagged_samples.csv`` that a spreadsheet would run as formulas are prefixed
with ``'`` (:func:`guard_cell`). The input is only read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import rundir
from ._io import write_csv, write_json, write_npy
from .checkpoint import save_checkpoint
from .errors import LabelcleanError
from .noise import precision_recall_f1

# the names of a run folder's files: rundir owns the layout
from .rundir import (
    CHECKPOINT_DIR,
    EMBEDDINGS_FILE,
    LOSSES_FILE,
    MARGINS_FILE,
    METRICS_FILE,
    PRED_PROBS_FILE,
    REVIEW_FILE,
    RUN_FILE,
    SCORES_FILE,
    UNREADABLE_FILE,
)
from .writers import DEFAULT_LINK, LINK_MODES, output_forbidden, writer_for

if TYPE_CHECKING:
    from .resultdata import ResultData


def export_result(
    result: ResultData,
    out: str | os.PathLike,
    *,
    link: str = DEFAULT_LINK,
    overwrite: bool = False,
    report: bool = True,
    staging: rundir.Staging | None = None,
) -> Path:
    """Write everything a run produced under ``out`` (layout: module docstring).

    Parameters
    ----------
    result:
        What :meth:`labelclean.Cleaner.fit` returned.
    out:
        The output folder; must be empty or absent unless ``overwrite``.
    link:
        How the cleaned image tree refers to the input images: ``"copy"``
        (copy-on-write clones where the filesystem supports them, else copies),
        ``"hardlink"`` (falls back to copying across filesystems) or
        ``"symlink"``. With either link an edit in ``cleaned/`` changes the input.
    overwrite:
        Replace a previous labelclean run in ``out``; only the files it wrote
        are removed, and only once the new run is complete.
    report:
        Also write ``report.html`` and its figures.
    staging:
        A staging folder already opened for ``out`` with :func:`rundir.begin`
        (the CLI opens it before training, to fail early on an unwritable
        ``out``); by default one is opened here.
    """
    if link not in LINK_MODES:
        raise LabelcleanError(f"--link must be one of {', '.join(LINK_MODES)}")
    data = result.dataset
    if staging is None:
        staging = rundir.begin(out, kind="run", overwrite=overwrite,
                               inputs=output_forbidden(data.source, data.origin, data.files))
    with staging:
        _write_run(result, staging.path, staging.out, link, report)
        # no output more readable than the most private input file (labelclean.paths)
        staging.private_to([] if writer_for(data.origin).in_memory
                           else [data.source, *(data.files or [])])
        return staging.commit()


def _write_run(result: ResultData, folder: Path, out: Path, link: str, report: bool) -> None:
    """Write the run's files into ``folder``; ``out`` is where they will end up."""
    data = result.dataset
    keep = ~result.scores.sort_values("index")["flagged"].to_numpy()
    writer_for(data.origin).write(result, keep, folder, out, link)
    write_csv(folder / REVIEW_FILE, guard_formulas(review_table(result)))
    write_csv(folder / SCORES_FILE, result.scores.drop(columns=["reason"]))
    write_csv(folder / METRICS_FILE, result.history)
    write_npy(folder / LOSSES_FILE, result.losses)
    write_npy(folder / MARGINS_FILE, result.margins)
    if result.pred_probs is not None:
        write_npy(folder / PRED_PROBS_FILE, result.pred_probs)
    if result.embeddings is not None:
        write_npy(folder / EMBEDDINGS_FILE, result.embeddings)
    save_checkpoint(folder / CHECKPOINT_DIR, result.state_dict, result.checkpoint_config)
    if len(data.unreadable):
        write_csv(folder / UNREADABLE_FILE, data.unreadable)
    write_json(folder / RUN_FILE, run_summary(result, out))
    if report:
        from .report import write_report

        write_report(folder)


# ----------------------------------------------------------------------------- CSV guard

#: A cell starting with one of these is run as a formula by spreadsheets.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"


def guard_cell(value: object) -> object:
    """Prefix ``'`` to text a spreadsheet would run as a formula (and to text
    that already starts with ``'``, so :func:`unguard_cell` is exact)."""
    if isinstance(value, str) and value.startswith((*FORMULA_START, GUARD)):
        return GUARD + value
    return value


def unguard_cell(value: str) -> str:
    """Undo :func:`guard_cell` on a cell read back as text."""
    return value[1:] if value.startswith(GUARD) else value


def guard_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with every text cell passed through :func:`guard_cell`
    (numbers stay numbers: ``-0.5`` is not a formula)."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype == object or pd.api.types.is_string_dtype(table[column]):
            table[column] = table[column].map(guard_cell)
    return table


# ----------------------------------------------------------------------------- checks


def review_table(result: ResultData) -> pd.DataFrame:
    """``flagged_samples.csv``: the flagged rows plus the editable review columns."""
    f = result.flagged
    table = pd.DataFrame(
        {
            "rank": f["rank"],
            "path" if result.dataset.kind == "images" else "row": f["sample_id"],
            "index": f["index"],
            "given_label": f["given_label"],
            "predicted_label": f["predicted_label"],
            "predicted_prob": f["predicted_prob"].round(4),
            "score": f["score"].round(4),
            "loss": f["loss"].round(4),
            "p_noisy": f["p_noisy"].round(4),
            "suggested_label": f["suggested_label"],
            "model_agrees": f["model_agrees"],
            "action": "remove",
            "reason": f["reason"],
        }
    )
    return table


#: Keys ``run.json`` holds only for some runs (a noise mask, a validation set).
OPTIONAL_RUN_KEYS = ("against_truth", "val_accuracy_at_t_c")


def run_summary(result: ResultData, out: Path) -> dict:
    """``run.json``: the input, the settings, ``t_c``, the counts, the verdict, the
    observers' run-level results (``CleanResult.observed``), the timings."""
    data = result.dataset
    writer = writer_for(data.origin)
    head = {
        "labelclean_version": result.checkpoint_config["labelclean_version"],
        "input": {
            "source": (f"<{data.origin} object>" if writer.in_memory
                       else str(Path(data.source).resolve())),
            "origin": data.origin,
            "kind": data.kind,
            "samples": len(data),
            "classes": list(data.classes),
            "class_order": data.class_order,
            "class_to_idx": {c: i for i, c in enumerate(data.classes)},
            "input_shape": list(data.input_shape),
            "unreadable": int(len(data.unreadable)),
        },
        "params": result.params,
        "t_c": result.t_c,
        "stop_reason": result.stop_reason,
        "samples": len(data),
        "flagged": result.n_flagged,
        "kept": len(data) - result.n_flagged,
        "estimated_noise_rate": result.estimated_noise_rate,
        "second_population_found": result.second_population,
        "verdict": result.verdict.to_dict(),
        "estimate": None if result.estimate is None else result.estimate.to_dict(),
        "flagged_share_by_class": result.flagged_share_by_class(),
        "mixture_at_t_c": result.mixture.to_dict(),
    }
    tail = {
        "t_c_in_phase_II": _in_phase(result, "II"),
        "timing": result.timing,
        "environment": environment(),
        "outputs": {
            "cleaned": writer.output,
            "flagged": REVIEW_FILE,
            "checkpoint": CHECKPOINT_DIR,
            "pred_probs": PRED_PROBS_FILE if result.pred_probs is not None else None,
            "embeddings": EMBEDDINGS_FILE if result.embeddings is not None else None,
        },
    }
    clash = sorted(set(result.observed) & (set(head) | set(tail) | set(OPTIONAL_RUN_KEYS)))
    if clash:
        raise ValueError(f"observer results would overwrite run.json's own keys: "
                         f"{', '.join(clash)}")
    summary = {**head, **result.observed, **tail}
    if result.noise_mask is not None:
        mask = result.noise_mask
        flags = result.scores.sort_values("index")["flagged"].to_numpy()
        p, r, f1 = precision_recall_f1(flags, mask)
        summary["against_truth"] = {
            "true_noise_rate": float(mask.mean()),
            "precision": p,
            "recall": r,
            "f1": f1,
        }
    if result.val is not None and "val_accuracy" in result.history:
        row = result.history[result.history["epoch"] == result.t_c]
        summary["val_accuracy_at_t_c"] = float(row["val_accuracy"].iloc[0])
    return summary


def environment() -> dict:
    """Library versions, for run.json."""
    import platform

    import sklearn
    import timm
    import torch

    from ._version import __version__

    return {
        "labelclean": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
    }


def _in_phase(result: ResultData, phase: str) -> bool | None:
    span = result.phase_boundaries.get(phase)
    if not span:
        return None if not result.phase_boundaries else False
    return bool(span[0] <= result.t_c <= span[1])
