"""Checks of settings that need no data: run before any input is read, any
folder is made or any training starts, for every command.

:meth:`labelclean.Cleaner.validate` calls :func:`check_cleaner` after its own
checks; ``labelclean demo`` and ``labelclean bench`` call :func:`check_seed`
and :func:`check_rate` for their own options.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LabelcleanError

#: Seeds numpy's and torch's generators all take: 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` as a seed, refused unless an integer in ``0 .. SEED_MAX``."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or not 0 <= value <= SEED_MAX:
        raise LabelcleanError(f"{name} must be an integer from 0 to {SEED_MAX} (2**32 - 1), "
                              f"got {value!r}")
    return int(value)


def check_rate(value: Any, name: str) -> float:
    """A fraction of labels to corrupt: a number in [0, 1)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0 <= value < 1:
        raise LabelcleanError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_package(module: str, setting: str, extra: str) -> None:
    """Refuse ``setting`` now when the optional package it needs is not installed."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise LabelcleanError(f"{setting} needs the {module} package: "
                              f"pip install 'labelclean[{extra}]'")


def check_folder_setting(value: Any, name: str) -> None:
    """A folder labelclean will write: a path, and not an existing file."""
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise LabelcleanError(f"{name} must be a folder path, got {value!r}")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise LabelcleanError(f"{name} {path} exists and is not a folder")


def check_file_setting(value: Any, name: str) -> None:
    """A file labelclean will read: a path to an existing file (what is in it is
    the reader's to check)."""
    if value is None:
        return
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise LabelcleanError(f"{name} must be a file path, got {value!r}")
    path = Path(value)
    if not path.exists():
        raise LabelcleanError(f"{name} file {path} does not exist")
    if not path.is_file():
        raise LabelcleanError(f"{name} {path} is not a file")


def check_cleaner(cleaner: Any) -> None:
    """The checks of :class:`labelclean.Cleaner`'s settings that its own
    ``validate`` leaves to this module: seed range, optional packages, files, folders."""
    check_seed(cleaner.seed)
    check_file_setting(cleaner.weights, "weights")
    check_folder_setting(cleaner.cache, "cache")
    check_folder_setting(cleaner.tensorboard_dir, "tensorboard_dir")
    if cleaner.tensorboard_dir is not None:
        check_package("tensorboard", "tensorboard_dir", "tensorboard")
