"""The early-stopped checkpoint: weights as safetensors plus a JSON that rebuilds them.

A checkpoint folder holds ``model.safetensors`` and ``model.json``. The JSON
records the model name, classes in index order, input shape and kind, and the
normalisation (which also lives in the weights as buffers), so
:func:`load_checkpoint` needs nothing from the run that made it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from ._io import atomic_write, read_json_object, write_json
from .errors import LabelcleanError
from .models import Classifier, create_model

WEIGHTS = "model.safetensors"
CONFIG = "model.json"


@dataclass
class Checkpoint:
    """A rebuilt model with what is needed to use it.

    ``model`` takes raw inputs: ``uint8`` images ``(N, C, H, W)`` of
    ``input_shape`` (as :func:`labelclean.sources.load_dataset` produces) or
    float features ``(N, D)``.
    """

    model: Classifier
    classes: list[str]
    config: dict

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.config["input_shape"])

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities, ``(N, num_classes)``, in ``classes`` order."""
        self.model.eval()
        device = next(self.model.parameters()).device
        out = [
            torch.softmax(self.model(x[i : i + batch_size].to(device)).float(), 1).cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out).numpy()

    def predict(self, x: torch.Tensor) -> list[str]:
        """Predicted class names."""
        return [self.classes[i] for i in self.predict_proba(x).argmax(1)]


def save_checkpoint(
    folder: str | os.PathLike, state_dict: dict, config: dict
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``folder`` atomically.

    ``model.json`` records the weights' sha256 (``weights_sha256``), so that a
    damaged or altered weights file is refused on loading instead of being used.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    # Serialised in memory and written by Python: a write error (a full disk)
    # surfaces as the OSError the CLI reports in one line, and the checksum is
    # that of the bytes meant to be on disk, not of whatever reached it.
    blob = save(tensors, metadata={"format": "pt"})
    atomic_write(folder / WEIGHTS, lambda tmp: Path(tmp).write_bytes(blob))
    write_json(folder / CONFIG, {**config, "weights_sha256": hashlib.sha256(blob).hexdigest()})
    return folder


def load_checkpoint(folder: str | os.PathLike, device: str = "cpu") -> Checkpoint:
    """Rebuild the model saved by a run (``<out>/checkpoint``).

    Parameters
    ----------
    folder:
        The checkpoint folder, or a run's ``--out`` folder containing one.
    device:
        Where to put the model.

    Raises
    ------
    LabelcleanError
        For a missing, unreadable, altered (checksum) or mismatched checkpoint.
    """
    folder = Path(folder)
    if (folder / "checkpoint" / CONFIG).is_file():
        folder = folder / "checkpoint"
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise LabelcleanError(f"no checkpoint in {folder} (expected {CONFIG} and {WEIGHTS})")
    config = read_json_object(folder / CONFIG)
    expected = config.get("weights_sha256")
    if expected is not None and _sha256(folder / WEIGHTS) != expected:
        raise LabelcleanError(
            f"{folder / WEIGHTS} does not match the checksum in {CONFIG}: "
            "the weights were damaged or replaced"
        )
    try:
        model = model_from_config(config)
    except LabelcleanError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
        raise LabelcleanError(f"{folder / CONFIG} is damaged: {_first_line(e)}") from None
    try:
        weights = load_file(folder / WEIGHTS)
    except Exception as e:  # noqa: BLE001 - SafetensorError, OSError, ...: all one thing here
        raise LabelcleanError(f"cannot read {folder / WEIGHTS}: {_first_line(e)}") from None
    try:
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, ValueError) as e:
        raise LabelcleanError(
            f"{folder / WEIGHTS} does not fit the model in {CONFIG}: {_first_line(e)}"
        ) from None
    model.to(device).eval()
    return Checkpoint(model=model, classes=list(config["classes"]), config=config)


def model_from_config(config: dict) -> Classifier:
    """The untrained :class:`Classifier` that ``model.json``'s ``config`` describes
    (its weights are the checkpoint's to load): no pretrained weights are fetched,
    and a checkpoint from before input resizing has no ``input_size``."""
    shape = tuple(config["input_shape"])
    stat_shape = (shape[0], 1, 1) if len(shape) == 3 else shape
    size = config.get("input_size")
    return create_model(
        config["model"], shape, len(config["classes"]),
        torch.tensor(config["mean"]).reshape(stat_shape),
        torch.tensor(config["std"]).reshape(stat_shape),
        input_size=None if size is None else tuple(size),
        interpolation=config.get("interpolation"),
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
