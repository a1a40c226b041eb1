"""The built-in file formats: an image folder, a CSV of image paths, a CSV of features.

Each is one :class:`~labelclean.formats.InputFormat` (detection, reading, the
cleaned output, ``labelclean apply``), registered in detection order when the
package is imported:

``folder``
    An image folder ``root/<class>/<image>``; the class is the sub-folder name.
    A split root (``train/`` plus ``val/``...: :mod:`labelclean.folders`) is read
    as its ``train/``. A run writes ``cleaned/<class>/<image>``; apply moves a
    relabelled image into its new class's folder.
``paths``
    A CSV with a path column and a label column; relative paths resolve against
    the CSV's own folder. A run writes the kept rows as ``cleaned.csv``, paths
    rewritten to stay valid from the run folder; apply also writes new labels.
``features``
    Any other CSV: numeric feature columns plus a label column; written as
    ``paths`` is, without paths.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._io import write_csv
from .dataset import Dataset
from .errors import LabelcleanError
from .folders import TRAIN_SPLIT, scan_folder, split_layout
from .formats import ApplyPlan, InputFormat, register_format
from .paths import check_utf8_names, fit_name
from .rundir import SCORES_FILE
from .runfiles import RunFolder
from .sources import cache_dir, load_images, load_path_csv
from .tables import CSV_SUFFIXES, listed_images, load_feature_csv, read_csv
from .writers import ImageTreeWriter, PathTableWriter, TableWriter, paths_from, write_tree

log = logging.getLogger("labelclean")

# Each format below names its writer (labelclean.writers) first among its bases, so
# the writer's `output`, `write_cleaned` and `forbidden` are the ones used; the
# InputFormat side adds detection, reading and apply.


class FolderFormat(ImageTreeWriter, InputFormat):
    """An image folder, or a split root's ``train/`` (module docstring)."""

    name = "folder"
    class_folders = True

    def detect(self, source: Any, **options: Any) -> bool:
        return Path(source).is_dir()

    def read(self, source: Any, *, image_size: int | None = None,
             classes: list[str] | None = None, skip_unreadable: bool = False,
             workers: int | None = None, cache: str | os.PathLike | None = None,
             max_memory: int | None = None, **options: Any) -> Dataset:
        path = Path(source)
        if path.is_dir():
            splits = split_layout(path)
            if splits is not None:
                log.info("%s is a split root: training on %s", path, splits[TRAIN_SPLIT])
                path = splits[TRAIN_SPLIT]
        if not path.is_dir():
            raise LabelcleanError(f"--kind folder needs a directory, got a file: {path}")
        files, labels = scan_folder(path)
        ids = [f.relative_to(path).as_posix() for f in files]
        check_utf8_names(ids, path)
        return load_images(
            files, labels, ids, self.name, path, None, None, noise=None,
            image_size=image_size, classes=classes, skip_unreadable=skip_unreadable,
            workers=workers, cache=cache_dir(cache, path), max_memory=max_memory,
        )

    def check_samples(self, run: RunFolder) -> None:
        # every sample must be `<its class>/<file>` inside the input folder: an edited
        # scores.csv must not make apply read or write outside its folders
        for sample_id, label in zip(run.scores["sample_id"], run.scores["given_label"],
                                    strict=True):
            if not _is_plain_relative(sample_id) or sample_id.split("/")[0] != label:
                raise LabelcleanError(
                    f"{run.root / SCORES_FILE} names the sample {sample_id!r}, which is not a "
                    f"file of class {label!r} inside the run's input; refusing to use it"
                )

    def plan_apply(self, run: RunFolder, labels: np.ndarray, out: Path) -> ApplyPlan:
        plan = plan_folder(run, labels)
        folder_name = self.output

        def write(folder: Path, link: str) -> None:
            write_tree(zip(plan["source"], plan["target"]), folder / folder_name, link)

        return ApplyPlan(
            write,
            {int(i): f"{folder_name}/{t}" for i, t in zip(plan["index"], plan["target"],
                                                          strict=True)},
            reads=list(plan["source"]), links=True,
        )


class _TableFormat(InputFormat):
    """What the two CSV formats share: a file with a table's name ending."""

    def detect(self, source: Any, **options: Any) -> bool:
        path = Path(source)
        return not path.is_dir() and path.suffix.lower() in CSV_SUFFIXES

    def table_file(self, source: Any) -> Path:
        """``source``, refused when it is a folder (as ``--kind`` may force)."""
        path = Path(source)
        if path.is_dir():
            raise LabelcleanError(
                f"--kind {self.name} needs a CSV file, got a directory: {path}")
        return path


class FeaturesFormat(TableWriter, _TableFormat):
    """A CSV of numeric features and a label column: any CSV without the path column."""

    name = "features"

    def read(self, source: Any, *, path_column: str = "path", label_column: str = "label",
             noise_column: str | None = None, classes: list[str] | None = None,
             **options: Any) -> Dataset:
        path = self.table_file(source)
        table = read_csv(path, text_columns=(label_column, path_column))
        return load_feature_csv(path, table, label_column, noise_column, classes)

    def plan_apply(self, run: RunFolder, labels: np.ndarray, out: Path) -> ApplyPlan:
        table = plan_table(run, labels, out, paths=False)
        return _table_plan(self.output, table, labels)


class PathsFormat(PathTableWriter, _TableFormat):
    """A CSV with a path column (``path_column``) and a label column."""

    name = "paths"

    def detect(self, source: Any, *, path_column: str = "path", **options: Any) -> bool:
        return (super().detect(source)
                and path_column in read_csv(Path(source), nrows=0).columns)

    def read(self, source: Any, *, path_column: str = "path", label_column: str = "label",
             noise_column: str | None = None, image_size: int | None = None,
             classes: list[str] | None = None, skip_unreadable: bool = False,
             workers: int | None = None, cache: str | os.PathLike | None = None,
             max_memory: int | None = None, **options: Any) -> Dataset:
        path = self.table_file(source)
        table = read_csv(path, text_columns=(label_column, path_column))
        return load_path_csv(
            path, table, path_column, label_column, noise_column, image_size, classes,
            skip_unreadable, workers, cache_dir(cache, path.parent), max_memory,
        )

    def footprint(self, path: Path, *, path_column: str = "path",
                  **options: Any) -> list[Path]:
        # the images' folder too, read from the CSV before the run reads it
        return self.forbidden(path, listed_images(path, "paths", path_column))

    def plan_apply(self, run: RunFolder, labels: np.ndarray, out: Path) -> ApplyPlan:
        table = plan_table(run, labels, out, paths=True)
        return _table_plan(self.output, table, labels)


def _table_plan(output: str, table: pd.DataFrame, labels: np.ndarray) -> ApplyPlan:
    """Apply's plan for a table: ``table`` as ``output``."""

    def write(folder: Path, link: str) -> None:
        write_csv(folder / output, table)

    kept = np.flatnonzero(labels != "")
    return ApplyPlan(write, {int(i): f"{output} data row {n + 1}" for n, i in enumerate(kept)})


def _is_plain_relative(path: str) -> bool:
    """A relative POSIX path with no empty, ``.`` or ``..`` part."""
    if not path or path.startswith("/") or "\0" in path:
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


# ----------------------------------------------------------------------------- apply


def plan_folder(run: RunFolder, labels: np.ndarray) -> pd.DataFrame:
    """Where every kept image of a folder input goes (``labels``: each sample's final
    label, ``""`` when removed): columns ``index``, ``source`` (absolute file) and
    ``target`` (path under ``cleaned/``).

    A relabelled image moves to ``<new class>/<rest of its path>``; if another
    image already has that name there, ``__from_<old class>`` (and a counter if
    needed) is added before the extension so nothing is overwritten.
    """
    ids = run.scores["sample_id"].to_numpy()
    kept = [i for i in range(len(ids)) if labels[i] != ""]
    used = {ids[i] for i in kept if run.scores["given_label"].iat[i] == labels[i]}
    rows = []
    for i in kept:
        target = ids[i]
        if labels[i] != run.scores["given_label"].iat[i]:
            target = _free_name(_move_to_class(ids[i], labels[i]), ids[i], used)
            used.add(target)
        rows.append((i, run.source / ids[i], target))
    plan = pd.DataFrame(rows, columns=["index", "source", "target"])
    missing = [str(s) for s in plan["source"] if not Path(s).is_file()]
    if missing:
        raise LabelcleanError(
            f"{len(missing)} input images are gone since the run (first: {missing[0]}); "
            "the input must not change between run and apply"
        )
    return plan


def _move_to_class(sample_id: str, label: str) -> str:
    parts = sample_id.split("/")
    return "/".join([label, *parts[1:]])


def _free_name(target: str, sample_id: str, used: set[str]) -> str:
    """``target``, or, when another image has that name, ``__from_<old class>``
    (and a counter) added before the extension, the file name shortened to the
    filesystem's limit when that makes it too long (``paths.fit_name``; the
    destination is in apply_log.csv)."""
    if target not in used:
        return target
    old_class = sample_id.split("/")[0]
    folder, _, name = target.rpartition("/")
    prefix = f"{folder}/" if folder else ""
    candidate, k = prefix + fit_name(name, f"__from_{old_class}"), 2
    while candidate in used:
        candidate, k = prefix + fit_name(name, f"__from_{old_class}_{k}"), k + 1
    return candidate


def plan_table(run: RunFolder, labels: np.ndarray, out: Path, *, paths: bool) -> pd.DataFrame:
    """The cleaned CSV: the input CSV's rows of kept samples (``labels``: each
    sample's final label, ``""`` when removed), in input order, with the final
    labels in the label column and, for a CSV of ``paths``, relative image paths
    rewritten to be valid from ``out`` (:func:`labelclean.writers.paths_from`)."""
    if not run.source.is_file():
        raise LabelcleanError(f"the run's input {run.source} is gone")
    params = run.run.get("params", {})
    label_column = params.get("label_column", "label")
    path_column = params.get("path_column", "path")
    table = read_csv(run.source, text_columns=(label_column, path_column))
    if label_column not in table.columns:
        raise LabelcleanError(f"{run.source.name} has no label column {label_column!r} any more")
    rows = _table_rows(run, table, path_column if paths else None)
    keep = labels != ""
    cleaned = table.iloc[rows[keep]].copy()
    # Object column: a relabel writes the class name as text into, say, an int column.
    cleaned[label_column] = cleaned[label_column].astype(object)
    changed = keep & (labels != run.scores["given_label"].to_numpy(dtype=object))
    if changed.any():
        position = np.cumsum(keep) - 1  # sample index -> row of `cleaned`
        cleaned.iloc[position[changed], cleaned.columns.get_loc(label_column)] = labels[changed]
    if paths:
        cleaned[path_column] = paths_from(cleaned[path_column], run.source.resolve().parent,
                                          out)
    return cleaned.reset_index(drop=True)


def _table_rows(run: RunFolder, table: pd.DataFrame, path_column: str | None) -> np.ndarray:
    """The input CSV row of every sample, in index order.

    Feature tables (no ``path_column``): sample ``i`` is row ``i``. Path CSVs:
    samples are the rows in order minus the unreadable images a
    ``--skip-unreadable`` run left out, so a single ordered pass over the rows,
    matching paths, recovers them.
    """
    ids = run.scores["sample_id"].to_numpy()
    if path_column is None:
        if len(table) != len(ids):
            raise LabelcleanError(
                f"{run.source.name} has {len(table)} rows but the run had {len(ids)} samples; "
                "the input must not change between run and apply"
            )
        return np.arange(len(ids))
    if path_column not in table.columns:
        raise LabelcleanError(f"{run.source.name} has no path column {path_column!r} any more")
    paths = table[path_column].astype(str).to_numpy()
    rows = np.empty(len(ids), dtype=np.int64)
    k = 0
    for r, p in enumerate(paths):
        if k < len(ids) and p == ids[k]:
            rows[k] = r
            k += 1
    if k != len(ids):
        raise LabelcleanError(
            f"{run.source.name} no longer lists the run's sample {ids[k]!r} in order; "
            "the input must not change between run and apply"
        )
    return rows


register_format(FolderFormat())
register_format(PathsFormat())
register_format(FeaturesFormat())
