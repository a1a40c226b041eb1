"""Input formats: one registry entry per kind of input.

An :class:`InputFormat` is everything labelclean knows about one kind of input:
how to recognise it (:meth:`~InputFormat.detect`), read it into a
:class:`~labelclean.dataset.Dataset` (:meth:`~InputFormat.read`), what a run's
folders may not overlap (:meth:`~InputFormat.footprint` before reading,
:meth:`~InputFormat.forbidden` after), how a run writes its cleaned copy
(:meth:`~InputFormat.write_cleaned`: a format is a
:class:`~labelclean.writers.SourceWriter`, the writer of its own origin) and how
``labelclean apply`` writes the reviewed one (:meth:`~InputFormat.plan_apply`).
:func:`load_dataset`, the export of a run (``writers.writer_for``) and apply ask
the registry, :data:`FORMATS`; nothing else branches on the kind of input.

A new format is one class and one :func:`register_format` call, from any file::

    class ToyFormat(InputFormat):
        name = "toy"                      # Dataset.origin of what it reads
        output = "cleaned.toy"            # what a run writes its kept samples to

        def detect(self, source, **options):
            return Path(source).suffix == ".toy"

        def read(self, source, *, classes=None, **options):
            ...                           # a Dataset with origin="toy", source=Path(source)

        def write_cleaned(self, data, keep, folder, *, out, link, params):
            ...                           # data's samples where keep, into folder / self.output

    register_format(ToyFormat())

``labelclean run data.toy`` then detects it, and ``labelclean apply`` re-reads it
(:meth:`InputFormat.plan_apply`'s default) and writes the reviewed labels with
the same ``write_cleaned``. The built-ins are registered when the package is
imported, in the order detection needs: the image folder (a split root's
``train/`` included), the CSV of image paths, the CSV of features
(:mod:`labelclean.fileformats`), then the Python objects: a ``Dataset``
("arrays"), a pandas ``DataFrame``, a Hugging Face dataset, a torch dataset
(:mod:`labelclean.inmemory`). The command line's ``--kind`` choices stay the
built-in file formats (:data:`labelclean.dataset.SourceKind`); a registered file
format is detected, or named as ``kind`` to :func:`load_dataset`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .dataset import Dataset
from .errors import LabelcleanError
from .paths import check_input
from .writers import WRITERS, SourceWriter, register_writer, unregister_writer

if TYPE_CHECKING:
    from .runfiles import RunFolder

#: What can be read, for the message about an object no format reads.
ACCEPTED = ("a folder, a CSV, a pandas DataFrame, a Hugging Face datasets.Dataset "
            "or a torch Dataset of (image, label)")
#: The settings (``run.json``'s ``params``) that are reading options, as
#: :func:`load_dataset` takes them: what ``apply`` reads an input again with.
READ_OPTIONS = ("path_column", "label_column", "image_column", "root", "noise_column",
                "image_size", "skip_unreadable", "cache", "max_memory")


@dataclass(frozen=True)
class ApplyPlan:
    """What ``labelclean apply`` writes for a run, decided (and checked) before
    anything is written (:meth:`InputFormat.plan_apply`)."""

    #: ``write(folder, link)``: the reviewed dataset into the staging folder;
    #: ``link`` is how image files are placed (``writers.LINK_MODES``).
    write: Callable[[Path, str], None]
    #: Where each kept flagged sample's index ends up, for ``apply_log.csv``.
    destinations: dict[int, str]
    #: Input files the output copies besides the input itself (its permissions
    #: follow theirs too: ``labelclean.paths.privacy_strip``).
    reads: list[Path] = dataclasses.field(default_factory=list)
    #: ``link`` decides how the output refers to input files (``apply.json``'s ``link``).
    links: bool = False


class InputFormat(SourceWriter):
    """One kind of input (module docstring). Override what differs from the defaults:
    a file format needs ``name``, ``output``, :meth:`detect`, :meth:`read` and
    :meth:`write_cleaned`."""

    #: The datasets' ``origin`` (and the ``kind`` that forces it, for a file format).
    name: str = ""
    #: :meth:`detect` and :meth:`read` get a Python object, not a path; ``apply``
    #: cannot read it again.
    objects: bool = False
    #: Each class is a folder of the input and of the cleaned output, so class
    #: names must also be folder names (``labelclean.paths.class_name_problem``).
    class_folders: bool = False

    def detect(self, source: Any, **options: Any) -> bool:
        """Whether ``source`` (a path; an object for an ``objects`` format) is of this
        format, cheaply: the suffix, a header at most. ``options`` are
        :func:`load_dataset`'s keywords. The first format that says yes reads it."""
        return False

    def read(self, source: Any, **options: Any) -> Dataset:
        """``source`` as a :class:`Dataset` whose ``origin`` is :attr:`name`;
        ``options`` are :func:`load_dataset`'s keywords (``classes``: the class names
        to index labels by, when given). Problems are a one-line
        :class:`~labelclean.errors.LabelcleanError`."""
        raise NotImplementedError(f"the {self.name!r} input format reads nothing")

    def footprint(self, path: Path, **options: Any) -> list[Path]:
        """What the folders of a run over the input at ``path`` may not overlap, known
        before it is read (:func:`labelclean.paths.check_overlap`): by default the
        input itself. Never raises: a broken input is :meth:`read`'s to report."""
        return self.forbidden(path, None)

    def check_samples(self, run: RunFolder) -> None:
        """Refuse a run folder whose samples would make ``apply`` read or write
        outside its folders (an edited ``scores.csv``); by default nothing to check."""

    def plan_apply(self, run: RunFolder, labels: np.ndarray, out: Path) -> ApplyPlan:
        """How ``labelclean apply`` writes the reviewed dataset to ``out``:
        ``labels[i]`` is sample ``i``'s final label (``""``: removed). Checks only;
        nothing is written until :attr:`ApplyPlan.write` is called.

        By default the input is read again with the run's reading settings and
        classes, checked to hold the run's samples in order, and written by
        :meth:`write_cleaned` with the final labels in ``y``."""
        if not run.source.exists():
            raise LabelcleanError(f"the run's input {run.source} is gone")
        params = run.run.get("params", {})
        data = self.read(run.source, **read_options(params), classes=run.classes)
        if data.ids != [str(i) for i in run.scores["sample_id"]] or data.classes != run.classes:
            raise LabelcleanError(
                f"{run.source.name} no longer holds the run's samples in order; "
                "the input must not change between run and apply"
            )
        keep = labels != ""
        index = {c: i for i, c in enumerate(data.classes)}
        y = np.array([index[label] if label else given for label, given in zip(labels, data.y)],
                     dtype=np.int64)
        final = dataclasses.replace(data, y=y)

        def write(folder: Path, link: str) -> None:
            self.write_cleaned(final, keep, folder, out=out, link=link, params=params)

        kept = np.flatnonzero(keep)
        return ApplyPlan(write, {int(i): f"{self.output} sample {n + 1}"
                                 for n, i in enumerate(kept)})


#: The registered formats by name, in detection order.
FORMATS: dict[str, InputFormat] = {}


def register_format(fmt: InputFormat, *, first: bool = False,
                    replace: bool = False) -> InputFormat:
    """Register ``fmt`` under ``fmt.name``: detected after the formats already
    registered (before them with ``first``), and the writer of its origin
    (``writers.WRITERS``). A name taken by a format or a writer is refused unless
    ``replace`` (which keeps the old one's place unless ``first``). Returns ``fmt``."""
    if not fmt.name:
        raise ValueError(f"{type(fmt).__name__} has no name")
    if not replace and (fmt.name in FORMATS or fmt.name in WRITERS):
        raise ValueError(f"an input format or writer for origin {fmt.name!r} is "
                         "already registered")
    if first:
        others = {name: f for name, f in FORMATS.items() if name != fmt.name}
        FORMATS.clear()
        FORMATS.update({fmt.name: fmt, **others})
    else:
        FORMATS[fmt.name] = fmt
    register_writer(fmt.name, fmt, replace=True)
    return fmt


def unregister_format(name: str) -> None:
    """Remove the format ``name`` and its writer (no error when absent)."""
    fmt = FORMATS.pop(name, None)
    if fmt is not None and WRITERS.get(name) is fmt:
        unregister_writer(name)


def read_options(params: dict[str, Any]) -> dict[str, Any]:
    """The reading options among a run's settings (:data:`READ_OPTIONS`)."""
    return {k: params[k] for k in READ_OPTIONS if k in params}


def file_format(path: Path, kind: str = "auto", **options: Any) -> InputFormat:
    """The format that reads the file or folder ``path``: the one named ``kind``, or
    with ``"auto"`` the first that detects it."""
    files = [f for f in FORMATS.values() if not f.objects]
    if kind == "auto":
        found = next((f for f in files if f.detect(path, **options)), None)
        if found is None:
            raise LabelcleanError(
                f"{path} is neither a folder nor a .csv file; pass --kind to say what it is"
            )
        return found
    named = FORMATS.get(kind)
    if named is None or named.objects:
        names = ["auto", *(f.name for f in files)]
        raise LabelcleanError(f"unknown input kind {kind!r}: use {', '.join(names[:-1])} "
                              f"or {names[-1]}")
    return named


def read_object(obj: Any, **options: Any) -> Dataset:
    """A Python object, read by the first ``objects`` format that detects it."""
    for fmt in FORMATS.values():
        if fmt.objects and fmt.detect(obj, **options):
            return fmt.read(obj, **options)
    raise LabelcleanError(f"cannot read a {type(obj).__name__}: pass {ACCEPTED}")


#: What :func:`load_dataset` reads Python objects with (:func:`register_object_reader`).
_object_reader: Callable[..., Dataset] = read_object


def register_object_reader(reader: Callable[..., Dataset]) -> None:
    """Make ``reader(obj, **settings)`` what :func:`load_dataset` reads Python objects
    with, instead of the registered ``objects`` formats (:func:`read_object`)."""
    global _object_reader
    _object_reader = reader


def input_footprint(source: Any, kind: str = "auto", **options: Any) -> list[Path]:
    """What a run's folders may not overlap for the input ``source``, before it is
    read (:meth:`InputFormat.footprint`): nothing for a Python object, the path
    itself when no format takes it (reading it will say why)."""
    if not isinstance(source, (str, os.PathLike)):
        return []
    path = Path(source)
    try:
        fmt = file_format(path, kind, **options)
    except LabelcleanError:
        return [path]
    return fmt.footprint(path, **options)


def load_dataset(
    source: str | os.PathLike | Any,
    kind: str = "auto",
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
    """Read a folder, a file or a Python object into a :class:`Dataset`, with the
    input format that detects it (or the one ``kind`` names).

    Parameters
    ----------
    source:
        An image folder (or a split root, whose ``train/`` is read), a CSV of
        paths and labels, a CSV of features and labels, a file of a registered
        format, or a Python object: a pandas ``DataFrame`` of paths and labels, a
        Hugging Face ``datasets.Dataset``, or a torch ``Dataset`` of
        ``(image, label)`` (:mod:`labelclean.inmemory`).
    kind:
        ``"auto"`` picks the first registered format that detects the path:
        ``folder`` for a directory, ``paths`` for a CSV that has ``path_column``,
        ``features`` for any other CSV; or a format's name. Ignored for objects.
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
        physical RAM, ``sources.default_max_memory``). Above it they are decoded
        once into ``images-<key>.u8.npy`` in ``cache`` and memory-mapped
        (``Dataset.mapped``); without ``cache`` that is an error.

    Raises
    ------
    LabelcleanError
        For any problem with the input, with a one-line message.
    """
    options = dict(
        path_column=path_column, label_column=label_column, image_column=image_column,
        root=root, noise_column=noise_column, image_size=image_size, classes=classes,
        skip_unreadable=skip_unreadable, workers=workers, cache=cache, max_memory=max_memory,
    )
    if not isinstance(source, (str, os.PathLike)):
        return _object_reader(source, **options)
    path = check_input(source)
    return file_format(path, kind, **options).read(path, **options)
