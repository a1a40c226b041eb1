"""The in-memory dataset every input becomes: :class:`Dataset`.

Every reader (:mod:`labelclean.formats` and the formats registered there) returns
one; training, the decision and the writers read nothing else about the input.
It sits below every reader so that each can import it without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch

from .errors import LabelcleanError

#: What ``--kind`` may force (``auto``: detected from the path); the command line's
#: choices. Formats registered later are detected, or named from Python.
SourceKind = Literal["auto", "folder", "paths", "features"]
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
        The name of the input format that read it (:mod:`labelclean.formats`):
        ``"folder"``, ``"paths"`` or ``"features"`` (files), ``"dataframe"``,
        ``"hf"``, ``"torch"`` or ``"arrays"`` (Python objects), or a registered
        one's. Writing the cleaned output and ``labelclean apply`` go by it.
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

