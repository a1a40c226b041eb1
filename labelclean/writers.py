"""The cleaned dataset of a run, one writer per kind of input.

A run writes its input minus the flagged samples in the input's own form: an
image folder as an image tree (``cleaned/``), a CSV or a Python object as a
table (``cleaned.csv``). Which form is decided here, once: :data:`WRITERS` maps
each ``Dataset.origin`` (how :mod:`labelclean.sources` / :mod:`labelclean.inmemory`
read the data) to a :class:`SourceWriter`, which also says what the output may
not overlap (:meth:`SourceWriter.forbidden`). A new input format is one
subclass and one :func:`register_writer` call::

    class ParquetWriter(TableWriter):
        output = "cleaned.parquet"

        def write(self, result, keep, folder, out, link):
            self.kept_rows(result.dataset, keep).to_parquet(folder / self.output)

    register_writer("parquet", ParquetWriter())

The placing of image files (:func:`write_tree`: copies, clones or links) is
shared with ``labelclean apply``.
"""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ._io import write_csv
from .errors import LabelcleanError
from .paths import image_roots
from .rundir import CLEANED_DIR, CLEANED_TABLE
from .sources import Dataset

if TYPE_CHECKING:
    from .resultdata import ResultData

#: How ``cleaned/`` refers to the input images. ``copy`` (the default) makes
#: copy-on-write clones where the filesystem can (btrfs, XFS, APFS...) and plain
#: copies elsewhere, so an edit under ``cleaned/`` never reaches the input; the
#: links share the input's files and are only for users who ask for them.
LINK_MODES = ("copy", "hardlink", "symlink")
DEFAULT_LINK = "copy"


class SourceWriter(ABC):
    """Writes the kept samples of one kind of input into a run folder."""

    #: What :meth:`write` makes in the run folder (``run.json``'s ``outputs.cleaned``).
    output: str = CLEANED_TABLE
    #: The input is a Python object: no file of its own to protect or re-read
    #: (``run.json`` names it ``<origin object>``).
    in_memory: bool = False

    @abstractmethod
    def write(self, result: ResultData, keep: np.ndarray, folder: Path, out: Path,
              link: str) -> None:
        """Write ``result.dataset``'s samples where ``keep`` (in sample order) into
        ``folder``, the staging folder of the run folder ``out``; ``link`` is how
        images are placed (:data:`LINK_MODES`)."""

    def forbidden(self, source: str | os.PathLike, files: list | None) -> list[Path]:
        """The files and folders the run folder may not overlap: by default the
        input itself, none for a Python object."""
        return [] if self.in_memory else [Path(source)]


class ImageTreeWriter(SourceWriter):
    """An image folder: ``cleaned/<class>/<image>`` for every kept image."""

    output = CLEANED_DIR

    def write(self, result: ResultData, keep: np.ndarray, folder: Path, out: Path,
              link: str) -> None:
        data = result.dataset
        kept = ((f, rel) for f, rel, k in zip(data.files, data.ids, keep) if k)
        write_tree(kept, folder / self.output, link)


class TableWriter(SourceWriter):
    """A table (a feature CSV, or ``index,label`` of a Python dataset): its kept rows,
    every column the user had, as ``cleaned.csv``."""

    def __init__(self, *, in_memory: bool = False) -> None:
        self.in_memory = in_memory

    def write(self, result: ResultData, keep: np.ndarray, folder: Path, out: Path,
              link: str) -> None:
        write_csv(folder / self.output, self.cleaned_table(result, keep, out))

    def cleaned_table(self, result: ResultData, keep: np.ndarray, out: Path) -> pd.DataFrame:
        """The rows of the input table that hold kept samples, in table order."""
        data = result.dataset
        return data.table.iloc[data.rows[keep]].copy()


class PathTableWriter(TableWriter):
    """A CSV of image paths: its kept rows, relative paths rewritten relative to
    ``out`` so that they still point at the same images."""

    def cleaned_table(self, result: ResultData, keep: np.ndarray, out: Path) -> pd.DataFrame:
        cleaned = super().cleaned_table(result, keep, out)
        column = result.params["path_column"]
        base = self.path_base(result.dataset)
        cleaned[column] = [
            p if os.path.isabs(p) else os.path.relpath(base / p, out)
            for p in cleaned[column].astype(str)
        ]
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

    def cleaned_table(self, result: ResultData, keep: np.ndarray, out: Path) -> pd.DataFrame:
        if result.dataset.kind != "images":
            return TableWriter.cleaned_table(self, result, keep, out)
        return super().cleaned_table(result, keep, out)

    def path_base(self, data: Dataset) -> Path:
        return Path(data.source).resolve()

    def forbidden(self, source: str | os.PathLike, files: list | None) -> list[Path]:
        # its `source` may be just the current folder: the images only
        return image_roots(files) if files else []


#: The writer of each ``Dataset.origin``.
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


register_writer("folder", ImageTreeWriter())
register_writer("paths", PathTableWriter())
register_writer("dataframe", DataFrameWriter())
register_writer("features", TableWriter())
register_writer("arrays", TableWriter(in_memory=True))
register_writer("hf", TableWriter(in_memory=True))
register_writer("torch", TableWriter(in_memory=True))


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
