"""Atomic writes: a reader never sees a half-written file under ``--out``.

Text is UTF-8 with ``surrogateescape``: a file name that is not valid UTF-8
(``caf\xe9.png``, which Python holds as ``'caf\udce9.png'``) is written as the
bytes it is made of and read back (:data:`TEXT_ERRORS`) as the same name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: How labelclean's text files encode what is not UTF-8 (file names' stray bytes).
TEXT_ERRORS = "surrogateescape"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file lives in the destination folder so that ``os.replace``
    is a same-filesystem rename, which POSIX makes atomic.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file 0600, and some writers (safetensors) replace
        # it with a new 0600 file: give the result the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", errors=TEXT_ERRORS) as f:
            f.write(text)

    return atomic_write(path, _w)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, encoding="utf-8",
                                                    errors=TEXT_ERRORS))


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    return atomic_write(path, _w)


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``; anything else (missing, unreadable, not JSON,
    not an object) is one :class:`~labelclean.errors.LabelcleanError` line."""
    from .errors import LabelcleanError

    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LabelcleanError(f"cannot read {path}: {first}") from None
    if not isinstance(value, dict):
        raise LabelcleanError(f"{path} is damaged: not a JSON object")
    return value


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
