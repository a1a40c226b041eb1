"""Measurements as observers: one small protocol and a registry.

After each epoch, :class:`~labelclean.Cleaner`'s loop lets the decision policy
(:class:`~labelclean.decision.TcPolicy`) observe the epoch, builds the epoch's
history row (losses, accuracies) and then hands an :class:`EpochContext` to
every observer in :data:`REGISTRY` order. Each returns the columns it adds to
that row (``metrics.csv``); its ``state_dict`` goes into the resume state after
every epoch, so a resumed run measures as the uninterrupted one would. Once the
epochs are over, each observer's ``on_history`` sees the whole history and the
chosen ``t_c`` (a :class:`HistoryContext`) and returns run-level results (the
phase boundaries, say), which land in ``CleanResult.observed`` and ``run.json``.
The shape is Lightning's callbacks: hooks with no-op defaults, plus
``state_dict`` / ``load_state_dict``.

A new measurement is one class and one registry entry::

    class WeightNorm(Observer):
        def on_epoch_end(self, context):
            return {"weight_norm": float(sum(p.norm() ** 2 for p in
                                             context.trainer.model.parameters()) ** 0.5)}

    register("weight_norm", lambda setup: WeightNorm())

A factory receives an :class:`ObserverSetup` and may return ``None`` to stay
out of a run (the truth metrics without a noise mask, the progress bar in a
log, TensorBoard without a folder). Only rank 0 of a distributed run observes:
the others train their share. The policy is not an observer: the loop calls it
first, because the flags, the stop and the history row all depend on what it
decides; the mixture's columns come from an observer that reads its decision.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from . import resume
from .dataset import Dataset
from .decision import EpochDecision, TcPolicy
from .errors import LabelcleanError
from .noise import precision_recall_f1
from .settings import PROBE_BUDGET, Settings
from .training import EpochStats, SampleStats, TrainConfig, Trainer

if TYPE_CHECKING:
    from .mixture import LossMixture

log = logging.getLogger("labelclean")

#: Training steps one probe with the split costs, per sampled minibatch (measured:
#: docs/performance.md, "The order-parameter probe").
PROBE_STEPS_PER_BATCH = 1.6
DEFAULT_PROBE_BATCHES = 16


@dataclass
class ObserverSetup:
    """What a factory may read to build its observer, once per fit (after the
    model is built, before any state is restored)."""

    #: The run's settings (``probe_every``, ``seed``...), frozen.
    settings: Settings
    #: The resolved SGD settings (batch size, epoch budget...).
    config: TrainConfig
    trainer: Trainer
    dataset: Dataset
    #: The trusted mask of wrong labels, when one was given.
    noise_mask: np.ndarray | None
    #: The resume state folder (``Cleaner.fit``'s ``state_dir``), if any.
    state_dir: Path | None


@dataclass
class EpochContext:
    """What an observer may read at the end of an epoch."""

    #: The epoch just trained (1-based; ``trainer.epoch``).
    epoch: int
    #: The training pass.
    stats: EpochStats
    #: The per-sample pass the decision read (eval pass, or the training pass's
    #: with ``loss_pass="train"``).
    samples: SampleStats
    #: The validation set's pass, when there is one.
    val: SampleStats | None
    #: What the policy concluded about this epoch (scores, mixture, would-be flags).
    decision: EpochDecision
    policy: TcPolicy
    trainer: Trainer
    dataset: Dataset
    noise_mask: np.ndarray | None
    #: The epoch's history row so far: the loop's columns, then those of the
    #: observers before this one. Read it; return new columns instead of writing.
    row: dict[str, Any]


@dataclass
class HistoryContext:
    """What an observer may read once the epochs are over (rank 0, before the
    result is assembled)."""

    #: One row per epoch, the DataFrame ``CleanResult.history`` (and ``metrics.csv``)
    #: will be: the epochs' rows (timings included), ``unstable``, then the columns
    #: of the observers before this one. An observer may add columns (one value per
    #: epoch: the phase labeller adds ``phase``) but not change those already there.
    history: pd.DataFrame
    #: The chosen epoch (1-based).
    t_c: int
    #: The policy's decision at ``t_c`` (its mixture, whether a second population shows).
    decision: EpochDecision
    policy: TcPolicy
    dataset: Dataset
    noise_mask: np.ndarray | None


class Observer:
    """Base class of observers; every hook is optional."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this process (after a restored state: ``trainer.epoch``
        says how many epochs are already done)."""

    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        """The columns this observer adds to the epoch's history row (may be empty)."""
        return {}

    def on_fit_end(self) -> None:
        """After the last epoch, or when training failed (release what it holds)."""

    def on_history(self, context: HistoryContext) -> dict[str, Any]:
        """Once, after ``on_fit_end`` of a fit that ended well: run-level results
        by name (plain JSON values). They land in ``CleanResult.observed`` and as
        top-level keys of ``run.json``; a name another observer or ``run.json``
        already uses is refused."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything the observer has accumulated, as plain values and arrays
        (:func:`labelclean.resume.save_state` stores it); ``{}`` when stateless."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state_dict()``'s output."""


ObserverFactory = Callable[[ObserverSetup], Observer | None]

#: The observers of every fit, by name, in the order they see each epoch (and
#: add their columns): insertion order.
REGISTRY: dict[str, ObserverFactory] = {}


def register(name: str, factory: ObserverFactory, *, replace: bool = False) -> ObserverFactory:
    """Add ``factory`` to every later fit's observers under ``name``, after those
    already registered; returns the factory. A taken name is refused unless
    ``replace`` (which keeps its place)."""
    if name in REGISTRY and not replace:
        raise ValueError(f"an observer named {name!r} is already registered")
    REGISTRY[name] = factory
    return factory


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (no error when absent)."""
    REGISTRY.pop(name, None)


def build_observers(setup: ObserverSetup) -> dict[str, Observer]:
    """One observer per registered factory that takes part in this fit, by name."""
    built = {name: factory(setup) for name, factory in REGISTRY.items()}
    return {name: obs for name, obs in built.items() if obs is not None}


def end_of_epoch(observers: dict[str, Observer], context: EpochContext,
                 seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """Run every observer's ``on_epoch_end`` in order, adding its columns to
    ``context.row``; returns the row. A column that is already there is refused:
    two measurements under one name would overwrite each other silently. With
    ``seconds``, each observer's wall time is added to ``seconds[name]``."""
    for name, obs in observers.items():
        start = time.perf_counter()
        columns = obs.on_epoch_end(context)
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        clash = sorted(set(columns) & set(context.row))
        if clash:
            raise ValueError(f"observer {name!r} returned columns already in the history "
                             f"row: {', '.join(clash)}")
        context.row.update(columns)
    return context.row


def end_of_fit(observers: dict[str, Observer], context: HistoryContext) -> dict[str, Any]:
    """Run every observer's ``on_history`` in order; returns their run-level results,
    merged. A result name two observers return, or a history column an observer
    changed or dropped, is refused."""
    results: dict[str, Any] = {}
    for name, obs in observers.items():
        before = context.history.copy()
        found = obs.on_history(context)
        kept = [c for c in before.columns if c in context.history.columns]
        if kept != list(before.columns) or not context.history[kept].equals(before):
            raise ValueError(f"observer {name!r} changed history columns it did not add")
        clash = sorted(set(found) & set(results))
        if clash:
            raise ValueError(f"observer {name!r} returned results another observer "
                             f"returned: {', '.join(clash)}")
        results.update(found)
    return results


def observer_states(observers: dict[str, Observer]) -> dict[str, dict[str, Any]]:
    """Every observer's ``state_dict``, by name (a part of the resume state)."""
    return {name: obs.state_dict() for name, obs in observers.items()}


def load_observer_states(observers: dict[str, Observer], states: dict[str, dict[str, Any]],
                         where: str | Path) -> None:
    """Give each observer its saved state. A stateful observer the saved run did
    not have is refused: it would measure from the resumed epoch on as if from
    the first (stateless ones, e.g. a progress bar turned on, simply join)."""
    for name, obs in observers.items():
        if name in states:
            obs.load_state_dict(states[name])
        elif obs.state_dict():
            raise LabelcleanError(
                f"cannot resume the run in {where}: it was saved without the observer "
                f"{name!r}; start again without --resume")


# ---------------------------------------------------------------------- default observers


class SampleRecorder(Observer):
    """Every sample's loss and margin after every epoch (``CleanResult.losses`` and
    ``margins``).

    With a state folder, each epoch's arrays are written to a file of their own
    (:func:`labelclean.resume.save_samples`) as they come, before the resume state
    that counts them; the state holds only the count, so a million samples over
    200 epochs are never rewritten as the run grows.
    """

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir
        self.losses: list[np.ndarray] = []
        self.margins: list[np.ndarray] = []

    @classmethod
    def create(cls, setup: ObserverSetup) -> SampleRecorder:
        return cls(setup.state_dir)

    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        self.losses.append(context.samples.loss)
        self.margins.append(context.samples.margin)
        if self.state_dir is not None:
            resume.save_samples(self.state_dir, context.epoch, context.samples.loss,
                                context.samples.margin)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": len(self.losses)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.state_dir is None:
            raise LabelcleanError("the per-sample history is restored from a state folder")
        self.losses, self.margins = resume.load_samples(self.state_dir, int(state["epochs"]))


#: The columns :class:`MixtureColumns` adds, in ``metrics.csv`` order.
MIXTURE_COLUMNS = ("m_c", "s_c", "m_w", "s_w", "r", "delta_L", "threshold", "separation",
                   "bimodal", "n_flagged")


class MixtureColumns(Observer):
    """The policy's mixture of the epoch's suspicion scores (``MIXTURE_COLUMNS``) and
    how many samples it would flag. The policy fits the mixture (it is the
    decision); this only reports it."""

    @classmethod
    def create(cls, setup: ObserverSetup) -> MixtureColumns:
        return cls()

    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        mixture = context.decision.mixture
        return {
            "m_c": mixture.m_c, "s_c": mixture.s_c, "m_w": mixture.m_w,
            "s_w": mixture.s_w, "r": mixture.r, "delta_L": mixture.delta_L,
            "threshold": mixture.threshold, "separation": mixture.separation,
            "bimodal": mixture.bimodal, "n_flagged": int(context.decision.would_flag.sum()),
        }


class TruthMetrics(Observer):
    """Precision, recall and F1 of the epoch's would-be flags, and the mean loss of
    each true population, against a trusted noise mask (reported, never decided on)."""

    def __init__(self, noise_mask: np.ndarray) -> None:
        self.noise_mask = noise_mask

    @classmethod
    def create(cls, setup: ObserverSetup) -> TruthMetrics | None:
        return None if setup.noise_mask is None else cls(setup.noise_mask)

    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        mask, losses = self.noise_mask, context.samples.loss
        precision, recall, f1 = precision_recall_f1(context.decision.would_flag, mask)
        return {
            "true_precision": precision, "true_recall": recall, "true_f1": f1,
            "L_c_true": float(losses[~mask].mean()) if (~mask).any() else float("nan"),
            "L_w_true": float(losses[mask].mean()) if mask.any() else float("nan"),
        }


def probe_interval(probe_every: int | str, probe_batches: int | None, n: int,
                   batch_size: int) -> int:
    """Epochs between order-parameter probes (0: never); ``"auto"`` keeps the probe
    within :data:`PROBE_BUDGET` of training time (see ``Cleaner``'s ``probe_every``)."""
    if probe_every == "auto":
        k = probe_batches or DEFAULT_PROBE_BATCHES
        steps_per_epoch = max(1, n // batch_size)
        return max(1, math.ceil(PROBE_STEPS_PER_BATCH * k / (PROBE_BUDGET * steps_per_epoch)))
    try:
        every = int(probe_every)
    except (TypeError, ValueError):
        raise LabelcleanError(
            f"probe_every must be 'auto' or an integer, got {probe_every!r}"
        ) from None
    if every < 0:
        raise LabelcleanError(f"probe_every must be >= 0, got {every}")
    return every


class OrderParameterProbe(Observer):
    """The order parameters (:func:`labelclean.order_parameters.probe_order_parameters`)
    every ``every`` epochs, for the mixture's clean/mislabelled split and, with a
    noise mask, for the true split (``*_true`` columns)."""

    def __init__(self, every: int, *, seed: int, batch_size: int,
                 num_batches: int | None = None, spectrum: bool = False) -> None:
        self.every = every
        self.seed = seed
        self.batch_size = batch_size
        self.num_batches = num_batches
        self.spectrum = spectrum

    @classmethod
    def create(cls, setup: ObserverSetup) -> OrderParameterProbe | None:
        c = setup.settings
        every = probe_interval(c.probe_every, c.probe_batches, len(setup.dataset),
                               setup.config.batch_size)
        if not every:
            return None
        return cls(every, seed=c.seed, batch_size=setup.config.batch_size,
                   num_batches=c.probe_batches, spectrum=c.spectrum)

    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        if context.epoch % self.every:
            return {}
        return self.probe(context.trainer, context.decision.mixture, context.decision.scores,
                          context.noise_mask)

    def probe(self, trainer: Trainer, mixture: LossMixture, suspicion: np.ndarray,
              noise_mask: np.ndarray | None) -> dict[str, float]:
        """One probe of ``trainer``'s model now (its generator is a function of the
        seed and the epoch, so a resumed run probes as the uninterrupted one)."""
        from .order_parameters import SPLIT_KEYS, probe_order_parameters

        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "spectrum": self.spectrum,
                                  "label_smoothing": trainer.config.label_smoothing}
        if self.num_batches:
            kwargs["num_batches"] = self.num_batches
        gen = torch.Generator().manual_seed(self.seed * 31 + trainer.epoch)
        split = mixture.posterior(suspicion) > 0.5 if mixture.bimodal else None
        out = probe_order_parameters(
            trainer.model, trainer.x, trainer.y, split=split, generator=gen, **kwargs
        )
        if noise_mask is not None and noise_mask.any() and (~noise_mask).any():
            gen = torch.Generator().manual_seed(self.seed * 31 + trainer.epoch)
            truth = probe_order_parameters(
                trainer.model, trainer.x, trainer.y, split=noise_mask, generator=gen, **kwargs
            )
            out.update({f"{k}_true": truth[k] for k in SPLIT_KEYS if k in truth})
        return out


def progress_enabled(progress: bool | str) -> bool:
    """``"auto"``: show progress when stderr is a terminal (not in logs or pipes)."""
    if progress == "auto":
        return bool(getattr(sys.stderr, "isatty", lambda: False)())
    return bool(progress)


class ProgressBar(Observer):
    """A tqdm bar over the epoch budget, with the latest loss, accuracy, flags and t_c."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar: Any = None

    @classmethod
    def create(cls, setup: ObserverSetup) -> ProgressBar | None:
        if not progress_enabled(setup.settings.progress):
            return None
        return cls(setup.config.max_epochs)

    def on_fit_start(self, trainer: Trainer) -> None:
        # opened here, not in __init__: a refused resume must not leave a bar behind
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="labelclean", unit="epoch", leave=False)
        if trainer.epoch:  # a resumed run's bar starts where the killed one stopped
            self.bar.update(trainer.epoch)

    def on_epoch_end(self, context: EpochContext) -> dict[str, Any]:
        self.bar.update(1)
        self.bar.set_postfix(
            loss=f"{context.stats.train_loss:.3f}", acc=f"{context.row['eval_accuracy']:.2f}",
            flag=context.row["n_flagged"], t_c=context.policy.t_c,
        )
        return {}

    def on_fit_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


class PhaseLabeller(Observer):
    """The phase of every epoch (:func:`labelclean.phases.label_phases`: a ``phase``
    column) and each phase's first and last epoch (``phase_boundaries``), read
    from the whole history once the epochs are over."""

    @classmethod
    def create(cls, setup: ObserverSetup) -> PhaseLabeller:
        return cls()

    def on_history(self, context: HistoryContext) -> dict[str, Any]:
        from .phases import label_phases, phase_boundaries

        history = context.history
        # noisy: the four phases of a run with mislabelled samples, else the two of a clean one
        history["phase"] = label_phases(history, noisy=context.decision.noisy).to_numpy()
        bounds = phase_boundaries(history["phase"], history["epoch"])
        return {"phase_boundaries": {k: list(v) for k, v in bounds.items()}}


class TensorBoardLogger(Observer):
    """Every numeric history column as TensorBoard scalars, written once the
    epochs are over (:func:`log_tensorboard`), when ``tensorboard_dir`` is set."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = folder

    @classmethod
    def create(cls, setup: ObserverSetup) -> TensorBoardLogger | None:
        folder = setup.settings.tensorboard_dir
        return None if folder is None else cls(folder)

    def on_history(self, context: HistoryContext) -> dict[str, Any]:
        log_tensorboard(self.folder, context.history, context.t_c)
        return {}


def log_tensorboard(folder: str | Path, history: pd.DataFrame, t_c: int) -> Path:
    """Write every numeric column of ``history`` as TensorBoard scalars, step =
    epoch, in a new run folder under ``folder``; returns that run folder.

    Columns are grouped by what they measure (``loss/``, ``accuracy/``,
    ``mixture/``, ``order/``...), so TensorBoard shows one section each.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise LabelcleanError(
            "tensorboard_dir needs the tensorboard package: pip install 'labelclean[tensorboard]'"
        ) from None
    run = Path(folder) / time.strftime("%Y%m%d-%H%M%S")
    writer = SummaryWriter(log_dir=str(run))
    try:
        for row in history.to_dict("records"):
            step = int(row["epoch"])
            for name, value in row.items():
                if name == "epoch" or isinstance(value, str) or value is None:
                    continue
                value = float(value)
                if math.isfinite(value):
                    writer.add_scalar(f"{tensorboard_group(name)}/{name}", value, step)
        writer.add_scalar("decision/t_c", t_c, int(history["epoch"].iloc[-1]))
    finally:
        writer.close()
    log.info("TensorBoard scalars written to %s", run)
    return run


def tensorboard_group(column: str) -> str:
    """The TensorBoard section a history column is shown in."""
    if "loss" in column:
        return "loss"
    if "accuracy" in column or column == "classes_learned":
        return "accuracy"
    if column in (*MIXTURE_COLUMNS, "ready", "unstable"):
        return "mixture"
    if column.startswith(("seconds", "steps")):
        return "time"
    if column.startswith(("true_", "L_c_true", "L_w_true")):
        return "truth"
    return "order"


# The recorder first (the result's arrays), then the history columns in the
# order metrics.csv has always had them; progress after every column; then the
# end-of-fit observers: phases (adds `phase`), TensorBoard last (sees every column).
register("samples", SampleRecorder.create)
register("mixture", MixtureColumns.create)
register("truth", TruthMetrics.create)
register("order_parameters", OrderParameterProbe.create)
register("progress", ProgressBar.create)
register("phases", PhaseLabeller.create)
register("tensorboard", TensorBoardLogger.create)
