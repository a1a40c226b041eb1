"""Inputs that already live in Python, read into the same :class:`Dataset` as files.

:func:`labelclean.load_dataset` (and so ``Cleaner.fit``) hands any object that
is not a path to the input formats that read objects
(:func:`labelclean.formats.read_object`; :func:`load_object` here is the same).
The built-ins, registered below in the order they are tried:

a labelclean ``Dataset`` (format ``arrays``)
    Taken as it is (``Dataset.from_arrays`` makes one of arrays).
pandas ``DataFrame``
    A path column and a label column (``path_column``, ``label_column``), as
    in a CSV of paths; relative paths resolve against ``root`` (default: the
    current folder). The images are read from disk exactly as a CSV's are. A
    frame without the path column is a feature table (numeric columns plus
    the label), as a features CSV.
Hugging Face ``datasets.Dataset``
    An image column (``image_column``, default ``"image"``) of images as the
    ``datasets.Image`` feature decodes them (PIL), or arrays, and a label
    column. ``datasets`` itself is never imported here: the object is
    recognised by its module, so labelclean does not need it installed unless
    the user has such an object (the ``hf`` extra).
torch ``Dataset``
    Anything with ``__len__`` and ``__getitem__`` returning ``(image, label)``:
    a PIL image, or a ``uint8``/float array or tensor (tensors ``(C, H, W)`` or
    ``(H, W)``, arrays ``(H, W)`` or ``(H, W, C)``, floats taken as ``0..1``).

Every image goes through :func:`labelclean.sources.decode_image`, the same
decoding an image file gets, so the same picture gives the same pixels (and,
with the same seed and order, the same flags) whichever way it came in.

Class indices: labels given as integers (a ``ClassLabel`` column, a torch
dataset's ints) keep them, named by the ``ClassLabel`` names, the dataset's
``classes`` attribute (torchvision's ``ImageFolder`` has one) or the
``classes`` argument, else ``"0", "1", ...``; text labels are sorted lexically,
as for files. In-memory images are decoded into memory (no memory-mapped
cache): a set larger than ``max_memory`` decoded is refused; write it to disk
and pass a CSV of paths with ``--cache`` instead.

``Dataset.table`` of a Hugging Face or torch input is ``index, label`` (the
sample's index in the user's object and its given label), so the exported
``cleaned.csv`` lists the kept indices: ``ds.select(cleaned["index"])``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .dataset import CLASS_ORDER, Dataset
from .errors import LabelcleanError
from .formats import ACCEPTED as ACCEPTED  # what load_object accepts; its message's home
from .formats import InputFormat, read_object, register_format
from .labels import label_name, sorted_classes
from .sources import (
    MAX_NATIVE_SIZE,
    cache_dir,
    decode_image,
    default_max_memory,
    error_reason,
    format_size,
    load_path_csv,
    stack_images,
    target_size,
)
from .tables import load_feature_csv
from .writers import DataFrameWriter, TableWriter

#: Rows fetched from a Hugging Face dataset at a time (bounds Arrow conversion cost).
_HF_CHUNK = 256


#: Read a DataFrame, a Hugging Face dataset or a torch dataset (module docstring): the
#: registered formats of Python objects, :func:`labelclean.formats.read_object`.
load_object = read_object


# ----------------------------------------------------------------------------- DataFrame


def load_frame(
    frame: pd.DataFrame,
    *,
    path_column: str = "path",
    label_column: str = "label",
    root: str | os.PathLike | None = None,
    noise_column: str | None = None,
    image_size: int | None = None,
    classes: list[str] | None = None,
    skip_unreadable: bool = False,
    workers: int | None = None,
    cache: str | os.PathLike | None = None,
    max_memory: int | None = None,
) -> Dataset:
    """A DataFrame of image paths and labels (or of features and labels)."""
    name = Path("the DataFrame")  # how messages name the table
    table = frame.reset_index(drop=True).copy()  # never the user's own object
    if path_column not in table.columns:
        ds = load_feature_csv(name, table, label_column, noise_column, classes)
        ds.origin, ds.source = "dataframe", Path(".")
        return ds
    base = Path(root) if root is not None else Path.cwd()
    if not base.is_dir():
        raise LabelcleanError(f"root {base} is not a folder")
    base = base.resolve()
    # Without a root the base is merely the current folder, not the user's data:
    # the cache may then lie under it.
    cache_folder = cache_dir(cache, base) if root is not None else (
        None if cache is None else Path(cache).resolve()
    )
    return load_path_csv(
        name, table, path_column, label_column, noise_column, image_size, classes,
        skip_unreadable, workers, cache_folder, max_memory,
        base=base, origin="dataframe", source=base,
    )


# ----------------------------------------------------------------------------- Hugging Face


def _module(obj: Any) -> str:
    return type(obj).__module__ or ""


def is_hf_dataset(obj: Any) -> bool:
    """A Hugging Face ``datasets.Dataset`` (one split, with a length), recognised
    without importing ``datasets``."""
    return (
        _module(obj).startswith("datasets")
        and not isinstance(obj, dict)  # a DatasetDict holds several splits
        and hasattr(obj, "features") and hasattr(obj, "column_names")
        and hasattr(obj, "__len__")
    )


def load_hf(
    ds: Any,
    *,
    image_column: str = "image",
    label_column: str = "label",
    noise_column: str | None = None,
    image_size: int | None = None,
    classes: list[str] | None = None,
    skip_unreadable: bool = False,
    max_memory: int | None = None,
) -> Dataset:
    """A Hugging Face dataset with an image column and a label column."""
    for column, option in ((image_column, "image_column"), (label_column, "label_column")):
        if column not in ds.column_names:
            raise LabelcleanError(
                f"the Hugging Face dataset has no column {column!r} "
                f"(columns: {', '.join(ds.column_names)}); pass {option}="
            )
    n = len(ds)
    if n == 0:
        raise LabelcleanError("the Hugging Face dataset has no rows")
    names = getattr(ds.features[label_column], "names", None)  # a ClassLabel column
    labels = list(ds[label_column])
    noise = None
    if noise_column is not None:
        if noise_column not in ds.column_names:
            raise LabelcleanError(f"the Hugging Face dataset has no noise column {noise_column!r}")
        noise = np.asarray(ds[noise_column], dtype=bool)

    def images() -> Iterator[Any]:
        for start in range(0, n, _HF_CHUNK):
            yield from ds[start : start + _HF_CHUNK][image_column]

    return _from_items(
        images(), labels, n, origin="hf", what="Hugging Face dataset",
        names=list(names) if names else None, image_size=image_size, classes=classes,
        skip_unreadable=skip_unreadable, max_memory=max_memory, noise=noise,
    )


# ----------------------------------------------------------------------------- torch


def load_torch(
    ds: Any,
    *,
    image_size: int | None = None,
    classes: list[str] | None = None,
    skip_unreadable: bool = False,
    max_memory: int | None = None,
) -> Dataset:
    """A map-style torch ``Dataset`` whose items are ``(image, label)``."""
    n = len(ds)
    if n == 0:
        raise LabelcleanError("the torch Dataset is empty")
    labels: list[Any] = [None] * n

    def images() -> Iterator[Any]:
        for i in range(n):
            item = ds[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2:
                raise LabelcleanError(
                    f"item {i} of the torch Dataset is a {type(item).__name__}, "
                    "not an (image, label) pair"
                )
            labels[i] = item[1]
            yield item[0]

    names = getattr(ds, "classes", None)
    return _from_items(
        images(), labels, n, origin="torch", what="torch Dataset",
        names=[str(c) for c in names] if names is not None else None,
        image_size=image_size, classes=classes, skip_unreadable=skip_unreadable,
        max_memory=max_memory,
    )


# ----------------------------------------------------------------------------- shared


def to_pil(image: Any) -> Image.Image:
    """A PIL image from what datasets yield: PIL, a file path, a ``datasets``
    ``{"bytes", "path"}`` record, a tensor ``(C, H, W)``/``(H, W)`` or an array
    ``(H, W)``/``(H, W, C)``; float pixels are taken as ``0..1``."""
    if isinstance(image, Image.Image):
        image.load()
        return image
    if isinstance(image, (str, os.PathLike)):  # a file path, as an undecoded column holds
        with Image.open(image) as im:
            im.load()
            return im.copy()
    if isinstance(image, dict) and ("bytes" in image or "path" in image):
        import io

        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image["path"]
        with Image.open(source) as im:
            im.load()
            return im.copy()
    if isinstance(image, torch.Tensor):
        a = image.detach().cpu().numpy()
        if a.ndim == 3:
            a = a.transpose(1, 2, 0)  # torch's (C, H, W) to PIL's (H, W, C)
    else:
        a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"an image must be (H, W) or (H, W, 3|4), got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def _from_items(
    images: Iterator[Any],
    labels: list[Any],
    n: int,
    *,
    origin: str,
    what: str,
    names: list[str] | None,
    image_size: int | None,
    classes: list[str] | None,
    skip_unreadable: bool,
    max_memory: int | None,
    noise: np.ndarray | None = None,
) -> Dataset:
    """Decode ``n`` images from ``images`` (which may fill ``labels`` as it goes)."""
    if image_size is not None and image_size < 8:
        raise LabelcleanError(f"--image-size must be at least 8, got {image_size}")
    limit = default_max_memory() if max_memory is None else int(max_memory)
    decoder = _StreamDecoder(n, image_size, limit)
    reasons: list[str] = []
    for image in images:
        try:
            decoder.add(to_pil(image))
            reasons.append("")
        except (OSError, ValueError, TypeError, SyntaxError) as e:
            decoder.add(None)
            reasons.append(error_reason(e))
    bad = [(str(i), r) for i, r in enumerate(reasons) if r]
    if bad and not skip_unreadable:
        raise LabelcleanError(
            f"{len(bad)} unreadable images in the {what} (first: item {bad[0][0]}: "
            f"{bad[0][1]}); pass skip_unreadable=True to leave them out"
        )
    keep = np.array([i for i, r in enumerate(reasons) if not r], dtype=np.int64)
    if not len(keep):
        raise LabelcleanError(f"none of the {n} images in the {what} could be read")
    x = decoder.finish()
    class_names, y, order = _index_labels([labels[i] for i in keep], names, classes, what)
    return Dataset(
        kind="images", x=torch.from_numpy(x), y=y, classes=class_names,
        ids=[str(i) for i in keep], origin=origin, source=Path("."),
        rows=keep, table=pd.DataFrame({"index": np.arange(n),
                                       "label": _label_texts(labels, class_names)}),
        unreadable=pd.DataFrame({"path": [b[0] for b in bad], "reason": [b[1] for b in bad]}),
        noise_mask=None if noise is None else noise[keep],
        class_order=order,
    )


class _StreamDecoder:
    """Decodes images as they arrive, holding no more than the final array needs.

    The size every image is decoded to follows ``load_dataset``'s rule
    (:func:`labelclean.sources._target_size`): ``image_size`` when given, else
    the images' own size while they all share one of at most ``MAX_NATIVE_SIZE``,
    else ``MAX_NATIVE_SIZE``. Until the rule has settled, images are kept as
    they came (all the same small size, so no larger than decoded); once it
    has, every image is decoded straight away, and a set that would not fit in
    ``limit`` bytes is refused before the rest is read.
    """

    def __init__(self, n: int, image_size: int | None, limit: int) -> None:
        self.n, self.limit = n, limit
        self.target = None if image_size is None else (image_size, image_size)
        self.items: list[Image.Image | np.ndarray] = []
        self.sizes: set[tuple[int, int]] = set()
        if self.target is not None:
            self._check()

    def add(self, picture: Image.Image | None) -> None:
        if picture is None:
            return
        if self.target is None:
            self.sizes.add(picture.size)
            if len(self.sizes) > 1 or max(picture.size) > MAX_NATIVE_SIZE:
                self._settle(target_size(list(self.sizes), None))  # MAX_NATIVE_SIZE from now
        self.items.append(decode_image(picture, self.target) if self.target else picture)

    def finish(self) -> np.ndarray:
        if self.target is None:
            self._settle(target_size(list(self.sizes), None))
        return stack_images(self.items, self.target)

    def _settle(self, target: tuple[int, int]) -> None:
        self.target = target
        self._check()
        self.items = [decode_image(p, target) if isinstance(p, Image.Image) else p
                      for p in self.items]

    def _check(self) -> None:
        w, h = self.target
        need = 3 * w * h * self.n  # colour is only known once decoded: three channels
        if need > self.limit:
            raise LabelcleanError(
                f"the decoded images need {format_size(need)}, more than the "
                f"{format_size(self.limit)} "
                "allowed in memory (max_memory); write them to disk and pass a CSV of paths "
                "with a cache, or a smaller image_size"
            )


def _as_int(label: Any) -> int | None:
    if isinstance(label, torch.Tensor) and label.numel() == 1:
        label = label.item()
    if isinstance(label, (bool, np.bool_)):
        return None
    if isinstance(label, (int, np.integer)):
        return int(label)
    return None


def _index_labels(
    labels: list[Any], names: list[str] | None, classes: list[str] | None, what: str
) -> tuple[list[str], np.ndarray, str]:
    """``(class names, int64 indices, class order)``: integer labels keep their
    values as indices; text labels are indexed in lexical order (or by ``classes``)."""
    ints = [_as_int(v) for v in labels]
    if all(v is not None for v in ints):
        y = np.asarray(ints, dtype=np.int64)
        if (y < 0).any():
            raise LabelcleanError(f"the {what} has a negative label ({int(y.min())})")
        class_names = list(classes or names or [str(c) for c in range(int(y.max()) + 1)])
        if y.max() >= len(class_names):
            raise LabelcleanError(
                f"the {what} has label {int(y.max())} but only {len(class_names)} classes"
            )
    else:
        texts = [label_name(v) for v in labels]
        if any(t == "" for t in texts):
            raise LabelcleanError(f"the {what} has samples without a label")
        class_names = list(classes) if classes is not None else sorted_classes(texts)
        index = {c: i for i, c in enumerate(class_names)}
        unknown = sorted(set(texts) - set(index))
        if unknown:
            raise LabelcleanError(f"the {what}'s label {unknown[0]!r} is not a training class")
        y = np.asarray([index[t] for t in texts], dtype=np.int64)
    if classes is None and len(set(y.tolist())) < 2:
        raise LabelcleanError(f"the {what} has a single class; need two")
    if classes is not None:
        return class_names, y, "given"
    return class_names, y, "dataset" if all(v is not None for v in ints) else CLASS_ORDER


def _label_texts(labels: list[Any], class_names: list[str]) -> list[str]:
    """Every given label as its class name (for ``Dataset.table``)."""
    out = []
    for v in labels:
        i = _as_int(v)
        out.append(class_names[i] if i is not None and 0 <= i < len(class_names)
                   else label_name(v))
    return out


# ----------------------------------------------------------------------------- formats
# Each names its writer (labelclean.writers) first among its bases, so the writer's
# `output`, `write_cleaned` and `forbidden` are the ones used. None can be re-read by
# `labelclean apply` (`objects`): the object is gone when the run is over.


class _InMemoryTable(TableWriter, InputFormat):
    """An object with no file of its own: written as ``index,label`` of kept samples."""

    objects = True

    def __init__(self) -> None:
        super().__init__(in_memory=True)


class ArraysFormat(_InMemoryTable):
    """A labelclean ``Dataset`` already made (``Dataset.from_arrays``), taken as it is."""

    name = "arrays"

    def detect(self, source: Any, **options: Any) -> bool:
        return isinstance(source, Dataset)

    def read(self, source: Any, **options: Any) -> Dataset:
        return source


class DataFrameFormat(DataFrameWriter, InputFormat):
    """A pandas ``DataFrame`` of image paths (or features) and labels."""

    name = "dataframe"
    objects = True

    def detect(self, source: Any, **options: Any) -> bool:
        return isinstance(source, pd.DataFrame)

    def read(self, source: Any, *, path_column: str = "path", label_column: str = "label",
             root: str | os.PathLike | None = None, noise_column: str | None = None,
             image_size: int | None = None, classes: list[str] | None = None,
             skip_unreadable: bool = False, workers: int | None = None,
             cache: str | os.PathLike | None = None, max_memory: int | None = None,
             **options: Any) -> Dataset:
        return load_frame(
            source, path_column=path_column, label_column=label_column, root=root,
            noise_column=noise_column, image_size=image_size, classes=classes,
            skip_unreadable=skip_unreadable, workers=workers, cache=cache,
            max_memory=max_memory,
        )


class HFFormat(_InMemoryTable):
    """A Hugging Face ``datasets.Dataset``; any other object of ``datasets`` is refused."""

    name = "hf"

    def detect(self, source: Any, **options: Any) -> bool:
        # all of `datasets`' objects: a DatasetDict gets its own message, not torch's
        return _module(source).startswith("datasets")

    def read(self, source: Any, *, image_column: str = "image", label_column: str = "label",
             noise_column: str | None = None, image_size: int | None = None,
             classes: list[str] | None = None, skip_unreadable: bool = False,
             max_memory: int | None = None, **options: Any) -> Dataset:
        if not is_hf_dataset(source):
            raise LabelcleanError(
                f"a Hugging Face {type(source).__name__} is not one dataset: pass one split "
                "(e.g. ds['train']), with a length (not streaming)"
            )
        return load_hf(
            source, image_column=image_column, label_column=label_column,
            noise_column=noise_column, image_size=image_size, classes=classes,
            skip_unreadable=skip_unreadable, max_memory=max_memory,
        )


class TorchFormat(_InMemoryTable):
    """A map-style torch ``Dataset`` of ``(image, label)``: anything with a length and items."""

    name = "torch"

    def detect(self, source: Any, **options: Any) -> bool:
        return hasattr(source, "__getitem__") and hasattr(source, "__len__")

    def read(self, source: Any, *, image_size: int | None = None,
             classes: list[str] | None = None, skip_unreadable: bool = False,
             max_memory: int | None = None, **options: Any) -> Dataset:
        return load_torch(source, image_size=image_size, classes=classes,
                          skip_unreadable=skip_unreadable, max_memory=max_memory)


register_format(ArraysFormat())
register_format(DataFrameFormat())
register_format(HFFormat())
register_format(TorchFormat())
