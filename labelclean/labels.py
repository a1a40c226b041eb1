"""Labels as written into class names, and class names into indices.

One rule for every input format: a label cell becomes its class name with
:func:`label_name`, class names get their indices in lexical order
(:func:`class_sort_key`, as torchvision and cleanlab), and a label outside the
classes is refused by name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import LabelcleanError


def label_name(v: object) -> str:
    """A label cell as a class name: ``3.0`` -> ``"3"``, surrounding spaces stripped."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def natural_key(s: str) -> list:
    """``"c2" < "c10"``: for listing names in messages, not for class indices."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def class_sort_key(name: str) -> str:
    """The order class names get their indices in (``CLASS_ORDER``): plain
    lexical order, as torchvision's ``ImageFolder`` (``sorted(entry.name)``) and
    cleanlab use, so ``"10"`` comes before ``"2"`` and the indices match theirs."""
    return name


def sorted_classes(names: Iterable[str]) -> list[str]:
    """Distinct class names in index order (:func:`class_sort_key`)."""
    return sorted(set(names), key=class_sort_key)


def class_list(labels: pd.Series, classes: list[str] | None, source: Path) -> list[str]:
    """``classes`` when given, else the sorted labels found (at least two)."""
    if classes is not None:
        return list(classes)
    found = sorted_classes(labels.map(label_name))
    if len(found) < 2:
        raise LabelcleanError(f"{source.name} has a single class ({found[0]}); need two")
    return found


def encode_labels(labels: pd.Series, classes: list[str], source: Path) -> np.ndarray:
    """Each label's index in ``classes`` (``int64``); one not among them is refused."""
    index = {c: i for i, c in enumerate(classes)}
    names = labels.map(label_name)
    unknown = sorted(set(names) - set(index), key=natural_key)
    if unknown:
        raise LabelcleanError(
            f"{source.name}: label {unknown[0]!r} is not one of the training classes"
        )
    return names.map(index).to_numpy(dtype=np.int64)
