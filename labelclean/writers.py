"""The cleaned dataset of a run: how each origin's kept samples are written.

A run writes its input minus the flagged samples in the input's own form: an
image folder as an image tree (``cleaned/``), a CSV or a Python object as a
table (``cleaned.csv``). :data:`WRITERS` maps each ``Dataset.origin`` to the
:class:`SourceWriter` that writes it, which also says what the output may not
overlap (:meth:`SourceWriter.forbidden`). Every input format is the writer of its
own origin (:class:`labelclean.formats.InputFormat` is a ``SourceWriter``, and
:func:`labelclean.formats.register_format` puts it here); the classes below are
the built-in formats' ways of writing, for a new format to reuse. A writer alone,
for datasets made in Python with an origin no format reads, is one subclass and
one :func:`register_writer` call::

    class ParquetWriter(TableWriter):
        output = "cleaned.parquet"

        def write_cleaned(self, data, keep, folder, *, out, link, params):
            self.cleaned_table(data, keep, out, params).to_parquet(folder / self.output)

    register_writer("parquet", ParquetWriter())

The placing of image files (:func:`write_tree`: copies, clones or links) is
shared with ``labelclean apply``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ._io import write_csv
from .dataset import Dataset
from .errors import LabelcleanError
from .paths import image_roots
from .rundir import CLEANED_DIR, CLEANED_TABLE

if TYPE_CHECKING:
    from .resultdata import ResultData

#: How ``cleaned/`` refers to the input images. ``copy`` (the default) makes
#: copy-on-write clones where the filesystem can (btrfs, XFS, APFS...) and plain
#: copies elsewhere, so an edit under ``cleaned/`` never reaches the input; the
#: links share the input's files and are only for users who ask for them.
LINK_MODES = ("copy", "hardlink", "symlink")
DEFAULT_LINK = "copy"


class SourceWriter:
    """Writes the kept samples of one kind of input into a run folder."""

    #: What :meth:`write` makes in the run folder (``run.json``'s ``outputs.cleaned``).
    output: str = CLEANED_TABLE
    #: The input is a Python object: no file of its own to protect or re-read
    #: (``run.json`` names it ``<origin object>``).
    in_memory: bool = False

    def write(self, result: ResultData, keep: np.ndarray, folder: Path, out: Path,
              link: str) -> None:
        """Write ``result.dataset``'s samples where ``keep`` (in sample order) into
        ``folder``, the staging folder of the run folder ``out``; ``link`` is how
        images are placed (:data:`LINK_MODES`). By default :meth:`write_cleaned`,
        with the run's settings."""
        self.write_cleaned(result.dataset, keep, folder, out=out, link=link,
                           params=result.params)

    def write_cleaned(self, data: Dataset, keep: np.ndarray, folder: Path, *, out: Path,
                      link: str, params: dict[str, Any]) -> None:
        """Write ``data``'s samples where ``keep`` into ``folder`` (see :meth:`write`);
        ``params`` are the run's settings (``run.json``'s ``params``: the path column...).
        ``labelclean apply`` calls it too, with the reviewed labels in ``data.y``."""
        raise NotImplementedError(f"{type(self).__name__} writes no cleaned output")

    def forbidden(self, source: str | os.PathLike, files: list | None) -> list[Path]:
        """The files and folders the run folder may not overlap: by default the
        input itself, none for a Python object."""
        return [] if self.in_memory else [Path(source)]


class ImageTreeWriter(SourceWriter):
    """An image folder: ``cleaned/<class>/<image>`` for every kept image."""

    output = CLEANED_DIR

    def write_cleaned(self, data: Dataset, keep: np.ndarray, folder: Path, *, out: Path,
                      link: str, params: dict[str, Any]) -> None:
        kept = ((f, rel) for f, rel, k in zip(data.files, data.ids, keep) if k)
        write_tree(kept, folder / self.output, link)


class TableWriter(SourceWriter):
    """A table (a feature CSV, or ``index,label`` of a Python dataset): its kept rows,
    every column the user had, as ``cleaned.csv``."""

    def __init__(self, *, in_memory: bool = False) -> None:
        self.in_memory = in_memory

    def write_cleaned(self, data: Dataset, keep: np.ndarray, folder: Path, *, out: Path,
                      link: str, params: dict[str, Any]) -> None:
        write_csv(folder / self.output, self.cleaned_table(data, keep, out, params))

    def cleaned_table(self, data: Dataset, keep: np.ndarray, out: Path,
                      params: dict[str, Any]) -> pd.DataFrame:
        """The rows of the input table that hold kept samples, in table order."""
        return data.table.iloc[data.rows[keep]].copy()


class PathTableWriter(TableWriter):
    """A CSV of image paths: its kept rows, relative paths rewritten relative to
    ``out`` so that they still point at the same images."""

    def cleaned_table(self, data: Dataset, keep: np.ndarray, out: Path,
                      params: dict[str, Any]) -> pd.DataFrame:
        cleaned = super().cleaned_table(data, keep, out, params)
        column = params["path_column"]
        cleaned[column] = paths_from(cleaned[column], self.path_base(data), out)
        return cleaned

    def path_base(self, data: Dataset) -> Path:
        """The folder the input's relative paths resolve against: the CSV's."""
        return Path(data.source).resolve().parent

    def forbidden(self, source: str | os.PathLike, files: list | None) -> list[Path]:
        # also the folder its images share, so that a later run over that image
        # tree does not pick up labelclean's outputs
        return [Path(source), *(image_roots(files) if files else [])]


class DataFrameWriter(PathTableWriter):
    """A DataFrame of image paths: as a path CSV, relative to its ``root``; a
    DataFrame of features (no path column): its kept rows, as a feature CSV's."""

    def cleaned_table(self, data: Dataset, keep: np.ndarray, out: Path,
                      params: dict[str, Any]) -> pd.DataFrame:
        if data.kind != "images":
            return TableWriter.cleaned_table(self, data, keep, out, params)
        return super().cleaned_table(data, keep, out, params)

    def path_base(self, data: Dataset) -> Path:
        return Path(data.source).resolve()

    def forbidden(self, source: str | os.PathLike, files: list | None) -> list[Path]:
        # its `source` may be just the current folder: the images only
        return image_roots(files) if files else []


def paths_from(paths: Iterable, base: Path, out: Path) -> list[str]:
    """Image paths relative to ``base`` rewritten relative to ``out``, so that a table
    written there still points at the same images; absolute paths are kept."""
    return [p if os.path.isabs(p) else os.path.relpath(base / p, out)
            for p in map(str, paths)]


#: The writer of each ``Dataset.origin``: every registered input format (each is its
#: own writer; the built-ins are registered when the package is imported) and any
#: writer registered alone.
WRITERS: dict[str, SourceWriter] = {}


def register_writer(origin: str, writer: SourceWriter, *, replace: bool = False) -> SourceWriter:
    """Write the cleaned output of inputs of ``origin`` with ``writer``; returns it.
    A taken origin is refused unless ``replace``."""
    if origin in WRITERS and not replace:
        raise ValueError(f"a writer for origin {origin!r} is already registered")
    WRITERS[origin] = writer
    return writer


def unregister_writer(origin: str) -> None:
    """Remove ``origin``'s writer (no error when absent)."""
    WRITERS.pop(origin, None)


def writer_for(origin: str) -> SourceWriter:
    """The writer registered for ``origin``."""
    try:
        return WRITERS[origin]
    except KeyError:
        raise LabelcleanError(f"no writer for inputs of origin {origin!r}; "
                              "register one with labelclean.writers.register_writer") from None


def output_forbidden(source: str | os.PathLike, origin: str,
                     files: list | None = None) -> list[Path]:
    """The files and folders ``--out`` (and the state and TensorBoard folders) may
    not overlap for an input of ``origin`` (:meth:`SourceWriter.forbidden`)."""
    return writer_for(origin).forbidden(source, files)


# ----------------------------------------------------------------------------- image files


def write_tree(files: Iterable[tuple[str | os.PathLike, str]], dest: Path, link: str) -> None:
    """Build a cleaned image tree under ``dest``: each ``(source image, relative
    target)`` of ``files`` placed at ``dest/target`` as ``link`` says (see
    :data:`LINK_MODES`). ``labelclean run`` and ``labelclean apply`` both write
    ``cleaned/`` with it."""
    # `dest` is inside a staging folder: a half-built tree is never visible.
    dest.mkdir(parents=True, exist_ok=True)
    for src, rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        place_file(Path(src), target, link)


def place_file(src: Path, target: Path, link: str) -> None:
    """Make ``target`` refer to ``src`` as ``link`` says (see :data:`LINK_MODES`)."""
    if link == "symlink":
        os.symlink(src.resolve(), target)
        return
    if link == "hardlink":
        try:
            os.link(src, target)
            return
        except OSError:
            pass  # another filesystem, or links not allowed: copy instead
    copy_file(src, target)


def copy_file(src: Path, target: Path) -> None:
    """An independent copy of ``src``: a copy-on-write clone where the
    filesystem supports it (no data copied until one side changes), else bytes."""
    if not _clone(src, target):
        shutil.copyfile(src, target)
    shutil.copystat(src, target)


_FICLONE = 0x40049409  # Linux ioctl: share extents copy-on-write (btrfs, XFS, ...)


def _clone(src: Path, target: Path) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX
        return False
    try:
        with open(src, "rb") as s, open(target, "wb") as t:
            fcntl.ioctl(t.fileno(), _FICLONE, s.fileno())
        return True
    except OSError:  # not supported here (ext4, tmpfs, across filesystems): copy bytes
        return False
