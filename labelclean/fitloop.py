"""The fit loop: the epochs of one run, from the parts :class:`~labelclean.cleaner.Cleaner`
builds (the trainer, the ``t_c`` policy, the observers) and the run's frozen
:class:`~labelclean.settings.Settings`.

Per epoch::

    Trainer.train_epoch, Trainer.evaluate -> TcPolicy.observe (the decision)
    -> the history row, observers.end_of_epoch (their columns)
    -> the resume state (rank 0)

until the policy stops it or the epoch budget is spent; :meth:`FitLoop.run` returns
what :func:`~labelclean.result.assemble_result` needs (:class:`FitOutcome`). The loop
reads no input and builds no part, so that it can be driven without a ``Cleaner``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from . import resume as resume_mod
from .canaries import canary_labels, confusion
from .dataset import Dataset
from .decision import EpochDecision, TcPolicy
from .estimate import auc as estimate_auc
from .estimate import point as estimate_point
from .estimate import shift as estimate_shift
from .observers import (
    EpochContext,
    Observer,
    end_of_epoch,
    load_observer_states,
    observer_states,
)
from .settings import Settings
from .training import EpochStats, SampleStats, Trainer

log = logging.getLogger("labelclean")


@dataclass
class FitOutcome:
    """What the epochs leave for :func:`~labelclean.result.assemble_result` (rank 0)."""

    #: One history row per epoch (the loop's columns, the observers', the timings).
    rows: list[dict]
    #: ``(weights, samples, decision)`` at ``t_c``.
    chosen: tuple[dict, SampleStats, EpochDecision]
    stop_reason: str
    #: Seconds the run had taken before it was resumed (0 for a run never resumed).
    seconds_before: float
    #: Each observer's ``on_epoch_end`` wall time, summed over the epochs, by name.
    observer_seconds: dict[str, float]


class FitLoop:
    """Runs the epochs of one fit over parts built elsewhere.

    ``observers`` is empty on every rank but 0 (rank 0 alone decides, so it alone
    observes). With ``state_dir`` rank 0 saves the whole state after every epoch
    (:mod:`labelclean.resume`) and, when :meth:`run` is asked to resume, restores it
    first.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        trainer: Trainer,
        policy: TcPolicy,
        observers: dict[str, Observer],
        data: Dataset,
        val: Dataset | None = None,
        noise_mask: np.ndarray | None = None,
        dist: distributed.Dist,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.trainer = trainer
        self.policy = policy
        self.observers = observers
        self.data = data
        self.val = val
        self.noise_mask = noise_mask
        self.dist = dist
        self.state_dir = state_dir

    def run(self, *, resume: bool = False, started: float | None = None) -> FitOutcome | None:
        """Restore the state (``resume``), train until the policy stops or the epoch
        budget is spent, and return the outcome; None on every rank but 0.
        ``started`` is when the fit began (``time.perf_counter()``): the saved state's
        elapsed seconds count from it."""
        started = time.perf_counter() if started is None else started
        trainer, policy, observers, dist = self.trainer, self.policy, self.observers, self.dist
        run = _RunState(stop_reason=f"reached max_epochs={trainer.config.max_epochs}")
        saver = None
        if self.state_dir is not None and dist.is_main:
            data = self.data
            saver = _StateSaver(self.state_dir, self.settings.as_dict(),
                                resume_mod.data_fingerprint(data.ids, data.y, data.classes,
                                                            data.x))
            if resume:
                saver.restore(run, trainer, policy, observers)
        if resume and dist.enabled:
            _share_restored(dist, run, trainer)
        self._epochs(run, saver, started)
        if not dist.is_main:
            return None
        return FitOutcome(rows=run.rows, chosen=run.chosen(trainer, policy),
                          stop_reason=run.stop_reason, seconds_before=run.seconds_before,
                          observer_seconds=run.observer_seconds)

    def _epochs(self, run: _RunState, saver: _StateSaver | None, started: float) -> None:
        """The epoch loop: train, measure, let the policy decide, then the observers
        add their columns, and save the state; until the policy stops it or the
        epoch budget is spent (``run`` holds what it accumulates)."""
        trainer, policy, observers, dist = self.trainer, self.policy, self.observers, self.dist
        train, val_ds, noise_mask = self.data, self.val, self.noise_mask
        loss_pass, seed = self.settings.loss_pass, self.settings.seed
        max_epochs = trainer.config.max_epochs
        val_y = None if val_ds is None else val_ds.y
        val_x = None if val_ds is None else trainer.place(val_ds.x)
        try:
            for obs in observers.values():
                obs.on_fit_start(trainer)
            while not run.done and trainer.epoch < max_epochs:
                # the first epoch's training pass is recorded too: its predictions of
                # samples not yet trained on are the run's held-out evidence
                first = trainer.epoch == 0
                stats = trainer.train_epoch(record=loss_pass == "train" or first)
                t0 = time.perf_counter()
                if loss_pass == "train":
                    samples, canary = stats.samples, stats.canaries
                else:
                    samples, canary = trainer.evaluate(), trainer.evaluate_canaries()
                v = None if val_ds is None else trainer.evaluate(val_x, val_y)
                if not dist.is_main:  # rank 0 alone decides; the others follow its stop
                    _start_canaries(trainer, samples, train, seed, dist)
                    if distributed.stop_together(dist, False):
                        break
                    continue
                t1 = time.perf_counter()
                decision = _decide(policy, stats, samples, canary, train,
                                   trainer.visit_order(0) if first else None)
                t2 = time.perf_counter()
                row = end_of_epoch(observers, EpochContext(
                    epoch=stats.epoch, stats=stats, samples=samples, val=v, decision=decision,
                    policy=policy, trainer=trainer, dataset=train, noise_mask=noise_mask,
                    row=_history_row(stats, samples, decision, train.y, trainer.held_out,
                                     v, val_y,
                                     policy.first_visit_record() if first else {})),
                    seconds=run.observer_seconds)
                t3 = time.perf_counter()
                row.update({"seconds_train": stats.seconds, "seconds_eval": t1 - t0,
                            "seconds_decide": t2 - t1, "seconds_observers": t3 - t2,
                            "seconds_observe": t3 - t0})
                run.add(row, samples, decision, trainer)
                _start_canaries(trainer, samples, train, seed, dist)
                stop = distributed.stop_together(dist, policy.should_stop)
                if stop:
                    run.stop_reason = policy.stop_reason
                run.done = stop or trainer.epoch >= max_epochs
                if saver is not None:
                    run.seconds = run.seconds_before + time.perf_counter() - started
                    saver.save(run, trainer, policy, observers)
        finally:
            for obs in observers.values():
                obs.on_fit_end()


# ---------------------------------------------------------------------- run state


@dataclass
class _RunState:
    """What the training loop accumulates besides the trainer, the policy and the observers."""

    stop_reason: str
    rows: list[dict] = field(default_factory=list)
    #: ``(weights, samples, decision)`` of the candidate ``t_c``.
    best: tuple[dict, SampleStats, EpochDecision] | None = None
    #: ``(samples, decision)`` of the latest epoch (the fallback when no epoch is best).
    last: tuple[SampleStats, EpochDecision] | None = None
    #: Training has ended (the policy stopped it); a resumed run goes straight to the end.
    done: bool = False
    #: Seconds the run had taken before it was resumed.
    seconds_before: float = 0.0
    seconds: float = 0.0
    #: Each observer's ``on_epoch_end`` wall time, summed over the epochs, by name.
    observer_seconds: dict[str, float] = field(default_factory=dict)

    def add(self, row: dict, samples: SampleStats, decision: EpochDecision,
            trainer: Trainer) -> None:
        """Keep an epoch's history row, and its weights when it is the new candidate ``t_c``."""
        self.rows.append(row)
        if decision.is_best:
            self.best = (_cpu_copy(trainer.measured.state_dict()), samples, decision)
        self.last = (samples, decision)

    def chosen(self, trainer: Trainer,
               policy: TcPolicy) -> tuple[dict, SampleStats, EpochDecision]:
        """``(weights, samples, decision)`` at ``t_c``: the candidate's, or, when every
        epoch was unstable, the last epoch's (the policy is told so)."""
        if self.best is not None:
            return self.best
        samples, decision = self.last
        policy.settle_on(self.rows[-1]["epoch"])
        return _cpu_copy(trainer.measured.state_dict()), samples, decision


class _StateSaver:
    """Writes the run's state after each epoch and reads it back (:mod:`labelclean.resume`)."""

    def __init__(self, folder: Path, settings: dict, fingerprint: str) -> None:
        self.folder = folder
        self.settings = settings
        self.fingerprint = fingerprint

    def save(self, run: _RunState, trainer: Trainer, policy: TcPolicy,
             observers: dict[str, Observer]) -> None:
        best = None
        if run.best is not None:
            weights, samples, decision = run.best
            best = {"weights": weights, "samples": asdict(samples),
                    "decision": decision.to_dict()}
        last = None
        if run.best is None and run.last is not None:  # only the fallback needs it
            last = {"samples": asdict(run.last[0]), "decision": run.last[1].to_dict()}
        resume_mod.save_state(self.folder, {
            "settings": self.settings,
            "data": self.fingerprint,
            "epoch": trainer.epoch,
            "trainer": trainer.state_dict(),
            "rng": _rng_state(),
            "policy": policy.state_dict(),
            "observers": observer_states(observers),
            "rows": run.rows,
            "best": best,
            "last": last,
            "done": run.done,
            "stop_reason": run.stop_reason,
            "seconds": run.seconds,
            "observer_seconds": run.observer_seconds,
        })

    def restore(self, run: _RunState, trainer: Trainer, policy: TcPolicy,
                observers: dict[str, Observer]) -> None:
        state = resume_mod.load_state(self.folder)
        if state is None:
            log.info("no saved state in %s: the run starts from its first epoch", self.folder)
            return
        resume_mod.check_compatible(state, self.settings, self.fingerprint, self.folder)
        trainer.load_state_dict(state["trainer"])
        _set_rng_state(state["rng"])
        policy.load_state_dict(state["policy"])
        load_observer_states(observers, state["observers"], self.folder)
        run.rows = state["rows"]
        if state["best"] is not None:
            best = state["best"]
            run.best = (best["weights"], SampleStats(**best["samples"]),
                        EpochDecision.from_dict(best["decision"]))
        if state["last"] is not None:
            run.last = (SampleStats(**state["last"]["samples"]),
                        EpochDecision.from_dict(state["last"]["decision"]))
        run.done = bool(state["done"])
        run.stop_reason = state["stop_reason"]
        run.seconds_before = float(state["seconds"])
        run.observer_seconds = dict(state.get("observer_seconds", {}))
        log.info("resumed after epoch %d from %s", trainer.epoch, self.folder)


def _share_restored(dist: distributed.Dist, run: _RunState, trainer: Trainer) -> None:
    """Only rank 0 keeps the resume state; the others continue from its weights,
    optimiser, epoch and RNG streams (the same on every rank in DDP)."""
    shared = distributed.share(dist, {
        "trainer": _to_cpu(trainer.state_dict()), "rng": _rng_state(),
        "done": run.done} if dist.is_main else None)
    if not dist.is_main:
        trainer.load_state_dict(shared["trainer"])
        _set_rng_state(shared["rng"])
        run.done = bool(shared["done"])


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested dicts, lists, tuples) copied to the CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # a resumed rank may sit on a machine with fewer GPUs than rank 0's
        for i, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)


# ---------------------------------------------------------------------- helpers


def _cpu_copy(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _decide(policy: TcPolicy, stats: EpochStats, samples: SampleStats,
            canary: SampleStats | None, data: Dataset,
            first_order: np.ndarray | None = None) -> EpochDecision:
    """Feed one epoch's per-sample pass (and the canaries') to the policy; with
    ``first_order`` (the first epoch's visiting order of the samples), the first
    epoch's training pass also to the first-visit test: its predictions of samples
    not yet trained on."""
    if first_order is not None:
        policy.first_visits(stats.samples.pred, data.y, first_order, stats.steps)
    learned = policy.classes_learned(samples.pred, data.y, data.num_classes)
    return policy.observe(stats.epoch, stats.steps, stats.train_loss, samples.loss,
                          samples.margin, classes_learned=learned, num_classes=data.num_classes,
                          canary_loss=None if canary is None else canary.loss,
                          canary_margin=None if canary is None else canary.margin)


def _start_canaries(trainer: Trainer, samples: SampleStats, data: Dataset,
                    seed: int, dist: distributed.Dist) -> None:
    """After the first epoch, the held-out samples become canaries under wrong labels
    drawn from the data's confusion at that epoch
    (:func:`labelclean.canaries.canary_labels`); they train from the next epoch on.
    Not later: canaries that start training after the samples lag the data's own
    wrong labels in how far they are fitted, and the estimate then undervalues the
    flags (docs/benchmarks.md, "Calibration"). In a distributed run every rank
    calls this at the same point: rank 0 draws the labels and shares them, so
    that all ranks train on the same canaries."""
    if trainer.canary_y is not None or len(trainer.canary_rows) == 0:
        return
    labels = None
    if dist.is_main:
        rows = trainer.canary_rows.numpy()
        inside = ~trainer.held_out
        counts = confusion(samples.pred[inside], data.y[inside], data.num_classes)
        labels = canary_labels(data.y[rows], samples.pred[rows], counts, seed)
    if dist.enabled:
        labels = distributed.share(dist, labels)
    trainer.set_canary_labels(labels)


def _history_row(stats: EpochStats, samples: SampleStats, decision: EpochDecision,
                 y: np.ndarray, held_out: np.ndarray, val: SampleStats | None,
                 val_y: np.ndarray | None,
                 first_visit: dict[str, float]) -> dict[str, Any]:
    """The loop's own columns of an epoch's history row; the observers' follow them
    (the mixture's first), and the timings close it (metrics.csv keeps this order).
    ``est_*`` are the point estimates of :mod:`labelclean.estimate` for the flags this
    epoch would give (no interval: that is computed at ``t_c`` only)."""
    row: dict[str, Any] = {
        "epoch": stats.epoch,
        "steps": stats.steps,
        **first_visit,
        "train_loss": stats.train_loss,
        "train_accuracy": stats.train_accuracy,
        "eval_loss": float(samples.loss.mean()),
        "eval_accuracy": float((samples.pred == y).mean()),
        "classes_learned": decision.classes_learned,
        "aum_from": decision.area_start,
        "ready": decision.ready,
    }
    if decision.canary_scores is not None:
        scores, canaries = decision.scores[~held_out], decision.canary_scores
        precision, recall, share, _ = estimate_point(scores, canaries, decision.cut)
        row.update({"est_precision": precision, "est_recall": recall,
                    "est_noise_share": share, "est_auc_z": estimate_auc(scores, canaries)[1],
                    "est_shift_p": estimate_shift(scores, canaries)[1]})
    if val is not None:
        row["val_accuracy"] = float((val.pred == val_y).mean())
    return row

