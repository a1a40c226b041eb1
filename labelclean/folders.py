"""What an image folder holds: ``root/<class>/<image>``, or a split root.

Only the layout (which files, which class): decoding the images is
:mod:`labelclean.sources`' job, and the folder input format
(:mod:`labelclean.fileformats`) puts the two together.

A folder whose only sub-folders are splits (``train/`` plus ``val/``,
``valid/`` or ``test/``), each holding class folders, is a *split root*
(:func:`split_layout`): ``train/`` is read as the training data, and
:meth:`labelclean.Cleaner.fit` takes ``val/`` (or ``valid/``) as the
validation set when none is given. ``test/`` is never read.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import LabelcleanError
from .labels import class_sort_key
from .paths import check_class_names

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

#: Sub-folder names that make a folder a split root (see :func:`split_layout`).
TRAIN_SPLIT = "train"
VAL_SPLITS = ("val", "valid", "validation")
SPLIT_NAMES = frozenset({TRAIN_SPLIT, *VAL_SPLITS, "test"})


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


def scan_folder(root: Path) -> tuple[list[Path], list[str]]:
    """Every image under ``root/<class>/`` (hidden files and folders left out) and its
    class, classes in index order and each class's files sorted by path."""
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
