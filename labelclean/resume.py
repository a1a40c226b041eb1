"""A run's whole state after each epoch, so that a killed run continues where it stopped.

A state folder (``<staging>/resume/`` for ``labelclean run``, see
:mod:`labelclean.rundir`; any folder for :meth:`labelclean.Cleaner.fit`'s
``state_dir``) holds:

``state.pt``
    Everything but the per-sample history: the trainer (weights, optimiser,
    epoch counter), the torch RNG streams, the decision policy (its detector
    included), every observer's ``state_dict`` (:mod:`labelclean.observers`),
    the per-epoch history rows, the best epoch's weights and
    per-sample outputs, whether training has ended and why, and the settings
    and data fingerprint it was made with. Written atomically after each epoch,
    so a kill at any moment leaves the previous epoch's state whole.
``samples-<epoch>.npz``
    That epoch's per-sample losses and margins, written by the sample recorder
    (:class:`labelclean.observers.SampleRecorder`). One file per epoch, written
    before the ``state.pt`` that counts it, so an epoch is never rewritten as
    the run grows (a million samples over 200 epochs would otherwise be
    rewritten every epoch).

The epoch order is a pure function of ``(seed, epoch)``
(:func:`labelclean.training.epoch_order`), so a trainer restored after epoch
``e`` sees the batches the uninterrupted run saw: on the same device and thread
count the resumed run's flags, ``t_c`` and metrics are those of the
uninterrupted run.

``state.pt`` is read with ``torch.load(weights_only=True)``: arrays are stored
as tensors and every other value is a plain Python value, so loading it runs no
pickled code.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._io import atomic_write
from .errors import LabelcleanError

STATE_FILE = "state.pt"
#: Bumped when the state's layout changes; an older state is refused, not misread.
STATE_VERSION = 2
_ARRAY = "__ndarray__"
#: Settings that change no number of the run: they may differ on resume. Not
#: ``weights``: another file of initial weights is another run.
FREE_SETTINGS = frozenset({"progress", "tensorboard_dir", "cache", "max_memory", "workers"})


def samples_file(epoch: int) -> str:
    return f"samples-{epoch:05d}.npz"


def save_state(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (plain values, numpy arrays, tensors) to ``folder/state.pt`` atomically."""
    payload = {"version": STATE_VERSION, **_encode(state)}
    path = Path(folder) / STATE_FILE
    try:
        return atomic_write(path, lambda tmp: torch.save(payload, tmp))
    except (OSError, RuntimeError) as e:
        # torch reports a full disk as a RuntimeError ("file write failed")
        raise LabelcleanError(
            f"cannot save the resume state in {folder}: {_first_line(e)} (is the disk "
            "full?); nothing was replaced") from None


def load_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The state saved in ``folder``, or None when there is none.

    Raises :class:`LabelcleanError` for a state that cannot be read or was
    written by another layout version.
    """
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling errors have no common type
        raise LabelcleanError(f"cannot read the resume state {path}: {_first_line(e)}") from None
    if not isinstance(payload, dict) or payload.get("version") != STATE_VERSION:
        raise LabelcleanError(
            f"{path} was written by another version of labelclean; start the run again "
            "without --resume"
        )
    payload.pop("version")
    return _decode(payload)


def save_samples(folder: str | os.PathLike, epoch: int, loss: np.ndarray,
                 margin: np.ndarray) -> Path:
    """Write epoch ``epoch``'s per-sample losses and margins atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, loss=loss, margin=margin)

    return atomic_write(Path(folder) / samples_file(epoch), write)


def load_samples(folder: str | os.PathLike, epochs: int) -> tuple[list[np.ndarray],
                                                                   list[np.ndarray]]:
    """The per-sample losses and margins of epochs ``1..epochs``."""
    losses, margins = [], []
    for epoch in range(1, epochs + 1):
        path = Path(folder) / samples_file(epoch)
        try:
            with np.load(path, allow_pickle=False) as z:
                losses.append(z["loss"])
                margins.append(z["margin"])
        except (OSError, ValueError, KeyError) as e:
            raise LabelcleanError(
                f"cannot read {path} of the resume state: {_first_line(e)}") from None
    return losses, margins


#: Samples hashed at a time by :func:`data_fingerprint` (bounds its memory on
#: memory-mapped inputs).
_HASH_ROWS = 4096


def data_fingerprint(ids: list[str], y: np.ndarray, classes: list[str],
                     x: Any = None) -> str:
    """A hash of the samples' names, labels, classes and, given ``x``, their
    content (the decoded images or the features, as trained on): resuming on
    other data, or on the same files with other pixels or values, is refused.

    Names are hashed as the bytes they stand for (``surrogateescape``), so a
    file name that is not valid UTF-8 is hashed like any other."""
    h = hashlib.blake2b(digest_size=32)
    h.update("\x1f".join(map(str, classes)).encode("utf-8", "surrogateescape"))
    h.update(b"\x1e")
    h.update("\x1f".join(map(str, ids)).encode("utf-8", "surrogateescape"))
    h.update(np.ascontiguousarray(np.asarray(y, dtype=np.int64)).tobytes())
    if x is not None:
        values = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        h.update(f"|{values.dtype}|{values.shape}|".encode())
        for start in range(0, len(values), _HASH_ROWS):
            h.update(np.ascontiguousarray(values[start:start + _HASH_ROWS]).tobytes())
    return h.hexdigest()


def check_compatible(saved: dict[str, Any], settings: dict[str, Any], fingerprint: str,
                     where: str | os.PathLike) -> None:
    """Refuse to continue a state made with other settings or other data: its
    epochs would be mixed with differently-trained ones, silently."""
    old = saved.get("settings", {})
    differ = sorted(k for k in set(old) | set(settings)
                    if k not in FREE_SETTINGS and old.get(k) != settings.get(k))
    if differ:
        shown = ", ".join(f"{k} ({old.get(k)!r} then, {settings.get(k)!r} now)"
                          for k in differ[:4])
        raise LabelcleanError(
            f"cannot resume the run in {where}: it was started with other settings: {shown}; "
            "pass the same options, or start again without --resume")
    if saved.get("data") != fingerprint:
        raise LabelcleanError(
            f"cannot resume the run in {where}: it was started on other data (other "
            "samples, labels, classes, or pixel or feature values); start again without "
            "--resume")


# ----------------------------------------------------------------------------- encoding


def _encode(value: Any) -> Any:
    # numpy arrays become tensors (weights_only loading accepts those); tagged so
    # that they come back as arrays, not tensors
    if isinstance(value, np.ndarray):
        return {_ARRAY: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return value[_ARRAY].numpy()
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
