"""Benchmark the cleaner against injected noise with a known mask.

:func:`run_bench` takes a dataset whose labels are trusted, corrupts a fraction
of them with :func:`labelclean.noise.inject_noise`, runs a
:class:`~labelclean.cleaner.Cleaner` on the corrupted copy, and scores the
flags against the injected mask. The mask is passed to the cleaner only so
that its history carries the per-epoch truth metrics (for the oracle below); it
never influences ``t_c`` or the flags.

Per seed it reports

* ``precision, recall, f1`` of the flags and ``auroc`` of the ranking by
  ``score`` (and ``auroc_p_noisy`` of the ranking by ``p_noisy``);
* ``est_rate`` (fraction flagged) against ``true_rate``;
* ``t_c``, ``epochs`` trained, ``wall_s`` and ``cpu_s`` (``time.process_time``,
  all threads of this process);
* ``verdict``: the run's verdict status (a ``withheld`` run flags nothing, so its
  precision and recall are those of no flags; its ``auroc`` still ranks by score);
* the *oracle*: ``oracle_f1``, the best F1 any epoch of the same run would
  have given with the same flagging rule (history's ``true_f1`` maximum),
  ``oracle_epoch``, and ``f1_gap = oracle_f1 - f1``, what choosing ``t_c``
  without the truth cost;
* with ``retrain=True`` and a test set: ``a_n`` (trained on the noisy labels
  for ``max_epochs``, no early stop), ``a_c`` (retrained from scratch on the
  unflagged samples), ``a_p`` (trained on the truly clean samples only), all
  test accuracies, and ``Q = (a_c - a_n) / (a_p - a_n)`` (paper fig. 6E).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from . import rundir
from ._io import write_csv
from .checks import check_rate, check_seed
from .cleaner import Cleaner, CleanResult
from .dataset import Dataset
from .errors import LabelcleanError
from .formats import input_footprint
from .models import create_model, default_model, input_statistics
from .noise import NOISE_KINDS, inject_noise, precision_recall_f1
from .paths import check_input
from .training import TrainConfig, Trainer

#: Columns of the printed table (the CSV has every column).
TABLE_COLUMNS = (
    "seed", "precision", "recall", "f1", "auroc", "est_rate", "true_rate", "t_c",
    "oracle_f1", "oracle_epoch", "f1_gap", "epochs", "wall_s", "cpu_s",
)


def corrupt(data: Dataset, kind: str, rate: float, seed: int) -> Dataset:
    """A copy of ``data`` with noisy labels and ``noise_mask`` set to the changed ones."""
    if kind not in NOISE_KINDS:
        raise LabelcleanError(f"noise must be one of {', '.join(NOISE_KINDS)}")
    check_rate(rate, "--rate")
    noisy, mask = inject_noise(data.y, data.num_classes, rate, kind, seed=seed)
    return dataclasses.replace(data, y=noisy, noise_mask=mask)


def auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` ranking ``truth`` (NaN for one class)."""
    truth = np.asarray(truth, dtype=bool)
    if truth.all() or not truth.any():
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth, score))


prf = precision_recall_f1  # the name the benchmark scripts use


def aligned(result: CleanResult, column: str) -> np.ndarray:
    """``result.scores[column]`` in dataset order (the frame is sorted by suspicion)."""
    out = np.empty(len(result.scores), dtype=result.scores[column].dtype)
    out[result.scores["index"].to_numpy()] = result.scores[column].to_numpy()
    return out


def evaluate_result(result: CleanResult, mask: np.ndarray) -> dict[str, Any]:
    """Truth metrics of one :class:`CleanResult` (everything but timing and retraining)."""
    flags = aligned(result, "flagged").astype(bool)
    precision, recall, f1 = prf(flags, mask)
    h = result.history
    if "true_f1" in h and len(h):
        best = int(h["true_f1"].to_numpy().argmax())
        oracle_f1, oracle_epoch = float(h["true_f1"].iloc[best]), int(h["epoch"].iloc[best])
    else:
        oracle_f1, oracle_epoch = float("nan"), -1
    return {
        "precision": precision, "recall": recall, "f1": f1,
        "auroc": auroc(mask, aligned(result, "score")),
        "auroc_p_noisy": auroc(mask, aligned(result, "p_noisy")),
        "n_flagged": int(flags.sum()), "n_noisy": int(mask.sum()),
        "est_rate": float(flags.mean()), "true_rate": float(mask.mean()),
        "t_c": result.t_c, "epochs": int(result.timing["epochs_trained"]),
        "oracle_f1": oracle_f1, "oracle_epoch": oracle_epoch, "f1_gap": oracle_f1 - f1,
    }


def train_and_test(
    train: Dataset, test: Dataset, model: str | None, config: TrainConfig, seed: int
) -> float:
    """Test accuracy of ``model`` trained from scratch on ``train`` for ``config.max_epochs``."""
    torch.manual_seed(seed)
    mean, std = input_statistics(train.x)
    net = create_model(
        model or default_model(train.kind), train.input_shape, train.num_classes, mean, std
    )
    trainer = Trainer(net, train.x, train.y, config)
    for _ in range(config.max_epochs):
        trainer.train_epoch()
    s = trainer.evaluate(test.x, test.y)
    return float((s.pred == test.y).mean())


def retrain_accuracies(
    noisy: Dataset, flags: np.ndarray, test: Dataset, cleaner: Cleaner
) -> dict[str, float]:
    """``a_n``, ``a_c``, ``a_p`` and ``Q`` (see the module docstring)."""
    config = cleaner.train_config(len(noisy), cleaner.resolved_workers(noisy),
                                  input_shape=noisy.input_shape, kind=noisy.kind)
    mask = noisy.noise_mask
    a_n = train_and_test(noisy, test, cleaner.model, config, cleaner.seed)
    a_c = train_and_test(noisy.subset(np.flatnonzero(~flags)), test, cleaner.model, config,
                         cleaner.seed)
    a_p = train_and_test(noisy.subset(np.flatnonzero(~mask)), test, cleaner.model, config,
                         cleaner.seed)
    q = (a_c - a_n) / (a_p - a_n) if abs(a_p - a_n) > 1e-12 else float("nan")
    return {"a_n": a_n, "a_c": a_c, "a_p": a_p, "Q": q}


def run_bench(
    data: str | Path | Dataset,
    *,
    noise: str = "symmetric",
    rate: float = 0.2,
    seeds: list[int] | tuple[int, ...] = (0, 1, 2),
    retrain: bool = False,
    test: str | Path | Dataset | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = None,
    **cleaner_kwargs: Any,
) -> pd.DataFrame:
    """Benchmark one noise setting over ``seeds``; one row per seed.

    ``data`` must carry trusted labels. ``cleaner_kwargs`` go to
    :class:`~labelclean.cleaner.Cleaner` (``seed`` is set per row). With
    ``out``, writes ``bench.csv`` there (and ``flags_seed<k>.csv`` per seed),
    as a run writes its folder (:mod:`labelclean.rundir`): ``out`` must be
    empty or absent, or hold a previous bench and ``overwrite`` be given; it is
    written beside ``out`` and swapped in once every seed is done.
    """
    if retrain and test is None:
        raise LabelcleanError("--retrain needs a held-out test set (--test)")
    # every setting before any data is read or any folder made
    if noise not in NOISE_KINDS:
        raise LabelcleanError(f"noise must be one of {', '.join(NOISE_KINDS)}")
    check_rate(rate, "--rate")
    if not len(seeds):
        raise LabelcleanError("--seeds names no seed")
    for seed in seeds:
        check_seed(seed, "--seeds")
    if "seed" in cleaner_kwargs:  # each row's seed is one of seeds: never dropped silently
        raise LabelcleanError("run_bench takes seeds=[...], not seed=")
    base = Cleaner(**cleaner_kwargs)
    base.validate()
    staging = None
    if out is not None:
        # bench.csv and the flags must not land in the data they measure
        paths = [p for p in (data, test) if isinstance(p, (str, os.PathLike))]
        forbidden = []
        for p in paths:
            check_input(p)
            forbidden += input_footprint(p, base.kind, path_column=base.path_column)
        staging = rundir.begin(out, kind="bench", overwrite=overwrite, inputs=forbidden)
        staging.private_to(paths)
    with staging if staging is not None else contextlib.nullcontext():
        df = _bench(base, data, noise, rate, list(seeds), retrain, test, staging, echo,
                    cleaner_kwargs)
        if staging is not None:
            staging.commit()
    return df


def _bench(base: Cleaner, data: str | Path | Dataset, noise: str, rate: float,
           seeds: list[int], retrain: bool, test: str | Path | Dataset | None,
           staging: rundir.Staging | None, echo: Callable[[str], None] | None,
           cleaner_kwargs: dict[str, Any]) -> pd.DataFrame:
    """:func:`run_bench`'s work, writing into ``staging`` (when given)."""
    clean = base.load(data)
    test_ds = None
    if test is not None:
        test_ds = test if isinstance(test, Dataset) else base.load(test, classes=clean.classes)
        if test_ds.input_shape != clean.input_shape:
            raise LabelcleanError(
                f"test inputs are {test_ds.input_shape}, training inputs {clean.input_shape}"
            )
    out_dir = None if staging is None else staging.path
    rows = []
    for seed in seeds:
        noisy = corrupt(clean, noise, rate, seed)
        cleaner = Cleaner(**{**cleaner_kwargs, "seed": seed})
        w0, c0 = time.perf_counter(), time.process_time()
        result = cleaner.fit(noisy, noise_mask=noisy.noise_mask)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        row: dict[str, Any] = {"noise": noise, "rate": rate, "seed": seed, "n": len(noisy)}
        row.update(evaluate_result(result, noisy.noise_mask))
        row.update({"verdict": result.verdict.status,
                    "wall_s": wall, "cpu_s": cpu, "model": result.params["model"],
                    "score": cleaner.score, "window": cleaner.window,
                    "threads": torch.get_num_threads()})
        if retrain:
            flags = aligned(result, "flagged").astype(bool)
            row.update(retrain_accuracies(noisy, flags, test_ds, cleaner))
        rows.append(row)
        if out_dir is not None:
            write_csv(out_dir / f"flags_seed{seed}.csv", result.scores)
        if echo is not None:
            echo(f"seed {seed}: F1 {row['f1']:.3f} (oracle {row['oracle_f1']:.3f} at epoch "
                 f"{row['oracle_epoch']}), t_c {row['t_c']}, {wall:.0f} s wall")
    df = pd.DataFrame(rows)
    if out_dir is not None:
        write_csv(out_dir / "bench.csv", df)
    return df


def format_table(df: pd.DataFrame) -> str:
    """The per-seed rows and a mean ± std line, as fixed-width text."""
    cols = [c for c in TABLE_COLUMNS if c in df] + [
        c for c in ("a_n", "a_c", "a_p", "Q") if c in df
    ]
    body = df[cols].copy()
    fmt = {c: "{:.3f}".format for c in cols if body[c].dtype.kind == "f"}
    fmt.update({c: "{:.1f}".format for c in ("wall_s", "cpu_s") if c in cols})
    text = body.to_string(index=False, formatters=fmt)
    if len(df) > 1:
        stats = []
        for c in cols:
            if c == "seed":
                stats.append("mean±sd")
            elif df[c].dtype.kind in "fi":
                stats.append(f"{df[c].mean():.3f}±{df[c].std(ddof=1):.3f}")
            else:
                stats.append("")
        pairs = zip(cols, stats, strict=True)
        text += "\n" + "  ".join(f"{c}={s}" for c, s in pairs if s and c != "seed")
    return text
