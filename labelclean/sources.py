"""Data sources: turn what the user points at into one in-memory :class:`Dataset`.

Three kinds of input are understood, detected from the path unless forced:

``folder``
    An image folder ``root/<class>/<image>``; the class is the sub-folder name.
``paths``
    A CSV with a path column and a label column; relative paths resolve against
    the CSV's own folder.
``features``
    A CSV of numeric feature columns plus a label column.

Objects already in Python are read through the same :func:`load_dataset`
(see :mod:`labelclean.inmemory`): a pandas ``DataFrame`` of paths and labels,
a Hugging Face ``datasets.Dataset`` with an image and a label column, and a
torch ``Dataset`` yielding ``(image, label)``.

A folder whose only sub-folders are splits (``train/`` plus ``val/``,
``valid/`` or ``test/``), each holding class folders, is a *split root*
(:func:`split_layout`): ``train/`` is read as the training data, and
:meth:`labelclean.Cleaner.fit` takes ``val/`` (or ``valid/``) as the
validation set when none is given. ``test/`` is never read.

Class names are sorted lexically (``"1" < "10" < "2"``), as torchvision's
``ImageFolder`` and cleanlab sort them, so class indices agree with their
``class_to_idx``; labels given as integer indices (a torch or Hugging Face
dataset) keep their indices.

Images are decoded once, in parallel, into one ``uint8`` tensor of shape
``(N, C, H, W)``; training then slices batches out of it instead of touching
PIL again, which keeps the per-step cost the model's. Grayscale, RGB, RGBA and
palette images are all accepted: if every image is grayscale the tensor has one
channel, otherwise three (alpha is composited onto white).

Nothing here writes under the input: it is only ever read. With ``cache``,
the decoded tensor is also saved to (and next time read from) a folder the
user names, outside the input, keyed by the files' paths, sizes and
modification times, so a second run over the same images skips decoding.

Images too many or too large to hold in memory (more than ``max_memory``
bytes decoded, by default a quarter of the machine's RAM) are decoded once,
streaming, into a ``uint8`` file in the cache folder and memory-mapped from
there: ``Dataset.x`` is then a tensor over that file (``Dataset.mapped``), the
operating system pages batches in, and the trainer gathers them in
``DataLoader`` workers (``Trainer(workers=...)``). Without a cache folder such
an input is refused with a message that says how much memory it needs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .errors import LabelcleanError
from .paths import check_class_names, check_input, check_outside, check_utf8_names, image_roots

log = logging.getLogger("labelclean")

#: Images of more pixels than this (8192 x 8192) are unreadable files, whatever
#: their header's format: a 200-byte file can claim 30000 x 30000 pixels (a
#: "decompression bomb"). Below PIL's own warning limit, so PIL never warns
#: about an image labelclean would decode; its warning for the larger ones
#: (which labelclean refuses anyway) is silenced.
MAX_IMAGE_PIXELS = 2**26
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

#: Share of physical memory the decoded images may take before they are memory-mapped.
MEMORY_FRACTION = 0.25
#: Images decoded per chunk on the memory-mapped path (bounds the decoder's memory).
_DECODE_CHUNK = 1024

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: Images whose sides are all at most this are kept at their native size by default.
MAX_NATIVE_SIZE = 64

SourceKind = Literal["auto", "folder", "paths", "features"]

#: Sub-folder names that make a folder a split root (see :func:`split_layout`).
TRAIN_SPLIT = "train"
VAL_SPLITS = ("val", "valid", "validation")
SPLIT_NAMES = frozenset({TRAIN_SPLIT, *VAL_SPLITS, "test"})
#: How class names are ordered into indices (recorded in run.json).
CLASS_ORDER = "lexical"


@dataclass
class Dataset:
    """A labelled dataset held in memory.

    Attributes
    ----------
    kind:
        ``"images"`` (``x`` is ``uint8`` of shape ``(N, C, H, W)``) or
        ``"features"`` (``x`` is ``float32`` of shape ``(N, D)``).
    x:
        The inputs, as a CPU tensor.
    y:
        Given (possibly wrong) labels, ``int64`` indices into ``classes``.
    classes:
        Class names, in index order.
    ids:
        One human-readable identifier per sample: the path relative to the
        folder root (or as written in the CSV), or ``row <i>`` for features.
    origin:
        ``"folder"``, ``"paths"`` or ``"features"`` (files), ``"dataframe"``,
        ``"hf"``, ``"torch"`` or ``"arrays"`` (Python objects): how the data was read.
    source:
        The folder or CSV file the data came from; for a DataFrame the folder
        its relative paths resolve against; ``.`` for other objects.
    files:
        Absolute file of every sample (images only).
    rows:
        Row of the source CSV every sample came from (CSV inputs only).
    table:
        The source CSV as read (CSV inputs only), so that a cleaned copy keeps
        every column the user had.
    unreadable:
        Images that could not be decoded and were left out, with the reason
        (``path``, ``reason``); empty unless ``skip_unreadable`` was set.
    noise_mask:
        A trusted boolean "this label is wrong" per sample, when the user gave
        one (for research and benchmarks only; never used to decide).
    mapped:
        ``x`` is memory-mapped from a decoded-image file in the cache folder
        rather than held in memory (see the module docstring).
    class_order:
        How ``classes`` were ordered into indices: ``"lexical"`` (names sorted,
        :data:`CLASS_ORDER`), ``"given"`` (a ``classes`` list passed in, e.g.
        the training set's for a validation set) or ``"dataset"`` (integer
        labels of a Python dataset kept as they were).
    """

    kind: Literal["images", "features"]
    x: torch.Tensor
    y: np.ndarray
    classes: list[str]
    ids: list[str]
    origin: str
    source: Path
    files: list[Path] | None = None
    rows: np.ndarray | None = None
    table: pd.DataFrame | None = None
    unreadable: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"path": [], "reason": []})
    )
    noise_mask: np.ndarray | None = None
    mapped: bool = False
    class_order: str = CLASS_ORDER

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray | torch.Tensor,
        y: np.ndarray,
        classes: list[str] | None = None,
        noise_mask: np.ndarray | None = None,
    ) -> Dataset:
        """Wrap in-memory data: ``uint8`` images ``(N, H, W)`` or ``(N, C, H, W)``,
        or float features ``(N, D)``, with integer labels ``y``."""
        xt = torch.as_tensor(np.asarray(x))
        if xt.dtype == torch.uint8:
            if xt.dim() == 3:
                xt = xt[:, None]
            if xt.dim() != 4:
                raise LabelcleanError(
                    f"uint8 images must be (N, H, W) or (N, C, H, W), got {tuple(xt.shape)}"
                )
            kind: Literal["images", "features"] = "images"
        else:
            xt = xt.float().reshape(len(xt), -1)
            kind = "features"
        y = np.asarray(y, dtype=np.int64)
        if len(y) != len(xt):
            raise LabelcleanError(f"{len(xt)} inputs but {len(y)} labels")
        if classes is None:
            classes = [str(c) for c in range(int(y.max()) + 1)]
        names = np.asarray(classes, dtype=object)
        return cls(
            kind=kind, x=xt.contiguous(), y=y, classes=list(classes),
            ids=[str(i) for i in range(len(y))], origin="arrays", source=Path("."),
            # `index, label`: what an export's cleaned.csv lists for in-memory data
            rows=np.arange(len(y)), table=pd.DataFrame({"index": np.arange(len(y)),
                                                        "label": names[y]}),
            noise_mask=None if noise_mask is None else np.asarray(noise_mask, dtype=bool),
            class_order="given" if classes is not None else "dataset",
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, index: np.ndarray) -> Dataset:
        """The samples at ``index``, sharing nothing mutable with ``self``."""
        index = np.asarray(index)
        return Dataset(
            kind=self.kind,
            x=self.x[torch.as_tensor(index, dtype=torch.long)],
            y=self.y[index].copy(),
            classes=list(self.classes),
            ids=[self.ids[i] for i in index],
            origin=self.origin,
            source=self.source,
            files=None if self.files is None else [self.files[i] for i in index],
            rows=None if self.rows is None else self.rows[index].copy(),
            table=self.table,
            unreadable=self.unreadable,
            noise_mask=None if self.noise_mask is None else self.noise_mask[index].copy(),
            class_order=self.class_order,
        )


def load_dataset(
    source: str | os.PathLike | Any,
    kind: SourceKind = "auto",
    *,
    path_column: str = "path",
    label_column: str = "label",
    image_column: str = "image",
    root: str | os.PathLike | None = None,
    noise_column: str | None = None,
    image_size: int | None = None,
    classes: list[str] | None = None,
    skip_unreadable: bool = False,
    workers: int | None = None,
    cache: str | os.PathLike | None = None,
    max_memory: int | None = None,
) -> Dataset:
    """Read a folder or CSV into a :class:`Dataset`.

    Parameters
    ----------
    source:
        An image folder (or a split root, whose ``train/`` is read), a CSV of
        paths and labels, a CSV of features and labels, or a Python object: a
        pandas ``DataFrame`` of paths and labels, a Hugging Face
        ``datasets.Dataset``, or a torch ``Dataset`` of ``(image, label)``
        (:mod:`labelclean.inmemory`).
    kind:
        ``"auto"`` picks ``folder`` for a directory, ``paths`` for a CSV that has
        ``path_column``, and ``features`` for any other CSV.
    path_column, label_column:
        Column names in a CSV input or a DataFrame; ``label_column`` also names
        a Hugging Face dataset's label column.
    image_column:
        A Hugging Face dataset's image column.
    root:
        The folder a DataFrame's relative paths resolve against (default: the
        current folder). Other inputs ignore it.
    noise_column:
        Optional CSV column of 0/1 (or true/false) marking labels known to be
        wrong: a trusted indicator for research, reported beside the detector's
        own split, never used to make a decision.
    image_size:
        Side, in pixels, that every image is resized to (square). ``None`` keeps
        the native size when all images share it and no side exceeds
        ``MAX_NATIVE_SIZE``; otherwise images are resized to ``MAX_NATIVE_SIZE``.
    classes:
        Class names to index labels by (a validation set passes the training
        set's). ``None`` takes the sorted set of labels found.
    skip_unreadable:
        Leave images that cannot be decoded out, listing them in
        ``Dataset.unreadable``; by default one is an error.
    workers:
        Threads used to decode images (default: the CPU count).
    cache:
        A folder for decoded images (created if missing; must not lie inside
        the input). The decoded ``uint8`` tensor is stored there as
        ``images-<key>.npz``, where the key hashes every image's path, size
        and modification time plus ``image_size``; a later call with the same
        files loads it instead of decoding. Any change to a file makes a new
        key, so a stale cache is never used. Unreadable images are cached as
        unreadable (and still reported). Ignored for feature tables.
    max_memory:
        Bytes the decoded images may take in memory (default: a quarter of
        physical RAM, :func:`default_max_memory`). Above it they are decoded
        once into ``images-<key>.u8.npy`` in ``cache`` and memory-mapped
        (``Dataset.mapped``); without ``cache`` that is an error.

    Raises
    ------
    LabelcleanError
        For any problem with the input, with a one-line message.
    """
    if not isinstance(source, (str, os.PathLike)):
        if _object_reader is None:  # pragma: no cover - the package registers one on import
            raise LabelcleanError(f"cannot read a {type(source).__name__}: no object reader")
        return _object_reader(
            source, path_column=path_column, label_column=label_column,
            image_column=image_column, root=root, noise_column=noise_column,
            image_size=image_size, classes=classes, skip_unreadable=skip_unreadable,
            workers=workers, cache=cache, max_memory=max_memory,
        )
    path = check_input(source)
    if path.is_dir() and kind in ("auto", "folder"):
        splits = split_layout(path)
        if splits is not None:
            log.info("%s is a split root: training on %s", path, splits[TRAIN_SPLIT])
            path = splits[TRAIN_SPLIT]
    if kind == "auto":
        if path.is_dir():
            kind = "folder"
        elif path.suffix.lower() in {".csv", ".tsv", ".txt"}:
            columns = read_csv(path, nrows=0).columns
            kind = "paths" if path_column in columns else "features"
        else:
            raise LabelcleanError(
                f"{path} is neither a folder nor a .csv file; pass --kind to say what it is"
            )
    if kind == "folder":
        if not path.is_dir():
            raise LabelcleanError(f"--kind folder needs a directory, got a file: {path}")
        files, labels = _scan_folder(path)
        ids = [f.relative_to(path).as_posix() for f in files]
        check_utf8_names(ids, path)
        return _load_images(
            files, labels, ids, "folder", path, None, None, noise=None,
            image_size=image_size, classes=classes, skip_unreadable=skip_unreadable,
            workers=workers, cache=cache_dir(cache, path), max_memory=max_memory,
        )
    if path.is_dir():
        raise LabelcleanError(f"--kind {kind} needs a CSV file, got a directory: {path}")
    table = read_csv(path, text_columns=(label_column, path_column))
    if kind == "paths":
        return load_path_csv(
            path, table, path_column, label_column, noise_column, image_size, classes,
            skip_unreadable, workers, cache_dir(cache, path.parent), max_memory,
        )
    if kind == "features":
        return load_feature_csv(path, table, label_column, noise_column, classes)
    raise LabelcleanError(f"unknown input kind {kind!r}: use auto, folder, paths or features")


#: Reads inputs that are Python objects rather than paths (a DataFrame, a Hugging
#: Face or torch dataset): :func:`labelclean.inmemory.load_object`, registered by
#: that module when the package is imported, so that this module, which it builds
#: on, does not import it back.
_object_reader: Callable[..., Dataset] | None = None


def register_object_reader(reader: Callable[..., Dataset]) -> None:
    """Make ``reader(obj, **settings)`` what :func:`load_dataset` reads Python objects with."""
    global _object_reader
    _object_reader = reader


def split_layout(root: str | os.PathLike) -> dict[str, Path] | None:
    """The splits of a split root, ``{"train": root/train, "val": root/val, ...}``
    (keys as the folders are named), or None for an ordinary class folder.

    A split root's visible sub-folders are all split names (``train`` plus
    ``val``, ``valid``, ``validation`` or ``test``), and each holds class
    folders rather than images: a dataset whose classes happen to be called
    ``train`` and ``test`` (images directly inside) is not one.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    names = {d.name.lower() for d in subdirs}
    if TRAIN_SPLIT not in names or len(names) < 2 or not names <= SPLIT_NAMES:
        return None
    for d in subdirs:
        children = [c for c in d.iterdir() if not c.name.startswith(".")]
        if not children or not all(c.is_dir() for c in children):
            return None
    return {d.name.lower(): d for d in sorted(subdirs)}


def split_validation(root: str | os.PathLike) -> Path | None:
    """The validation folder of a split root (``val/``, ``valid/`` or ``validation/``)."""
    splits = split_layout(root) if isinstance(root, (str, os.PathLike)) else None
    if not splits:
        return None
    return next((splits[v] for v in VAL_SPLITS if v in splits), None)


# --------------------------------------------------------------------------- CSV inputs


def listed_images(
    source: str | os.PathLike, kind: str = "auto", path_column: str = "path"
) -> list[Path]:
    """The image files a CSV of paths lists (resolved against its folder); empty
    for any other input. Read before training so that ``--out`` can be kept out
    of the image tree; problems with the CSV are left for :func:`load_dataset`."""
    path = Path(source)
    if not path.is_file() or kind not in ("auto", "paths"):
        return []
    if kind == "auto" and path.suffix.lower() not in {".csv", ".tsv", ".txt"}:
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


def _labels_column(table: pd.DataFrame, label_column: str, path: Path) -> pd.Series:
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


def _noise_column(table: pd.DataFrame, noise_column: str | None, path: Path) -> np.ndarray | None:
    if noise_column is None:
        return None
    if noise_column not in table.columns:
        raise LabelcleanError(f"{path.name} has no noise column {noise_column!r}")
    values = table[noise_column].astype(str).str.strip().str.lower()
    truthy, falsy = {"1", "true", "yes", "1.0"}, {"0", "false", "no", "0.0"}
    bad = ~values.isin(truthy | falsy)
    if bad.any():
        raise LabelcleanError(
            f"{path.name}: noise column {noise_column!r} must be 0/1 or true/false "
            f"(data row {int(np.flatnonzero(bad.to_numpy())[0]) + 1})"
        )
    return values.isin(truthy).to_numpy()


def load_path_csv(
    path: Path,
    table: pd.DataFrame,
    path_column: str,
    label_column: str,
    noise_column: str | None,
    image_size: int | None,
    classes: list[str] | None,
    skip_unreadable: bool,
    workers: int | None,
    cache: Path | None = None,
    max_memory: int | None = None,
    *,
    base: Path | None = None,
    origin: str = "paths",
    source: Path | None = None,
) -> Dataset:
    """Images listed in ``table``. ``path`` names the table in messages; relative
    paths resolve against ``base`` (default: ``path``'s folder); ``source`` is
    what the dataset records it came from (default: ``path``)."""
    if path_column not in table.columns:
        raise LabelcleanError(f"{path.name} has no path column {path_column!r}; pass --path-column")
    if len(table) == 0:
        raise LabelcleanError(f"{path.name} has no rows")
    labels = _labels_column(table, label_column, path)
    raw = table[path_column]
    if raw.isna().any():
        row = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise LabelcleanError(f"{path.name}: empty path in data row {row + 1}")
    base = path.parent if base is None else base
    files = [(base / p) if not os.path.isabs(p) else Path(p) for p in raw.astype(str)]
    missing = [str(p) for p, f in zip(raw.astype(str), files) if not f.is_file()]
    if missing:
        raise LabelcleanError(
            f"{path.name}: {len(missing)} image paths do not exist (first: {missing[0]})"
        )
    noise = _noise_column(table, noise_column, path)
    if cache is not None:
        # never inside the tree the images share (labelclean.paths), as for --out
        check_outside(cache, image_roots(files), "--cache")
    return _load_images(
        files, list(labels), list(raw.astype(str)), origin, source or path, table,
        np.arange(len(table)), noise=noise, image_size=image_size, classes=classes,
        skip_unreadable=skip_unreadable, workers=workers, cache=cache, max_memory=max_memory,
    )


def load_feature_csv(
    path: Path,
    table: pd.DataFrame,
    label_column: str,
    noise_column: str | None,
    classes: list[str] | None,
) -> Dataset:
    if len(table) == 0:
        raise LabelcleanError(f"{path.name} has no rows")
    labels = _labels_column(table, label_column, path)
    noise = _noise_column(table, noise_column, path)
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
    class_names = _class_list(labels, classes, path)
    y = _encode(labels, class_names, path)
    return Dataset(
        kind="features", x=torch.tensor(x), y=y, classes=class_names,
        ids=[f"row {i}" for i in range(len(table))], origin="features", source=path,
        rows=np.arange(len(table)), table=table, noise_mask=noise,
        class_order=CLASS_ORDER if classes is None else "given",
    )


# --------------------------------------------------------------------------- image inputs


def _scan_folder(root: Path) -> tuple[list[Path], list[str]]:
    class_dirs = sorted(
        (d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
        key=lambda d: class_sort_key(d.name),
    )
    if not class_dirs:
        raise LabelcleanError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
    if len(class_dirs) < 2:
        raise LabelcleanError(
            f"{root} has a single class ({class_dirs[0].name}); at least two are needed"
        )
    check_class_names([d.name for d in class_dirs], f"{root}: class folder", folder=True)
    files: list[Path] = []
    labels: list[str] = []
    for d in class_dirs:
        found = sorted(
            (
                f for f in d.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(d).parts)
            ),
            key=lambda f: f.relative_to(d).as_posix(),
        )
        if not found:
            raise LabelcleanError(f"class folder {d.name!r} has no images")
        files.extend(found)
        labels.extend([d.name] * len(found))
    return files, labels


def _load_images(
    files: list[Path],
    labels: list[str],
    ids: list[str],
    origin: str,
    source: Path,
    table: pd.DataFrame | None,
    rows: np.ndarray | None,
    *,
    noise: np.ndarray | None,
    image_size: int | None,
    classes: list[str] | None,
    skip_unreadable: bool,
    workers: int | None,
    cache: Path | None = None,
    max_memory: int | None = None,
) -> Dataset:
    if image_size is not None and image_size < 8:
        raise LabelcleanError(f"--image-size must be at least 8, got {image_size}")
    threads = workers or os.cpu_count() or 1
    key = None if cache is None else _cache_key(files, image_size)
    cached = None if cache is None else _read_cache(cache / f"images-{key}.npz")
    mapped = False
    if cached is None and cache is not None:
        cached = _read_mapped(cache, key)
        mapped = cached is not None
    if cached is None:
        sizes = _probe_all(files, threads)
        w, h = target_size(sizes, image_size)
        limit = default_max_memory() if max_memory is None else int(max_memory)
        # colour is only known once decoded: budget for three channels
        need = 3 * w * h * sum(not isinstance(s, str) for s in sizes)
        if need > limit:
            if cache is None:
                raise LabelcleanError(
                    f"the decoded images need {format_size(need)}, more than the "
                    f"{format_size(limit)} "
                    "allowed in memory (--max-memory); pass --cache DIR to decode them once "
                    "to a memory-mapped file there, or a smaller --image-size"
                )
            x, keep, reasons = _decode_mapped(files, sizes, (w, h), threads, cache, key)
            mapped = True
        else:
            x, keep, reasons = _decode_all(files, sizes, (w, h), threads)
            if cache is not None:
                _write_cache(cache / f"images-{key}.npz", x, keep, reasons)
    else:
        x, keep, reasons = cached
    bad = [(ids[i], r) for i, r in enumerate(reasons) if r]
    if bad and not skip_unreadable:
        raise LabelcleanError(
            f"{len(bad)} unreadable images (first: {bad[0][0]}: {bad[0][1]}); "
            "pass --skip-unreadable to leave them out and list them in the report"
        )
    if not len(keep):
        raise LabelcleanError(f"none of the {len(files)} images in {source} could be read")
    keep = [int(i) for i in keep]
    kept_labels = [labels[i] for i in keep]
    class_names = _class_list(pd.Series(kept_labels), classes, source)
    if classes is None:
        lost = sorted(set(labels) - set(kept_labels), key=_natural_key)
        if lost:
            raise LabelcleanError(f"class {lost[0]!r} has no readable images")
        if len(class_names) < 2:
            raise LabelcleanError(f"{source} has a single class ({class_names[0]}); need two")
    y = _encode(pd.Series(kept_labels), class_names, source)
    return Dataset(
        kind="images",
        x=torch.from_numpy(x if mapped else np.ascontiguousarray(x)),
        y=y,
        classes=class_names,
        ids=[ids[i] for i in keep],
        origin=origin,
        source=source,
        files=[files[i] for i in keep],
        rows=None if rows is None else rows[keep],
        table=table,
        unreadable=pd.DataFrame({"path": [b[0] for b in bad], "reason": [b[1] for b in bad]}),
        noise_mask=None if noise is None else noise[keep],
        mapped=mapped,
        class_order=CLASS_ORDER if classes is None else "given",
    )


def default_max_memory() -> int:
    """:data:`MEMORY_FRACTION` of physical memory, in bytes (4 GiB if unknown)."""
    try:
        return int(MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def format_size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _probe_all(files: list[Path], workers: int) -> list[tuple[int, int] | str]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_probe_size, files))


def target_size(sizes: list[tuple[int, int] | str], image_size: int | None) -> tuple[int, int]:
    """``(width, height)`` every image is decoded to (see ``load_dataset``)."""
    if image_size is not None:
        return image_size, image_size
    unique = {s for s in sizes if not isinstance(s, str)}
    if len(unique) == 1 and max(next(iter(unique))) <= MAX_NATIVE_SIZE:
        return next(iter(unique))
    return MAX_NATIVE_SIZE, MAX_NATIVE_SIZE


def _decode_all(
    files: list[Path], sizes: list[tuple[int, int] | str], target: tuple[int, int], workers: int
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every file in memory: ``(x, keep, reasons)``, ``x`` holding the
    readable ones as ``(n, C, H, W)`` uint8, ``keep`` their indices,
    ``reasons[i]`` empty for a readable file and the error otherwise."""
    w, h = target
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(
            pool.map(lambda fs: _decode(fs[0], fs[1], (w, h)), zip(files, sizes))
        )
    reasons = [d if isinstance(d, str) else "" for d in decoded]
    keep = np.array([i for i, d in enumerate(decoded) if not isinstance(d, str)], dtype=np.int64)
    return stack_images([decoded[i] for i in keep], (w, h)), keep, reasons


def stack_images(arrays: list[np.ndarray], target: tuple[int, int]) -> np.ndarray:
    """Decoded images (from :func:`decode_image`) as one ``(n, C, H, W)`` uint8
    array: one channel when all are grayscale, else three."""
    w, h = target
    if not arrays:
        return np.zeros((0, 1, h, w), np.uint8)
    if all(a.ndim == 2 for a in arrays):
        x = np.stack(arrays)[:, None]
    else:
        x = np.stack([np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a for a in arrays])
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------- decode cache

#: Bump when the decoding itself changes, so old caches are not reused.
_CACHE_VERSION = 1


def cache_dir(cache: str | os.PathLike | None, source: Path) -> Path | None:
    """The cache folder, refused when it lies inside the input (never write there)."""
    if cache is None:
        return None
    return check_outside(cache, [source], "--cache")


def _cache_key(files: list[Path], image_size: int | None) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION}|{image_size}".encode())
    for f in files:
        st = f.stat()
        h.update(f"|{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _read_cache(
    path: Path, with_x: bool = True
) -> tuple[np.ndarray | None, np.ndarray, list[str]] | None:
    """``(x, keep, reasons)`` from a cache file (``x`` None without ``with_x``: the
    metadata of a memory-mapped entry), or None: a damaged one is rebuilt, not trusted."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as d:
            x = d["x"] if with_x else None
            return x, d["keep"], [str(r) for r in d["reasons"]]
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(
    path: Path, x: np.ndarray | None, keep: np.ndarray, reasons: list[str]
) -> None:
    """Write a cache file atomically (``x`` None: metadata only)."""
    from ._io import atomic_write

    arrays = {"keep": keep, "reasons": np.array(reasons, dtype=str)}
    if x is not None:
        arrays["x"] = x

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(path, write)
    except OSError as e:
        raise LabelcleanError(f"cannot write the image cache {path}: {e.strerror or e}") from None


def _decode_mapped(
    files: list[Path],
    sizes: list[tuple[int, int] | str],
    target: tuple[int, int],
    workers: int,
    cache: Path,
    key: str,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Decode every file straight into ``cache/images-<key>.u8.npy`` and map it.

    Images are decoded a chunk at a time by ``workers`` threads into a
    three-channel scratch file of this run's own (colour is only known after
    decoding; two runs filling one cache never share a scratch file), then the
    readable rows are copied to the final file, with one channel when every
    image is grayscale. Memory stays at a chunk of images whatever ``N``. Both
    files get their disk blocks up front, so a full disk is an error message
    rather than a SIGBUS in the middle of a write; the final file is renamed
    into place and the metadata, written last, marks the entry complete.
    """
    import tempfile

    from ._io import atomic_write

    w, h = target
    n = len(files)
    final = cache / f"images-{key}.u8.npy"
    reasons = [""] * n
    gray = np.ones(n, dtype=bool)
    rgb = None
    scratch = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".images-{key}.", suffix=".scratch.npy", dir=cache)
        os.close(fd)
        scratch = Path(name)
        rgb = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=(n, 3, h, w))
        _reserve(scratch)

        def decode_into(i: int) -> None:
            a = _decode(files[i], sizes[i], target)
            if isinstance(a, str):
                reasons[i] = a
            elif a.ndim == 2:
                rgb[i] = a  # broadcast over the three channels
            else:
                rgb[i] = a.transpose(2, 0, 1)
                gray[i] = False

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for s in range(0, n, _DECODE_CHUNK):
                list(pool.map(decode_into, range(s, min(n, s + _DECODE_CHUNK))))
        keep = np.array([i for i in range(n) if not reasons[i]], dtype=np.int64)
        channels = 1 if gray[keep].all() else 3

        def write(tmp: str) -> None:
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(keep), channels, h, w)
            )
            _reserve(Path(tmp))
            rows_per_copy = max(1, (64 << 20) // (3 * h * w))  # ~64 MiB at a time
            for s in range(0, len(keep), rows_per_copy):
                rows = keep[s : s + rows_per_copy]
                out[s : s + len(rows)] = rgb[rows, :channels]
            out.flush()

        atomic_write(final, write)
        _write_cache(cache / f"images-{key}.meta.npz", None, keep, reasons)
    except OSError as e:
        raise LabelcleanError(
            f"cannot write decoded images to the cache {cache}: {e.strerror or e}"
        ) from None
    finally:
        rgb = None  # unmap before the scratch file goes
        if scratch is not None:
            scratch.unlink(missing_ok=True)
    return np.load(final, mmap_mode="c"), keep, reasons


def _reserve(path: Path) -> None:
    """Allocate ``path``'s blocks now (ENOSPC becomes an OSError here, not a SIGBUS later)."""
    if hasattr(os, "posix_fallocate"):
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))


def _read_mapped(cache: Path, key: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """A complete memory-mapped cache entry, or None (a damaged one is rebuilt)."""
    meta = _read_cache(cache / f"images-{key}.meta.npz", with_x=False)
    data = cache / f"images-{key}.u8.npy"
    if meta is None or not data.is_file():
        return None
    _, keep, reasons = meta
    try:
        x = np.load(data, mmap_mode="c")
    except (OSError, ValueError):
        return None
    if x.ndim != 4 or x.dtype != np.uint8 or len(x) != len(keep):
        return None
    return x, keep, reasons


def read_image(file: str | os.PathLike, target: tuple[int, int] | None = None
               ) -> np.ndarray | str:
    """One image file as :func:`load_dataset` reads it: ``uint8`` at ``target``
    (width, height; default its own size), 2-D for grayscale, ``(H, W, 3)`` for
    colour; or, for a file that cannot be read, why (a short line). It never
    raises: whatever the decoder says about a file makes it unreadable."""
    size = _probe_size(Path(file))
    return _decode(Path(file), size, target or size)


def _probe_size(file: Path) -> tuple[int, int] | str:
    """The image's (width, height) from its header, or why it cannot be read."""
    try:
        if file.stat().st_size == 0:
            return "zero-byte file"
        with Image.open(file) as im:
            w, h = im.size
    # Every error a decoder raises on a damaged file (PIL's DecompressionBombError,
    # struct.error, IndexError, ... have no common base) makes the file unreadable.
    except Exception as e:  # noqa: BLE001
        return error_reason(e)
    if w < 1 or h < 1:
        return f"image of {w}x{h} pixels"
    if w * h > MAX_IMAGE_PIXELS:
        return (f"image of {w}x{h} pixels, over the limit of {MAX_IMAGE_PIXELS:,} "
                "(a damaged header or a decompression bomb)")
    return w, h


def _decode(file: Path, size: tuple[int, int] | str, target: tuple[int, int]) -> np.ndarray | str:
    """Decode to ``uint8``: 2-D for grayscale, ``(H, W, 3)`` for colour."""
    if isinstance(size, str):
        return size
    try:
        with Image.open(file) as im:
            if im.size != size:  # the file changed since it was probed
                return f"image size changed from {size} to {im.size} while reading"
            im.load()
            return decode_image(im, target)
    except Exception as e:  # noqa: BLE001 - as in _probe_size
        return error_reason(e)


def decode_image(im: Image.Image, target: tuple[int, int]) -> np.ndarray:
    """A loaded PIL image as ``uint8`` at ``target`` (width, height): 2-D for
    grayscale, ``(H, W, 3)`` for colour. Every input kind decodes through here,
    so the same picture gives the same pixels whatever it was read from."""
    im = to_l_or_rgb(im)
    if im.size != target:
        im = im.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def to_l_or_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("1", "L", "I", "I;16", "F"):
        if im.mode in ("I", "I;16", "F"):
            arr = np.asarray(im, dtype=np.float64)
            hi = arr.max() if arr.max() > 0 else 1.0
            return Image.fromarray((arr * (255.0 / hi)).astype(np.uint8), "L")
        return im.convert("L")
    if im.mode == "LA" or im.mode == "P" and "transparency" in im.info or im.mode == "RGBA":
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    rgb = im.convert("RGB")
    arr = np.asarray(rgb)
    if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all():
        return rgb.convert("L")
    return rgb


def error_reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError):
        text = "out of memory while decoding"
    return text[:200]


# --------------------------------------------------------------------------- labels


def label_name(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _natural_key(s: str) -> list:
    """``"c2" < "c10"``: for listing names in messages, not for class indices."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def class_sort_key(name: str) -> str:
    """The order class names get their indices in (:data:`CLASS_ORDER`): plain
    lexical order, as torchvision's ``ImageFolder`` (``sorted(entry.name)``) and
    cleanlab use, so ``"10"`` comes before ``"2"`` and the indices match theirs."""
    return name


def sorted_classes(names) -> list[str]:
    """Distinct class names in index order (:func:`class_sort_key`)."""
    return sorted(set(names), key=class_sort_key)


def _class_list(labels: pd.Series, classes: list[str] | None, source: Path) -> list[str]:
    if classes is not None:
        return list(classes)
    found = sorted_classes(labels.map(label_name))
    if len(found) < 2:
        raise LabelcleanError(f"{source.name} has a single class ({found[0]}); need two")
    return found


def _encode(labels: pd.Series, classes: list[str], source: Path) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    names = labels.map(label_name)
    unknown = sorted(set(names) - set(index), key=_natural_key)
    if unknown:
        raise LabelcleanError(
            f"{source.name}: label {unknown[0]!r} is not one of the training classes"
        )
    return names.map(index).to_numpy(dtype=np.int64)
