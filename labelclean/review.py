"""``labelclean apply``: turn a reviewed ``flagged_samples.csv`` into the final dataset.

A run writes ``flagged_samples.csv`` with an editable ``action`` column, one row
per flagged sample. After looking at the report the user edits it (in place or
as a copy) and :func:`apply_review` writes the dataset that follows from it:

``remove`` (the default: also for an empty cell, or a flagged sample with no row)
    the sample is left out;
``keep``
    the sample stays with its given label;
``relabel:<class>``
    the sample stays with the label ``<class>``, which must be one of the run's
    classes (``checkpoint/model.json``); a bare ``relabel`` takes the row's
    ``suggested_label`` (the model's prediction, or the runner-up class for a row the
    model fitted late).

Unflagged samples are always kept. Rows are matched to samples on ``index``
*and* ``path`` (image inputs) or ``row`` (feature tables), so a sorted or
filtered copy of the file works, and a row that does not match is an error.

Output folder (``out``)::

    cleaned/          image folder input: <class>/<image>; relabelled images in their new class
    cleaned.csv       CSV input: the input CSV's kept rows, new labels in the label column,
                      relative image paths rewritten to stay valid from ``out``
                      (another input format: what its plan writes, InputFormat.plan_apply)
    apply_log.csv     one row per flagged sample: what was done and where it went
    apply.json        counts and settings
    .labelclean-run   the marker and manifest (:mod:`labelclean.rundir`)

What the reviewed dataset is, and where each sample goes, is the input format's
(:mod:`labelclean.formats`: the run's ``origin`` names it); a Python object cannot
be read again and is refused.

Everything is validated before anything is written: a malformed edit raises
:class:`~labelclean.errors.LabelcleanError` naming the row, and ``out`` is then
untouched. The output is built beside ``out`` and swapped in when complete. The
run folder and the input are only read, and only files the run recorded: every
sample path is checked to stay inside the run's input, a run folder whose files
differ from its manifest is refused, and the ``'`` that guards spreadsheet
formulas in ``flagged_samples.csv`` is removed on reading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import rundir
from ._io import TEXT_ERRORS, write_csv, write_json
from ._version import __version__
from .errors import LabelcleanError
from .export import guard_formulas, unguard_cell
from .formats import FORMATS, ApplyPlan, read_options
from .paths import class_name_problem, within
from .rundir import REVIEW_FILE, RUN_FILE
from .runfiles import RunFolder, read_run
from .writers import DEFAULT_LINK, LINK_MODES

APPLY_FILE = "apply.json"
LOG_FILE = "apply_log.csv"
ACTIONS = ("remove", "keep", "relabel")


@dataclass(frozen=True)
class Decision:
    """What happens to one flagged sample.

    ``action`` is ``remove``, ``keep`` or ``relabel``; ``label`` is the label it
    ends up with (empty when removed); ``decided_by`` says which review row
    decided, or ``"default"`` when the sample had no row.
    """

    index: int
    action: str
    label: str
    decided_by: str


# ----------------------------------------------------------------------------- entry point


def apply_review(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    review_csv: str | os.PathLike | None = None,
    link: str = DEFAULT_LINK,
    overwrite: bool = False,
) -> dict:
    """Write the reviewed dataset of a run to ``out`` (layout: module docstring).

    Parameters
    ----------
    run_dir:
        A run folder written by ``labelclean run`` / :meth:`CleanResult.export`.
    out:
        The output folder: empty or absent, or, with ``overwrite``, a previous
        ``labelclean apply`` output. It must not overlap the run or the input.
    review_csv:
        An edited copy of ``flagged_samples.csv``; default: the run's own file.
    link:
        How ``cleaned/`` refers to the input images (image folder inputs only):
        ``"copy"`` (copy-on-write where possible), ``"hardlink"`` (copy when
        impossible) or ``"symlink"``; with a link, editing ``cleaned/`` edits
        the input.
    overwrite:
        Replace a previous apply output in ``out`` (only the files it wrote go,
        once the new output is complete).

    Returns
    -------
    dict
        The summary also written to ``out/apply.json``: counts of removed,
        kept, relabelled and unflagged samples, the final per-class counts, and
        the paths involved.

    Raises
    ------
    LabelcleanError
        For a malformed review (unknown action or class, a row matching no
        flagged sample, a duplicated sample), a changed input, or an unusable
        ``out``; nothing is written then.
    """
    if link not in LINK_MODES:
        raise LabelcleanError(f"--link must be one of {', '.join(LINK_MODES)}")
    run = _checked_run(run_dir)
    review_path = Path(review_csv) if review_csv is not None else run.root / REVIEW_FILE
    review = read_review(review_path, run)
    decisions = decide(run, review, review_path.name)
    out_path = Path(out).resolve()
    _check_review_outside(review_path, out_path)
    fmt = FORMATS.get(run.origin)
    if fmt is None or fmt.objects:
        raise LabelcleanError(
            f"the run's input was a Python object ({run.origin!r}), not a folder or CSV, "
            "so apply cannot re-read it; apply the review's action column to it in Python "
            "(its index column is each sample's position)"
        )
    # the input's format re-reads it and says what the reviewed dataset will be
    plan = fmt.plan_apply(run, final_labels(run, decisions), out_path)
    params = run.run.get("params", {})
    # Validation is over; from here on, only writing (beside `out`, then swapped in).
    with rundir.begin(out_path, kind="apply", overwrite=overwrite,
                      inputs=[run.root, *fmt.footprint(run.source, **read_options(params))]
                      ) as staging:
        folder = staging.path
        plan.write(folder, link)
        log = apply_log(run, decisions, plan)
        write_csv(folder / LOG_FILE, guard_formulas(log))
        summary = _summary(run, decisions, review_path, review, staging.out, link,
                           fmt.output, plan)
        write_json(folder / APPLY_FILE, summary)
        # no output more readable than the most private input file (labelclean.paths)
        staging.private_to([run.source, *plan.reads])
        staging.commit()
    return summary


# ----------------------------------------------------------------------------- reading


def _checked_run(run_dir: str | os.PathLike) -> RunFolder:
    """Read a run folder (:func:`labelclean.runfiles.read_run`) and check that
    apply can use it: it names its input, and its sample paths and classes
    stay inside their folders."""
    run = read_run(run_dir)
    if not isinstance(run.run.get("input"), dict) or "source" not in run.run["input"]:
        raise LabelcleanError(f"{run.root / RUN_FILE} is damaged: it names no input")
    _check_sample_ids(run)
    return run


def _check_sample_ids(run: RunFolder) -> None:
    """Every class must be a plain name (a folder name, where the input's format makes
    classes folders), and the samples must pass the format's own check
    (``InputFormat.check_samples``): an edited ``scores.csv`` or ``model.json`` must
    not make apply read or write outside its folders."""
    # the class-name policy labelclean run read them with (labelclean.paths)
    fmt = FORMATS.get(run.origin)
    folder = fmt is not None and fmt.class_folders
    for c in run.classes:
        problem = class_name_problem(c, folder=folder)
        if problem:
            raise LabelcleanError(f"the run's class {c!r} {problem}; refusing to use it")
    if fmt is not None:
        fmt.check_samples(run)


def read_review(path: Path, run: RunFolder) -> pd.DataFrame:
    """The review table, every cell as text (``"007"`` stays ``"007"``).

    Needs the columns ``index``, ``action`` and the sample's ``path``/``row``;
    a spreadsheet's UTF-8 byte-order mark is tolerated.
    """
    if not path.is_file():
        raise LabelcleanError(f"review file not found: {path}")
    try:
        review = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                             encoding_errors=TEXT_ERRORS)
    except pd.errors.EmptyDataError:
        raise LabelcleanError(f"{path} is empty (expected the columns of {REVIEW_FILE})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LabelcleanError(f"cannot parse {path} as CSV: {first}") from None
    review.columns = [str(c).strip() for c in review.columns]
    for column in ("index", run.id_column, "action"):
        if column not in review.columns:
            raise LabelcleanError(
                f"{path.name} has no {column!r} column (columns: {', '.join(review.columns)})"
            )
    # Undo the formula guard export wrote (a class named "-1" was written "'-1").
    for column in review.columns:
        review[column] = review[column].map(unguard_cell)
    return review


# ----------------------------------------------------------------------------- deciding


def parse_action(text: str, suggested: str | None, classes: list[str]) -> tuple[str, str | None]:
    """``(action, new_label)`` from an ``action`` cell; raises ValueError saying what is wrong.

    Keywords are case-insensitive; class names are matched exactly. An empty
    cell means ``remove``.
    """
    cell = text.strip()
    word, sep, target = cell.partition(":")
    word = word.strip().lower()
    if word in ("", "remove") and not sep:
        return "remove", None
    if word == "keep" and not sep:
        return "keep", None
    if word == "relabel":
        target = target.strip() if sep else (suggested or "").strip()
        if not target:
            raise ValueError(f"{cell!r} names no class: write relabel:<class>")
        if target not in classes:
            raise ValueError(
                f"unknown class {target!r} in {cell!r} (classes: {_some(classes)})"
            )
        return "relabel", target
    raise ValueError(f"unknown action {cell!r}: use remove, keep or relabel:<class>")


def decide(run: RunFolder, review: pd.DataFrame, name: str) -> dict[int, Decision]:
    """One :class:`Decision` per flagged sample, from the review rows and the defaults.

    Every review row is checked; the first problem is raised, naming its data
    row (1 = the first line after the header), with the count of the others.
    """
    samples = run.scores
    ids = samples["sample_id"].to_numpy()
    flagged = samples["flagged"].to_numpy()
    given = samples["given_label"].to_numpy()
    suggested = review["suggested_label"] if "suggested_label" in review.columns else None
    decisions: dict[int, Decision] = {}
    seen: dict[int, int] = {}
    problems: list[str] = []
    for i, (index_text, sample_id, action) in enumerate(
        zip(review["index"], review[run.id_column], review["action"], strict=True)
    ):
        row = i + 1
        where = f"{name} data row {row} (index {index_text.strip() or '?'}, {sample_id!r})"
        index = _whole_number(index_text)
        if index is None:
            problems.append(f"{where}: index {index_text!r} is not a whole number")
            continue
        if not 0 <= index < len(samples) or ids[index] != sample_id.strip():
            problems.append(f"{where}: no sample with this index and {run.id_column} in the run")
            continue
        if not flagged[index]:
            problems.append(
                f"{where}: this sample was not flagged; only flagged samples can be reviewed "
                "(unflagged ones are always kept)"
            )
            continue
        if index in seen:
            problems.append(f"{where}: duplicate of data row {seen[index]}")
            continue
        seen[index] = row
        hint = None if suggested is None else suggested.iloc[i]
        try:
            kind, label = parse_action(action, hint, run.classes)
        except ValueError as e:
            problems.append(f"{where}: {e}")
            continue
        final = "" if kind == "remove" else (label or given[index])
        decisions[index] = Decision(index, kind, final, f"{name} data row {row}")
    if problems:
        others = len(problems) - 1
        more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
        raise LabelcleanError(problems[0] + more)
    for index in np.flatnonzero(flagged):
        if int(index) not in decisions:
            decisions[int(index)] = Decision(int(index), "remove", "", "default")
    return decisions


def _whole_number(text: str) -> int | None:
    """``"12"`` -> 12; also ``"12.0"``, which spreadsheets like to write; else None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _some(classes: list[str], limit: int = 12) -> str:
    shown = ", ".join(classes[:limit])
    return shown + (f", … {len(classes) - limit} more" if len(classes) > limit else "")


def _check_review_outside(review: Path, out: Path) -> None:
    # --overwrite empties `out`: it must not hold the user's edited review.
    review = review.resolve()
    if within(review, out):
        raise LabelcleanError(f"--out {out} contains the review file {review}; choose another")


# ----------------------------------------------------------------------------- planning


def final_labels(run: RunFolder, decisions: dict[int, Decision]) -> np.ndarray:
    """Every sample's final label in index order; ``""`` for removed samples."""
    labels = run.scores["given_label"].to_numpy(dtype=object).copy()
    for d in decisions.values():
        labels[d.index] = d.label
    return labels


# ----------------------------------------------------------------------------- writing


def apply_log(run: RunFolder, decisions: dict[int, Decision], plan: ApplyPlan) -> pd.DataFrame:
    """``apply_log.csv``: one row per flagged sample, most suspicious first.

    Columns: ``rank``, ``index``, ``path``/``row``, ``given_label``, ``action``,
    ``new_label``, ``decided_by`` and ``destination`` (where the format's plan put
    it: the file under ``cleaned/``, the data row of ``cleaned.csv``...; empty when
    removed).
    """
    s = run.scores
    order = sorted(decisions, key=lambda i: int(s["rank"].iat[i]))
    where = plan.destinations
    return pd.DataFrame({
        "rank": [int(s["rank"].iat[i]) for i in order],
        "index": order,
        run.id_column: [s["sample_id"].iat[i] for i in order],
        "given_label": [s["given_label"].iat[i] for i in order],
        "action": [decisions[i].action for i in order],
        "new_label": [decisions[i].label for i in order],
        "decided_by": [decisions[i].decided_by for i in order],
        "destination": [where.get(i, "") for i in order],
    })


def _summary(
    run: RunFolder, decisions: dict[int, Decision], review_path: Path, review: pd.DataFrame,
    out: Path, link: str, output: str, plan: ApplyPlan,
) -> dict:
    actions = pd.Series([d.action for d in decisions.values()], dtype=object)
    labels = final_labels(run, decisions)
    final = pd.Series(labels[labels != ""]).value_counts()
    n, n_flagged = len(run.scores), len(decisions)
    removed = int((actions == "remove").sum())
    return {
        "labelclean_version": __version__,
        "run": str(run.root),
        "review": str(review_path.resolve()),
        "input": {k: run.run["input"].get(k) for k in ("source", "origin", "kind")},
        "out": str(out),
        "dataset": output,
        "link": link if plan.links else None,
        "samples": n,
        "flagged": n_flagged,
        "removed": removed,
        "kept_flagged": int((actions == "keep").sum()),
        "relabelled": int((actions == "relabel").sum()),
        "unflagged_kept": n - n_flagged,
        "final_samples": n - removed,
        "reviewed_rows": len(review),
        "defaulted_to_remove": sum(d.decided_by == "default" for d in decisions.values()),
        "unreadable_left_out": int(run.run["input"].get("unreadable", 0)),
        "per_class": {c: int(final.get(c, 0)) for c in run.classes},
    }
