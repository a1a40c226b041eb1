"""Writing a run's results under ``--out``, and nowhere else.

Layout of an output folder::

    cleaned/               image folder input: <class>/<image> without flagged samples
    cleaned.csv            CSV input: the CSV without flagged rows
    flagged_samples.csv    flagged samples, most suspicious first, with an editable `action`
    scores.csv             every training sample's scores at t_c
    metrics.csv            one row per epoch
    losses.npy, margins.npy  (epochs, N) float32 per-sample loss / margin after every epoch
    checkpoint/            model.safetensors + model.json at t_c
    unreadable.csv         images that could not be decoded (only when skipped)
    run.json               parameters, versions, t_c, counts, timings
    report.html, figures/  the report and its figures (see labelclean.report)

Every file is written atomically (temporary file, then rename); the cleaned
image tree is built in a hidden folder and renamed into place. The input is
only read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ._io import write_csv, write_json, write_npy
from .checkpoint import save_checkpoint
from .errors import LabelcleanError
from .noise import precision_recall_f1

if TYPE_CHECKING:
    from .cleaner import CleanResult

LINK_MODES = ("hardlink", "symlink", "copy")
RUN_FILE = "run.json"


def prepare_output_dir(
    out: str | os.PathLike,
    *,
    overwrite: bool,
    inputs: list[str | os.PathLike] = (),
    markers: tuple[str, ...] = (RUN_FILE,),
) -> Path:
    """Check that ``out`` may be written, and empty it when ``overwrite`` allows.

    Refuses an ``out`` that is, contains or lies inside an input; refuses a
    non-empty ``out`` unless ``overwrite``; and even then only empties a folder
    that holds a previous labelclean output (one of the ``markers`` files:
    ``run.json`` by default, ``apply.json`` for ``labelclean apply``), so that a
    mistyped ``--out`` cannot delete unrelated files.
    """
    out = Path(out).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if src.is_dir():
            clash = out == src or src in out.parents or out in src.parents
        else:  # a CSV: don't write into its folder, or over it
            clash = out == src or out == src.parent or out in src.parents
        if clash:
            raise LabelcleanError(f"--out {out} overlaps the input {src}; choose another folder")
    if out.exists() and not out.is_dir():
        raise LabelcleanError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise LabelcleanError(f"--out {out} is not empty; pass --overwrite to replace it")
        if not any((out / marker).is_file() for marker in markers):
            what = "labelclean run" if markers == (RUN_FILE,) else "labelclean output"
            raise LabelcleanError(
                f"--out {out} is not empty and holds no {what}; refusing to delete it"
            )
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_result(
    result: CleanResult,
    out: str | os.PathLike,
    *,
    link: str = "hardlink",
    overwrite: bool = False,
    report: bool = True,
) -> Path:
    """Write everything a run produced under ``out`` (layout: module docstring).

    Parameters
    ----------
    result:
        What :meth:`labelclean.Cleaner.fit` returned.
    out:
        The output folder; must be empty or absent unless ``overwrite``.
    link:
        How the cleaned image tree refers to the input images: ``"hardlink"``
        (falls back to copying across filesystems), ``"symlink"`` or ``"copy"``.
    overwrite:
        Replace a previous labelclean run in ``out``.
    report:
        Also write ``report.html`` and its figures.
    """
    if link not in LINK_MODES:
        raise LabelcleanError(f"--link must be one of {', '.join(LINK_MODES)}")
    data = result.dataset
    out = prepare_output_dir(out, overwrite=overwrite, inputs=[data.source])
    keep = ~result.scores.sort_values("index")["flagged"].to_numpy()

    if data.origin == "folder":
        _write_tree(data.files, data.ids, keep, out / "cleaned", link)
    else:
        write_csv(out / "cleaned.csv", _cleaned_table(result, keep, out))

    write_csv(out / "flagged_samples.csv", review_table(result))
    write_csv(out / "scores.csv", result.scores.drop(columns=["reason"]))
    write_csv(out / "metrics.csv", result.history)
    write_npy(out / "losses.npy", result.losses)
    write_npy(out / "margins.npy", result.margins)
    save_checkpoint(out / "checkpoint", result.state_dict, result.checkpoint_config)
    if len(data.unreadable):
        write_csv(out / "unreadable.csv", data.unreadable)
    write_json(out / RUN_FILE, run_summary(result, out))
    if report:
        from .report import write_report

        write_report(out)
    return out


def review_table(result: CleanResult) -> pd.DataFrame:
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


def run_summary(result: CleanResult, out: Path) -> dict:
    from .cleaner import environment

    data = result.dataset
    summary = {
        "labelclean_version": result.checkpoint_config["labelclean_version"],
        "input": {
            "source": str(Path(data.source).resolve()),
            "origin": data.origin,
            "kind": data.kind,
            "samples": len(data),
            "classes": list(data.classes),
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
        "flagged_share_by_class": result.flagged_share_by_class(),
        "mixture_at_t_c": result.mixture.to_dict(),
        "phase_boundaries": result.phase_boundaries,
        "t_c_in_phase_II": _in_phase(result, "II"),
        "timing": result.timing,
        "environment": environment(),
        "outputs": {
            "cleaned": "cleaned" if data.origin == "folder" else "cleaned.csv",
            "flagged": "flagged_samples.csv",
            "checkpoint": "checkpoint",
        },
    }
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


def _in_phase(result: CleanResult, phase: str) -> bool | None:
    span = result.phase_boundaries.get(phase)
    if not span:
        return None if not result.phase_boundaries else False
    return bool(span[0] <= result.t_c <= span[1])


def _write_tree(
    files: list[Path], ids: list[str], keep, dest: Path, link: str
) -> None:
    partial = dest.with_name(f".{dest.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)
    for src, rel, k in zip(files, ids, keep):
        if not k:
            continue
        target = partial / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        _place_file(Path(src), target, link)
    partial.mkdir(parents=True, exist_ok=True)
    os.replace(partial, dest)


def _place_file(src: Path, target: Path, link: str) -> None:
    if link == "symlink":
        os.symlink(src.resolve(), target)
        return
    if link == "hardlink":
        try:
            os.link(src, target)
            return
        except OSError:
            pass  # another filesystem, or links not allowed: copy instead
    shutil.copy2(src, target)


def _cleaned_table(result: CleanResult, keep, out: Path) -> pd.DataFrame:
    data = result.dataset
    table = data.table
    rows = data.rows[keep]
    cleaned = table.iloc[rows].copy()
    if data.origin == "paths":
        # Relative paths resolved against the input CSV's folder; rewrite them
        # relative to the cleaned CSV so they still point at the same images.
        column = result.params["path_column"]
        base = Path(data.source).resolve().parent
        cleaned[column] = [
            p if os.path.isabs(p) else os.path.relpath(base / p, out)
            for p in cleaned[column].astype(str)
        ]
    return cleaned
