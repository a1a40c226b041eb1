"""Reading a run folder back: the one reader of what :mod:`labelclean.export` wrote.

:mod:`labelclean.rundir` owns the layout of ``--out`` (the file names, the
marker and manifest, the atomic writer); this module is the reader it
designates. The report (:mod:`labelclean.report`), ``labelclean apply``
(:mod:`labelclean.review`) and the tests all read a run through
:func:`read_run`, so a run folder is checked the same way wherever it is
used: ``run.json`` and ``scores.csv`` must be there and agree with each other
and with the manifest, and ``scores.csv`` must hold one row per sample.

What a run folder holds is untrusted (the marker may be gone, the manifest
rewritten): every value of ``run.json`` a reader uses has its type checked
(:data:`RUN_TYPES`), as have ``scores.csv``'s numbers, ``metrics.csv`` and the
per-epoch arrays; a damaged file is one :class:`LabelcleanError` line naming
it, never a traceback nor a value shown unchecked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from ._io import TEXT_ERRORS, read_json_object
from .errors import LabelcleanError
from .rundir import (
    CHECKPOINT_DIR,
    INTEGRITY_FILES,
    LOSSES_FILE,
    MARGINS_FILE,
    METRICS_FILE,
    RUN_FILE,
    SCORES_FILE,
    UNREADABLE_FILE,
    verify,
)

#: ``scores.csv`` columns every reader relies on.
REQUIRED_COLUMNS = ("index", "sample_id", "given_label", "flagged", "rank")
#: Read as text, so that a class named ``"01"`` stays ``"01"``.
TEXT_COLUMNS = ("sample_id", "given_label", "predicted_label", "suggested_label")
MODEL_FILE = f"{CHECKPOINT_DIR}/model.json"
#: ``scores.csv`` columns that must be numbers when present.
NUMERIC_COLUMNS = ("index", "rank", "predicted_prob", "p_noisy", "loss", "score", "margin")

# Types of run.json's values, as readers use them: "int", "num" (a finite or
# non-finite number, not a bool), "bool", "str", "list", "dict"; "?" before one
# allows null. Nested dicts are checked key by key; a key that is absent is
# left for readers to default.
_INT, _NUM, _STR = "int", "num", "str"
RUN_TYPES: dict[str, Any] = {
    "t_c": _INT,
    "samples": _INT,
    "flagged": _INT,
    "kept": _INT,
    "estimated_noise_rate": _NUM,
    "second_population_found": "?bool",
    "t_c_in_phase_II": "?bool",
    "stop_reason": "?str",
    "val_accuracy_at_t_c": _NUM,
    "labelclean_version": "?str",
    "input": {"source": _STR, "origin": _STR, "kind": _STR, "classes": ["str"],
              "class_order": "?str", "input_shape": ["int"], "unreadable": _INT,
              "samples": _INT, "class_to_idx": "dict"},
    "params": {"window": "?int", "suspicion": "?str", "model": "?str", "device": "?str",
               "pretrained": "?bool", "weights": "?str", "model_input": "?dict",
               "recipe": "?dict", "path_column": _STR, "label_column": _STR},
    "mixture_at_t_c": "?dict",
    "timing": {"epochs_trained": _INT, "total_seconds": _NUM, "train_seconds": _NUM,
               "observe_seconds": _NUM},
    "phase_boundaries": "?spans",
    "verdict": {"status": "?str", "text": "?str", "reason": "?str", "advice": "?str",
                "forced": "?bool"},
    "against_truth": {"precision": _NUM, "recall": _NUM, "f1": _NUM,
                      "true_noise_rate": _NUM},
    "environment": "dict",
    "flagged_share_by_class": "?dict",
    "estimate": "?dict",
    "outputs": "dict",
}

_View = TypeVar("_View", bound="RunFolder")


@dataclass
class RunFolder:
    """What a run folder holds, as read by :func:`read_run`.

    ``scores`` is one row per training sample in index order (row ``i`` is
    sample ``i``), text columns kept as text and ``flagged`` as bool;
    ``losses`` and ``margins`` are ``(epochs, N)`` memory maps, or ``None``
    when the file is missing or not of that shape; ``metrics`` is empty when
    ``metrics.csv`` is missing, ``unreadable`` when the run skipped nothing,
    ``model`` when ``checkpoint/model.json`` is missing.
    """

    root: Path
    run: dict
    metrics: pd.DataFrame
    scores: pd.DataFrame
    losses: np.ndarray | None
    unreadable: pd.DataFrame
    model: dict
    margins: np.ndarray | None = None

    @classmethod
    def of(cls: type[_View], folder: RunFolder) -> _View:
        """The same files seen as ``cls`` (a subclass adding views, such as the report's)."""
        return cls(**{f.name: getattr(folder, f.name) for f in fields(RunFolder)})

    @property
    def t_c(self) -> int:
        return int(self.run["t_c"])

    @property
    def window(self) -> int:
        """Epochs each sample's loss suspicion averages its loss over (1: the paper's loss)."""
        try:
            return max(1, int(self.run.get("params", {}).get("window") or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def suspicion(self) -> str:
        """The per-sample suspicion score the mixture was fitted to and the flags read
        (``params["suspicion"]``): ``"loss"``, ``"logloss"`` or ``"aum"``; ``"loss"``
        for runs made before the choice existed."""
        return str(self.run.get("params", {}).get("suspicion") or "loss").lower()

    @property
    def classes(self) -> list[str]:
        """The run's classes: the checkpoint's, else the input's."""
        classes = self.model.get("classes") or self.run.get("input", {}).get("classes") or []
        return [str(c) for c in classes]

    @property
    def flagged(self) -> pd.DataFrame:
        """Flagged samples, most suspicious first."""
        f = self.scores[self.scores["flagged"]]
        return f.sort_values("rank", kind="stable").reset_index(drop=True)

    @property
    def source(self) -> Path:
        """The input the run read (a folder or a CSV)."""
        return Path(self.run.get("input", {}).get("source", "."))

    @property
    def origin(self) -> str | None:
        return self.run.get("input", {}).get("origin")

    @property
    def id_column(self) -> str:
        """The column of ``flagged_samples.csv`` that names a sample."""
        return "path" if self.run.get("input", {}).get("kind") == "images" else "row"


def read_run(run_dir: str | os.PathLike) -> RunFolder:
    """Read the files of a run folder (see :class:`RunFolder`).

    Raises
    ------
    LabelcleanError
        When ``run_dir`` is not a complete labelclean run (``run.json`` or
        ``scores.csv`` missing or unreadable), or is damaged: a file differs
        from the manifest, or ``scores.csv`` disagrees with ``run.json`` or
        does not hold samples ``0..N-1``.
    """
    root = Path(run_dir).resolve()
    if not (root / RUN_FILE).is_file():
        raise LabelcleanError(f"{root} is not a labelclean run: {RUN_FILE} is missing")
    if not (root / SCORES_FILE).is_file():
        raise LabelcleanError(
            f"{root} is not a complete labelclean run: {SCORES_FILE} is missing")
    # first: a file changed after the run is named as such, not as unparsable
    verify(root, INTEGRITY_FILES)
    run = read_json_object(root / RUN_FILE)
    check_types(root / RUN_FILE, run, RUN_TYPES)
    scores = _read_scores(root / SCORES_FILE)
    check_scores(root, run, scores)
    metrics_file = root / METRICS_FILE
    metrics = _read_metrics(metrics_file) if metrics_file.is_file() else pd.DataFrame()
    unreadable_file = root / UNREADABLE_FILE
    unreadable = (
        _read_table(unreadable_file, ("path", "reason"), dtype=str, keep_default_na=False,
                    encoding_errors=TEXT_ERRORS)
        if unreadable_file.is_file()
        else pd.DataFrame({"path": [], "reason": []})
    )
    model_file = root / MODEL_FILE
    model = read_json_object(model_file) if model_file.is_file() else {}
    check_types(model_file, model, {"classes": ["str"], "model": "?str"})
    return RunFolder(
        root=root, run=run, metrics=metrics, scores=scores,
        losses=_read_per_epoch(root / LOSSES_FILE, len(scores)),
        unreadable=unreadable, model=model,
        margins=_read_per_epoch(root / MARGINS_FILE, len(scores)),
    )


def _read_scores(path: Path) -> pd.DataFrame:
    try:
        scores = pd.read_csv(path, dtype=dict.fromkeys(TEXT_COLUMNS, str),
                             keep_default_na=False, encoding_errors=TEXT_ERRORS)
        missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
        if missing:
            raise KeyError(f"no column {', '.join(missing)}")
        scores["flagged"] = scores["flagged"].astype(str).str.lower().isin(["true", "1"])
        for column in NUMERIC_COLUMNS:
            if column in scores.columns and not pd.api.types.is_numeric_dtype(scores[column]):
                raise ValueError(f"its column {column!r} holds text, not numbers")
        return scores.sort_values("index", kind="stable").reset_index(drop=True)
    except (ValueError, KeyError, TypeError, pd.errors.ParserError) as e:
        raise LabelcleanError(f"cannot read {path}: {_first_line(e)}; the run folder is "
                              "damaged") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_table(path: Path, columns: tuple[str, ...] = (), **kw) -> pd.DataFrame:
    """A CSV of the run folder; a damaged one is one LabelcleanError line."""
    try:
        table = pd.read_csv(path, **kw)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise LabelcleanError(f"cannot read {path}: {_first_line(e)}; the run folder is "
                              "damaged") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LabelcleanError(f"{path} is damaged: no column {', '.join(missing)}")
    return table


def _read_metrics(path: Path) -> pd.DataFrame:
    """``metrics.csv``: one row per epoch, ``epoch`` counting 1, 2, ... when present."""
    metrics = _read_table(path)
    if "epoch" in metrics.columns:
        epoch = pd.to_numeric(metrics["epoch"], errors="coerce").to_numpy(dtype=float)
        if not (np.isfinite(epoch).all() and (epoch == np.round(epoch)).all()
                and (epoch >= 0).all()):
            raise LabelcleanError(f"{path} is damaged: its epoch column is not whole numbers")
        metrics["epoch"] = epoch.astype(np.int64)
    return metrics


def check_types(path: Path, value: dict, spec: dict[str, Any], where: str = "") -> None:
    """Refuse a JSON object whose values have other types than ``spec`` says
    (see :data:`RUN_TYPES`); ``path`` names the file in the message."""
    for key, want in spec.items():
        if key not in value:
            continue
        got, name = value[key], f"{where}{key}"
        if isinstance(want, dict):
            if not isinstance(got, dict):
                _damaged(path, name, "an object", got)
            check_types(path, got, want, f"{name}.")
        elif isinstance(want, list):
            if not isinstance(got, list) or not all(_is(v, want[0]) for v in got):
                _damaged(path, name, f"a list of {want[0]}", got)
        elif not _is(got, want):
            _damaged(path, name, want.lstrip("?"), got)


def _is(value: Any, want: str) -> bool:
    if want.startswith("?"):
        if value is None:
            return True
        want = want[1:]
    if want == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if want == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if want == "bool":
        return isinstance(value, bool)
    if want == "str":
        return isinstance(value, str)
    if want == "dict":
        return isinstance(value, dict)
    if want == "spans":  # {"I": [first, last], ...}: whole epochs
        return isinstance(value, dict) and all(
            isinstance(v, list) and len(v) == 2 and all(_is(e, "int") for e in v)
            for v in value.values())
    raise ValueError(want)


def _damaged(path: Path, key: str, want: str, got: Any) -> None:
    shown = repr(got)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise LabelcleanError(f"{path} is damaged: {key!r} should be {want}, not {shown}")


def check_scores(root: Path, run: dict, scores: pd.DataFrame) -> None:
    """Refuse a ``scores.csv`` (read by :func:`read_run`) that disagrees with
    ``run.json`` or is not one row per sample ``0..N-1``: a truncated or
    edited file."""
    where = root / SCORES_FILE
    samples, flagged = run.get("samples"), run.get("flagged")
    if isinstance(samples, int) and len(scores) != samples:
        raise LabelcleanError(
            f"{where} has {len(scores)} rows but {RUN_FILE} says {samples} samples; "
            "the run folder is damaged"
        )
    n_flagged = int(np.count_nonzero(scores["flagged"].to_numpy()))
    if isinstance(flagged, int) and n_flagged != flagged:
        raise LabelcleanError(
            f"{where} flags {n_flagged} samples but {RUN_FILE} says {flagged}; "
            "the run folder is damaged"
        )
    if not np.array_equal(scores["index"].to_numpy(), np.arange(len(scores))):
        raise LabelcleanError(f"{where} is damaged: sample indices are not 0..N-1")


def _read_per_epoch(path: Path, n: int) -> np.ndarray | None:
    # Memory-mapped: only the rows a reader touches are read from disk.
    if not path.is_file():
        return None
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:  # a truncated or foreign file
        raise LabelcleanError(f"cannot read {path}: {_first_line(e)}; the run folder is "
                              "damaged") from None
    if values.dtype.kind not in "fiu":
        raise LabelcleanError(f"{path} is damaged: it holds {values.dtype}, not numbers")
    if values.ndim != 2 or values.shape[1] != n:
        return None
    return values
