"""Tables as inputs: reading a CSV, its label and noise columns, and a table of
numeric features into a :class:`~labelclean.dataset.Dataset`.

A table of image paths shares all of this and then decodes the images it lists
(:func:`labelclean.sources.load_path_csv`). Which table is which is the input
formats' choice (:mod:`labelclean.fileformats`): one with the path column is a
table of paths, any other a table of features.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .dataset import CLASS_ORDER, Dataset
from .errors import LabelcleanError
from .labels import class_list, encode_labels, label_name
from .paths import check_class_names

#: File name endings read as tables when the kind is detected.
CSV_SUFFIXES = frozenset({".csv", ".tsv", ".txt"})


def read_csv(
    path: Path, nrows: int | None = None, text_columns: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read a CSV input. In ``text_columns`` (labels, paths) only an empty cell
    is missing: ``NA``, ``None``, ``null``, ``NaN`` or ``n/a`` are class names
    like any other, kept as written; other columns parse as pandas does."""
    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        table = pd.read_csv(path, sep=sep, nrows=nrows)
        text = [c for c in text_columns if c in table.columns]
        if text and len(table):
            raw = pd.read_csv(path, sep=sep, nrows=nrows, usecols=text, dtype=str,
                              keep_default_na=False, na_values=[""])
            for column in text:
                table[column] = raw[column].astype(object)
        return table
    except pd.errors.EmptyDataError:
        raise LabelcleanError(f"{path} is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LabelcleanError(f"cannot parse {path} as CSV: {first}") from None


def listed_images(
    source: str | os.PathLike, kind: str = "auto", path_column: str = "path"
) -> list[Path]:
    """The image files a CSV of paths lists (resolved against its folder); empty
    for any other input. Read before training so that ``--out`` can be kept out
    of the image tree; problems with the CSV are left for ``load_dataset``."""
    path = Path(source)
    if not path.is_file() or kind not in ("auto", "paths"):
        return []
    if kind == "auto" and path.suffix.lower() not in CSV_SUFFIXES:
        return []
    try:
        table = read_csv(path, text_columns=(path_column,))
    except LabelcleanError:
        return []
    if path_column not in table.columns:
        return []
    return [
        Path(p) if os.path.isabs(p) else path.parent / p
        for p in table[path_column].astype(str) if p.strip()
    ]


def table_labels(table: pd.DataFrame, label_column: str, path: Path) -> pd.Series:
    """The table's labels as class names; a missing column, an empty cell or a class
    name against the policy (:func:`labelclean.paths.check_class_names`) is refused."""
    if label_column not in table.columns:
        raise LabelcleanError(
            f"{path.name} has no label column {label_column!r} "
            f"(columns: {', '.join(map(str, table.columns))}); pass --label-column"
        )
    labels = table[label_column]
    missing = labels.isna() | (labels.astype(str).str.strip() == "")
    if missing.any():
        row = int(np.flatnonzero(missing.to_numpy())[0])
        raise LabelcleanError(
            f"{path.name}: {int(missing.sum())} rows have no label (first: data row {row + 1})"
        )
    # the cells as written: "a" and "a " would become one class once stripped
    raw = [v if isinstance(v, str) else label_name(v) for v in pd.unique(labels)]
    check_class_names(raw, f"{path.name}: label", folder=False)
    return labels.map(label_name)


def table_noise(table: pd.DataFrame, column: str | None, path: Path) -> np.ndarray | None:
    """The trusted "this label is wrong" column as booleans (None without one)."""
    if column is None:
        return None
    if column not in table.columns:
        raise LabelcleanError(f"{path.name} has no noise column {column!r}")
    values = table[column].astype(str).str.strip().str.lower()
    truthy, falsy = {"1", "true", "yes", "1.0"}, {"0", "false", "no", "0.0"}
    bad = ~values.isin(truthy | falsy)
    if bad.any():
        raise LabelcleanError(
            f"{path.name}: noise column {column!r} must be 0/1 or true/false "
            f"(data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1})"
        )
    return values.isin(truthy).to_numpy()


def load_feature_csv(
    path: Path,
    table: pd.DataFrame,
    label_column: str,
    noise_column: str | None,
    classes: list[str] | None,
) -> Dataset:
    """A table of numeric feature columns and a label column (``path`` names it in
    messages); every column but the label and noise ones is a feature."""
    if len(table) == 0:
        raise LabelcleanError(f"{path.name} has no rows")
    labels = table_labels(table, label_column, path)
    noise = table_noise(table, noise_column, path)
    feature_cols = [c for c in table.columns if c not in {label_column, noise_column}]
    if not feature_cols:
        raise LabelcleanError(f"{path.name} has no feature columns besides {label_column!r}")
    non_numeric = [str(c) for c in feature_cols if not pd.api.types.is_numeric_dtype(table[c])]
    if non_numeric:
        raise LabelcleanError(
            f"{path.name}: feature columns must be numeric, not: {', '.join(non_numeric[:5])}"
            " (for a CSV of image paths, name its column with --path-column)"
        )
    x = table[feature_cols].to_numpy(dtype=np.float32)
    if not np.isfinite(x).all():
        row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise LabelcleanError(f"{path.name}: missing or infinite feature in data row {row + 1}")
    class_names = class_list(labels, classes, path)
    y = encode_labels(labels, class_names, path)
    return Dataset(
        kind="features", x=torch.tensor(x), y=y, classes=class_names,
        ids=[f"row {i}" for i in range(len(table))], origin="features", source=path,
        rows=np.arange(len(table)), table=table, noise_mask=noise,
        class_order=CLASS_ORDER if classes is None else "given",
    )


