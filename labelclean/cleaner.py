"""The public entry point: :class:`Cleaner` runs one SGD training and decides.

Data flows one way::

    source (load_dataset) -> Trainer (SGD) -> observers (per-sample losses,
    loss mixture, order parameters) -> decision (PhaseIIDetector, flag_samples)
    -> CleanResult (-> export)

Example
-------
>>> from labelclean import Cleaner
>>> result = Cleaner(max_epochs=20).fit("data/")          # doctest: +SKIP
>>> result.flagged.head()                                  # doctest: +SKIP
>>> result.export("cleaned/")                              # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

import numpy as np
import pandas as pd
import torch

from . import __version__, distributed
from . import resume as resume_mod
from .decision import (
    MIN_STEPS,
    PATIENCE_STEPS,
    SCORES,
    SUSPICIONS,
    EpochDecision,
    TcPolicy,
    Verdict,
    suggested_labels,
)
from .errors import LabelcleanError, WithheldWarning
from .mixture import LossMixture
from .models import create_model, default_augment, default_model, input_statistics
from .observers import (
    EpochContext,
    Observer,
    ObserverSetup,
    build_observers,
    end_of_epoch,
    load_observer_states,
    observer_states,
    probe_interval,
    progress_enabled,  # noqa: F401 - kept importable from here
)
from .sources import Dataset, SourceKind, load_dataset, split_validation
from .training import (
    AUGMENTATIONS,
    EpochStats,
    SampleStats,
    TrainConfig,
    Trainer,
    epoch_order,
)

log = logging.getLogger("labelclean")

#: The learning rate is set for this batch size and scaled linearly with the
#: batch size when ``lr`` is not given (Goyal et al. 2017's rule).
BASE_LR = 0.1
BASE_BATCH_SIZE = 128
#: ``batch_size="auto"``: about this many SGD steps an epoch, within the bounds.
AUTO_STEPS_PER_EPOCH = 50
AUTO_BATCH_BOUNDS = (32, 128)
#: ``max_epochs="auto"``: at least this many epochs, and at least enough epochs
#: for ``MIN_TRAIN_STEPS`` SGD steps (a small set needs more epochs to learn),
#: but never more than ``MAX_AUTO_EPOCHS``.
DEFAULT_EPOCHS = 30
MIN_TRAIN_STEPS = 3000
MAX_AUTO_EPOCHS = 200


def auto_batch_size(n: int) -> int:
    """The power of two nearest ``n / AUTO_STEPS_PER_EPOCH``, within ``AUTO_BATCH_BOUNDS``:
    128 from about 9,000 samples up, 32 below about 2,300."""
    lo, hi = AUTO_BATCH_BOUNDS
    target = max(1.0, n / AUTO_STEPS_PER_EPOCH)
    return int(min(hi, max(lo, 2 ** round(math.log2(target)))))

#: Where the per-sample losses and margins come from (``Cleaner(loss_pass=...)``).
LOSS_PASSES = ("eval", "train")



@dataclass
class CleanResult:
    """Everything one run found, as plain data.

    Attributes
    ----------
    dataset:
        The training data as read (``dataset.ids`` name the samples).
    history:
        One row per epoch: training loss and accuracy, validation accuracy
        (when a validation set was given), the mixture parameters ``m_c, s_c,
        m_w, s_w, r``, ``delta_L``, the threshold, the number of samples that
        would be flagged at that epoch, timings, the order parameters when
        probed, and the phase label.
    scores:
        One row per training sample at ``t_c``: ``sample_id``, ``given_label``,
        ``predicted_label``, ``predicted_prob``, ``score`` (the loss averaged
        over the ``window`` epochs ending at ``t_c``, which the mixture and the
        threshold apply to), ``loss`` (at ``t_c``), ``margin``, ``p_noisy``,
        ``flagged``.
    t_c:
        The chosen epoch (1-based): the checkpoint's and the flags' epoch.
    mixture:
        The :class:`~labelclean.mixture.LossMixture` at ``t_c``.
    losses:
        ``(epochs, N)`` float32: every sample's loss after every epoch.
    margins:
        ``(epochs, N)`` float32: given-label logit minus the largest other logit.
    second_population:
        Whether a second (mislabelled) population was found at ``t_c``: the
        mixture's own bimodality test, or, with ``suspicion="aum"``, that of
        the AUM or of the window's mean loss. Nothing is flagged without it.
    verdict:
        The run's :class:`~labelclean.decision.Verdict`: ``"flagged"``, ``"no
        second population"`` or ``"withheld"`` (nothing flagged, with the
        reason, unless ``force_flags``).
    pred_probs:
        ``(N, K)`` float32 softmax probabilities of the model at ``t_c`` (eval
        mode), rows in sample order (``scores``' ``index``), columns in
        ``dataset.classes`` order: the ``pred_probs`` cleanlab's ``Datalab``
        and ``find_label_issues`` take (in-sample, not cross-validated).
    embeddings:
        ``(N, D)`` float32 penultimate features of the model at ``t_c``, rows
        as ``pred_probs`` (``features=`` for Datalab's outlier and near-duplicate
        checks); None with ``Cleaner(embeddings=False)``.
    """

    dataset: Dataset
    history: pd.DataFrame
    scores: pd.DataFrame
    t_c: int
    mixture: LossMixture
    losses: np.ndarray
    margins: np.ndarray
    state_dict: dict
    checkpoint_config: dict
    params: dict
    timing: dict
    stop_reason: str
    phase_boundaries: dict = field(default_factory=dict)
    noise_mask: np.ndarray | None = None
    val: Dataset | None = None
    second_population: bool | None = None
    verdict: Verdict | None = None
    pred_probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.second_population is None:
            self.second_population = bool(self.mixture.bimodal)
        if self.verdict is None:
            self.verdict = (
                Verdict("flagged") if self.scores["flagged"].any()
                else Verdict("no second population")
            )

    @property
    def flagged(self) -> pd.DataFrame:
        """Flagged samples, most suspicious (highest ``score``) first: the rows of
        ``scores`` (for the review file's columns, see :meth:`review_frame`)."""
        return self.scores[self.scores["flagged"]].reset_index(drop=True)

    def review_frame(self) -> pd.DataFrame:
        """The table ``flagged_samples.csv`` holds: the flagged rows with ``path``
        (or ``row``), ``suggested_label`` and an editable ``action`` column
        (:func:`labelclean.export.review_table`). Written with ``to_csv(...,
        index=False)`` it is a review file ``labelclean apply`` reads (cells a
        spreadsheet would run as formulas are guarded only in the exported file)."""
        from .export import review_table

        return review_table(self)

    @property
    def n_flagged(self) -> int:
        return int(self.scores["flagged"].sum())

    def flagged_share_by_class(self) -> dict[str, float]:
        """Share of the samples given each class that are flagged."""
        shares = self.scores.groupby("given_label", sort=False)["flagged"].mean()
        return {str(c): float(shares.get(c, 0.0)) for c in self.dataset.classes
                if c in shares.index}

    @property
    def estimated_noise_rate(self) -> float:
        """Fraction of the training samples flagged."""
        return self.n_flagged / max(1, len(self.scores))

    def export(
        self, out: str | os.PathLike, *, link: str = "copy", overwrite: bool = False
    ) -> Path:
        """Write the cleaned dataset, ``flagged_samples.csv`` and the rest under ``out``.

        See :func:`labelclean.export.export_result`.
        """
        from .export import export_result

        return export_result(self, out, link=link, overwrite=overwrite)

    def load_model(self) -> Any:
        """The early-stopped model at ``t_c``, as a :class:`~labelclean.checkpoint.Checkpoint`."""
        from .checkpoint import Checkpoint

        shape = tuple(self.checkpoint_config["input_shape"])
        stat_shape = (shape[0], 1, 1) if len(shape) == 3 else shape
        model = create_model(
            self.checkpoint_config["model"], shape, len(self.dataset.classes),
            torch.tensor(self.checkpoint_config["mean"]).reshape(stat_shape),
            torch.tensor(self.checkpoint_config["std"]).reshape(stat_shape),
        )
        model.load_state_dict(self.state_dict)
        return Checkpoint(model.eval(), list(self.dataset.classes), dict(self.checkpoint_config))


class Cleaner:
    """Find mislabelled samples with one early-stopped SGD run (Feng & Tu 2021).

    Parameters are set here; :meth:`fit` does the work.

    Parameters
    ----------
    model:
        A timm model name (images), ``"cnn[:w1,w2,...]"`` (small images) or
        ``"mlp[:w1,w2,...]"``. ``None`` picks
        :data:`~labelclean.models.DEFAULT_RGB_MODEL` for colour images,
        :data:`~labelclean.models.DEFAULT_IMAGE_MODEL` for single-channel
        images and an MLP for feature tables.
    pretrained:
        Start from timm's pretrained weights (downloads them once).
    lr, momentum, weight_decay, batch_size, seed, augment, device, amp:
        SGD and training settings; see :class:`~labelclean.training.TrainConfig`.
        ``augment="auto"`` (default) translates and mirrors colour images
        (:data:`~labelclean.models.DEFAULT_RGB_AUGMENT`) and leaves other inputs
        alone.
        ``device="auto"`` uses CUDA when present (fp32, channels-last);
        ``amp=True`` adds bf16 autocast there.
    lr, batch_size:
        ``batch_size="auto"`` (default) aims at about 50 SGD steps an epoch
        (:func:`auto_batch_size`: 32 to 128); ``lr=None`` (default) is 0.1 at
        batch 128, scaled linearly with the batch size.
    max_epochs:
        Upper bound on training epochs. ``"auto"`` (default): 30, or as many as
        3,000 SGD steps take on a small set (at most 200).
    patience:
        Stop once the phase-II score has not improved for this many epochs
        (raised to cover ``patience_steps`` SGD steps).
    min_steps, patience_steps:
        Learn before deciding: ``t_c`` never falls before ``min_steps`` SGD
        steps, nor before the model has learned the majority of the labels
        (:class:`~labelclean.decision.TcPolicy`); patience covers at least
        ``patience_steps`` steps.
    score:
        What the detector maximises (``"delta_L"``, the paper's, or
        ``"separation"``); see :mod:`labelclean.decision`.
    window:
        Each sample's suspicion score at epoch ``t`` is its loss averaged over
        epochs ``t - window + 1 .. t``; the mixture is fitted to these scores.
        ``window=1`` is the paper's single-epoch loss; averaging a few epochs
        removes most of the epoch-to-epoch jitter SGD puts into single losses.
        Applies to the loss suspicions only.
    suspicion:
        The per-sample score the mixture is fitted to and flags are read from
        (:func:`labelclean.decision.suspicion_scores`): ``"aum"`` (default:
        minus the given-label margin averaged over epochs ``1..t``; flags
        AUM < 0 once a second population is found; the most accurate rule in
        docs/benchmarks.md for every model and noise kind tried, notably at
        80 % and under pair-flip noise), ``"loss"`` (the window's mean loss,
        flagged above ``l_c``; with ``score="delta_L", window=1`` this is the
        paper's rule, and it was the default up to 0.1) or ``"logloss"``. See
        docs/phases.md, "Choosing t_c".
    loss_pass:
        ``"eval"`` (default) measures every sample's loss after each epoch at
        fixed weights in eval mode, as the paper does: one extra forward pass
        over the data. ``"train"`` keeps the losses of the training forward pass
        instead (free, but measured on moving weights in train mode); see
        docs/performance.md for what each costs and finds.
    kind, path_column, label_column, noise_column, image_size, skip_unreadable, cache:
        How inputs are read; see :func:`labelclean.sources.load_dataset`.
    max_memory:
        Bytes the decoded images may take in memory (``load_dataset``); larger
        inputs are decoded once into ``cache`` and memory-mapped from there.
    workers:
        DataLoader worker processes that gather batches of host-resident inputs
        (:class:`~labelclean.training.TrainConfig`). ``"auto"``: 0 for inputs
        held in memory (slicing them costs microseconds), ``min(4, CPUs)`` for
        memory-mapped images.
    compile:
        Run the forward passes through ``torch.compile`` (compiles once, at the
        first epoch; pays on GPUs, see docs/performance.md).
    probe_every:
        Estimate the order parameters every this many epochs (0: never).
        ``"auto"`` probes as often as keeps the probe's cost within
        :data:`~labelclean.observers.PROBE_BUDGET` of training time: a probe costs
        about ``1.6 K`` training steps (with the clean/mislabelled split), an epoch ``N / B``
        steps, so small datasets are probed less often than every epoch.
    probe_batches:
        K, the number of minibatch gradients per probe (``None``: the probe's default).
    spectrum:
        Also estimate the gradient-noise spectrum's effective dimension ``D_s``.
    force_flags:
        Keep the flags of a run whose verdict is ``"withheld"`` (the verdict is
        then marked as forced everywhere it appears). Off by default: such a
        run flags nothing and says why (:meth:`~labelclean.decision.TcPolicy.verdict`).
    root:
        The folder a DataFrame's relative paths resolve against (``load_dataset``).
    image_column:
        A Hugging Face dataset's image column (``label_column`` names its labels).
    embeddings:
        Also compute ``result.embeddings`` (and ``embeddings.npy``): the
        penultimate features at ``t_c``, ``N x D`` floats. Turn off for very
        large sets; ``pred_probs`` are always computed.
    tensorboard_dir:
        Write the per-epoch metrics (losses, accuracies, mixture parameters,
        order parameters when probed) there as TensorBoard scalars, one run
        folder per fit, once the fit ends (needs the ``tensorboard`` package).
    progress:
        Show a tqdm progress bar: ``True``, ``False``, or ``"auto"`` (default:
        when stderr is a terminal).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        pretrained: bool = False,
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        batch_size: int | str = "auto",
        max_epochs: int | str = "auto",
        patience: int = 5,
        min_steps: int = MIN_STEPS,
        patience_steps: int = PATIENCE_STEPS,
        seed: int = 0,
        device: str = "auto",
        amp: bool | None = None,
        augment: str = "auto",
        score: str = "separation",
        window: int = 3,
        suspicion: str = "aum",
        loss_pass: str = "eval",
        kind: SourceKind = "auto",
        path_column: str = "path",
        label_column: str = "label",
        noise_column: str | None = None,
        image_size: int | None = None,
        skip_unreadable: bool = False,
        cache: str | os.PathLike | None = None,
        max_memory: int | None = None,
        workers: int | str = "auto",
        compile: bool = False,
        probe_every: int | str = "auto",
        probe_batches: int | None = None,
        spectrum: bool = False,
        force_flags: bool = False,
        root: str | os.PathLike | None = None,
        image_column: str = "image",
        embeddings: bool = True,
        tensorboard_dir: str | os.PathLike | None = None,
        progress: bool | str = "auto",
    ) -> None:
        self.model = model
        self.pretrained = pretrained
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.min_steps = min_steps
        self.patience_steps = patience_steps
        self.seed = seed
        self.device = device
        self.amp = amp
        self.augment = augment
        self.score = score
        self.window = window
        self.suspicion = suspicion
        self.loss_pass = loss_pass
        self.kind = kind
        self.path_column = path_column
        self.label_column = label_column
        self.noise_column = noise_column
        self.image_size = image_size
        self.skip_unreadable = skip_unreadable
        self.cache = None if cache is None else str(cache)
        self.max_memory = max_memory
        self.workers = workers
        self.compile = compile
        self.probe_every = probe_every
        self.probe_batches = probe_batches
        self.spectrum = spectrum
        self.force_flags = force_flags
        self.root = None if root is None else str(root)
        self.image_column = image_column
        self.embeddings = embeddings
        self.tensorboard_dir = None if tensorboard_dir is None else str(tensorboard_dir)
        self.progress = progress

    def get_params(self) -> dict:
        return dict(vars(self))

    # ------------------------------------------------------------------ inputs

    def load(self, data: str | os.PathLike | Any, classes: list[str] | None = None) -> Dataset:
        """Read ``data`` with this cleaner's input settings (a Dataset passes through):
        a path, a DataFrame, a Hugging Face or a torch dataset (``load_dataset``)."""
        if isinstance(data, Dataset):
            return data
        return load_dataset(
            data, self.kind, path_column=self.path_column, label_column=self.label_column,
            image_column=self.image_column, root=self.root,
            noise_column=self.noise_column, image_size=self.image_size, classes=classes,
            skip_unreadable=self.skip_unreadable, cache=self.cache, max_memory=self.max_memory,
        )

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        data: str | os.PathLike | Dataset,
        val: str | os.PathLike | Dataset | None = None,
        *,
        noise_mask: np.ndarray | None = None,
        state_dir: str | os.PathLike | None = None,
        resume: bool = False,
    ) -> CleanResult | None:
        """Train, observe every epoch, choose ``t_c`` and flag samples.

        Parameters
        ----------
        data:
            An image folder (a split root: its ``train/``), a CSV of paths or
            features, a pandas DataFrame, a Hugging Face ``datasets.Dataset``, a
            torch ``Dataset`` of ``(image, label)``, or a loaded
            :class:`~labelclean.sources.Dataset`.
        val:
            Optional validation data with trusted labels (same forms): its
            accuracy is reported per epoch; it never influences the decision.
            Default: a split root's ``val/`` (or ``valid/``), else none.
        noise_mask:
            Optional trusted boolean mask of wrong labels (research and
            benchmarks): the order parameters are then also reported for the
            true split. It never influences the decision.
        state_dir:
            A folder to write the run's whole state to after every epoch
            (:mod:`labelclean.resume`; it must lie outside the input). ``labelclean
            run`` keeps it beside ``--out`` until the run is complete.
        resume:
            Continue from the state in ``state_dir`` (a run killed at any moment):
            the result equals that of the uninterrupted run on the same device and
            thread count. Refused when the state was made with other settings or
            data; without a state there, the run starts from its first epoch.

        Returns
        -------
        CleanResult
            Launched by ``torchrun`` over several processes (docs/distributed.md),
            the ranks share the training and rank 0 alone decides: it returns the
            result, the other ranks None.
        """
        self.validate()
        if resume and state_dir is None and distributed.is_main_process():
            raise LabelcleanError("resume needs the state_dir the run saved its state to")
        dist, device = distributed.setup(self.device)
        try:
            return self._fit(data, val, noise_mask, dist, device,
                             None if state_dir is None else Path(state_dir), resume)
        finally:
            distributed.teardown(dist)

    def _fit(
        self,
        data: str | os.PathLike | Dataset,
        val: str | os.PathLike | Dataset | None,
        noise_mask: np.ndarray | None,
        dist: distributed.Dist,
        device: str,
        state_dir: Path | None = None,
        resume: bool = False,
    ) -> CleanResult | None:
        started = time.perf_counter()
        train, val_ds, noise_mask = self._read_inputs(data, val, noise_mask, dist, state_dir)

        config = self.train_config(len(train), workers=self.resolved_workers(train),
                                   input_shape=train.input_shape, kind=train.kind)
        config.device = device
        policy = TcPolicy(suspicion=self.suspicion, score=self.score, window=self.window,
                          patience=self.patience, seed=self.seed, min_steps=self.min_steps,
                          patience_steps=self.patience_steps)
        model_name = self.model or default_model(train.kind, train.input_shape)
        torch.manual_seed(self.seed)
        mean, std = input_statistics(train.x)
        model = create_model(
            model_name, train.input_shape, train.num_classes, mean, std,
            pretrained=self.pretrained,
        )
        trainer = Trainer(model, train.x, train.y, config, dist=dist)
        val_y = None if val_ds is None else val_ds.y
        val_x = None if val_ds is None else trainer.place(val_ds.x)

        # rank 0 alone decides, so it alone observes; the others train their share
        observers = build_observers(ObserverSetup(
            cleaner=self, config=config, trainer=trainer, dataset=train, noise_mask=noise_mask,
            state_dir=state_dir)) if dist.is_main else {}
        run = _RunState(stop_reason=f"reached max_epochs={config.max_epochs}")
        saver = None
        if state_dir is not None and dist.is_main:
            saver = _StateSaver(state_dir, self._resume_settings(),
                                resume_mod.data_fingerprint(train.ids, train.y, train.classes))
            if resume:
                saver.restore(run, trainer, policy, observers)
        if resume and dist.enabled:
            # Only rank 0 keeps the state; the others continue from its weights,
            # optimiser, epoch and RNG streams (the same on every rank in DDP).
            shared = distributed.share(dist, {
                "trainer": _to_cpu(trainer.state_dict()), "rng": _rng_state(),
                "done": run.done} if dist.is_main else None)
            if not dist.is_main:
                trainer.load_state_dict(shared["trainer"])
                _set_rng_state(shared["rng"])
                run.done = bool(shared["done"])
        try:
            for obs in observers.values():
                obs.on_fit_start(trainer)
            while not run.done and trainer.epoch < config.max_epochs:
                # the first epoch's training pass is recorded too: its predictions of
                # samples not yet trained on are the run's held-out evidence
                first = trainer.epoch == 0
                stats = trainer.train_epoch(record=self.loss_pass == "train" or first)
                t0 = time.perf_counter()
                samples = stats.samples if self.loss_pass == "train" else trainer.evaluate()
                v = None if val_ds is None else trainer.evaluate(val_x, val_y)
                if not dist.is_main:  # rank 0 alone decides; the others follow its stop
                    if distributed.stop_together(dist, False):
                        break
                    continue
                decision = _decide(policy, stats, samples, train, first, config.seed)
                row = end_of_epoch(observers, EpochContext(
                    epoch=stats.epoch, stats=stats, samples=samples, val=v, decision=decision,
                    policy=policy, trainer=trainer, dataset=train, noise_mask=noise_mask,
                    row=_history_row(stats, samples, decision, train.y, v, val_y,
                                     policy.first_visit_record() if first else {})))
                row["seconds_train"] = stats.seconds
                row["seconds_observe"] = time.perf_counter() - t0
                run.add(row, samples, decision, trainer)
                stop = distributed.stop_together(dist, policy.should_stop)
                if stop:
                    run.stop_reason = policy.stop_reason
                run.done = stop or trainer.epoch >= config.max_epochs
                if saver is not None:
                    run.seconds = run.seconds_before + time.perf_counter() - started
                    saver.save(run, trainer, policy, observers)
        finally:
            for obs in observers.values():
                obs.on_fit_end()
        if not dist.is_main:
            return None
        recorder = observers["samples"]  # the SampleRecorder: the result's per-sample arrays
        rows, stop_reason = run.rows, run.stop_reason
        losses, margins = recorder.losses, recorder.margins
        best = run.best
        if best is None:  # every epoch was unstable: fall back to the last one
            samples, decision = run.last
            best = (_cpu_copy(trainer.model.state_dict()), samples, decision)
            policy.detector.best_epoch = rows[-1]["epoch"]
        state, at_tc, decision_tc = best
        t_c = int(decision_tc.epoch)
        history = pd.DataFrame(rows)
        history["unstable"] = history["epoch"].isin(policy.detector.unstable_epochs)
        pred_probs, embeddings = _outputs_at(trainer, state, self.embeddings)
        if self.tensorboard_dir is not None:
            log_tensorboard(self.tensorboard_dir, history, t_c)
        phase_boundaries = _label_phases(history, noisy=decision_tc.noisy)
        verdict, flags = policy.verdict(
            decision_tc, train.y, list(train.classes), force=self.force_flags,
            suggested=suggested_labels(at_tc.pred, at_tc.runner_up, train.y),
        )
        p_noisy = decision_tc.mixture.posterior(decision_tc.scores)
        scores = _scores_frame(
            train, at_tc, decision_tc.scores, p_noisy, flags, decision_tc.mixture, t_c,
            self.window, kind=self.suspicion, aum_start=policy.aum_start or 1,
        )
        if verdict.forced:
            f = scores["flagged"]
            scores.loc[f, "reason"] = "FORCED (run withheld): " + scores.loc[f, "reason"]
        if verdict.withheld:
            warnings.warn(f"labelclean: {verdict}. Try: {verdict.advice}.", WithheldWarning,
                          stacklevel=3)  # the caller of fit, not fit
        elapsed = run.seconds_before + time.perf_counter() - started
        log.info("t_c = epoch %d of %d trained (%s); %s: %d of %d samples flagged",
                 t_c, len(rows), stop_reason, verdict, int(scores["flagged"].sum()), len(train))
        return CleanResult(
            dataset=train,
            history=history,
            scores=scores,
            t_c=t_c,
            mixture=decision_tc.mixture,
            losses=np.stack(losses).astype(np.float32),
            margins=np.stack(margins).astype(np.float32),
            state_dict=state,
            checkpoint_config={
                "model": model_name,
                "classes": list(train.classes),
                "input_shape": list(train.input_shape),
                "input_kind": train.kind,
                "mean": mean.flatten().tolist(),
                "std": std.flatten().tolist(),
                "class_order": train.class_order,
                "epoch": t_c,
                "labelclean_version": __version__,
                "inputs": "raw uint8 images (N, C, H, W) at input_shape, or float features",
            },
            params={**self.get_params(), "model": model_name, "device": str(trainer.device),
                    "batch_size": config.batch_size, "lr": config.lr,
                    "max_epochs": config.max_epochs, "augment": config.augment,
                    **({"world_size": dist.world_size} if dist.enabled else {})},
            timing={
                "total_seconds": elapsed,
                "train_seconds": float(history["seconds_train"].sum()),
                "observe_seconds": float(history["seconds_observe"].sum()),
                "epochs_trained": len(rows),
                "steps_trained": int(history["steps"].sum()),
            },
            stop_reason=stop_reason,
            phase_boundaries=phase_boundaries,
            noise_mask=noise_mask,
            val=val_ds,
            second_population=bool(decision_tc.noisy),
            verdict=verdict,
            pred_probs=pred_probs,
            embeddings=embeddings,
        )

    def _read_inputs(
        self,
        data: str | os.PathLike | Dataset,
        val: str | os.PathLike | Dataset | None,
        noise_mask: np.ndarray | None,
        dist: distributed.Dist,
        state_dir: Path | None,
    ) -> tuple[Dataset, Dataset | None, np.ndarray | None]:
        """The training set, the validation set (given, or the split root's) and the
        noise mask (given, or the input's), checked against each other and against
        where the run will write."""
        # With a decode cache each node decodes once and its other ranks read it.
        once = self.cache is not None
        train = distributed.node_first(dist, lambda: self.load(data)) if once else self.load(data)
        log.info("read %d samples of %d classes, inputs %s", len(train), train.num_classes,
                 "x".join(map(str, train.input_shape)))
        if val is None:
            val = split_validation(data)
            if val is not None:
                log.info("validation set: %s (the split root's)", val)
        val_ds = None
        if val is not None:
            val_ds = val if isinstance(val, Dataset) else (
                distributed.node_first(dist, lambda: self.load(val, classes=train.classes))
                if once else self.load(val, classes=train.classes)
            )
            if val_ds.input_shape != train.input_shape:
                raise LabelcleanError(
                    f"validation inputs are {val_ds.input_shape}, training inputs "
                    f"{train.input_shape}; pass --image-size to make them agree"
                )
        if self.tensorboard_dir is not None:
            _check_outside_input(self.tensorboard_dir, train)
        if state_dir is not None:
            from .rundir import check_overlap
            from .writers import output_forbidden

            check_overlap(state_dir, output_forbidden(train.source, train.origin, train.files),
                          "state_dir")
        if noise_mask is None:
            noise_mask = train.noise_mask
        if noise_mask is not None:
            noise_mask = np.asarray(noise_mask, dtype=bool)
            if noise_mask.shape != (len(train),):
                raise LabelcleanError(
                    f"noise_mask has shape {noise_mask.shape}, expected ({len(train)},)"
                )
        if len(train) < 10:
            raise LabelcleanError(f"only {len(train)} samples: too few to learn from")
        return train, val_ds, noise_mask

    def train_config(
        self,
        n_samples: int,
        workers: int = 0,
        *,
        input_shape: tuple[int, ...] = (),
        kind: str = "images",
    ) -> TrainConfig:
        """The SGD settings for ``n_samples`` training samples, ``"auto"`` values resolved
        (batch size, learning rate, epoch budget, and the augmentation for inputs of
        ``kind`` and ``input_shape``; see the class docstring)."""
        augment = default_augment(kind, input_shape) if self.augment == "auto" else self.augment
        batch_size = auto_batch_size(n_samples) if self.batch_size == "auto" else self.batch_size
        lr = self.lr if self.lr is not None else BASE_LR * batch_size / BASE_BATCH_SIZE
        steps_per_epoch = max(1, n_samples // int(batch_size))
        max_epochs = (
            min(MAX_AUTO_EPOCHS, max(DEFAULT_EPOCHS, math.ceil(MIN_TRAIN_STEPS / steps_per_epoch)))
            if self.max_epochs == "auto" else self.max_epochs
        )
        return TrainConfig(
            lr=lr, momentum=self.momentum, weight_decay=self.weight_decay,
            batch_size=int(batch_size), max_epochs=int(max_epochs), seed=self.seed,
            augment=augment, device=self.device, amp=self.amp, workers=workers,
            compile=self.compile,
        )

    def _resume_settings(self) -> dict:
        """The settings a resumed run must share with the run it continues."""
        return {k: (str(v) if isinstance(v, os.PathLike) else v)
                for k, v in self.get_params().items()}

    def validate(self) -> None:
        """Check every setting that can be checked before any data is read; raise
        :class:`~labelclean.errors.LabelcleanError` for the first bad one."""
        _choice("loss_pass", self.loss_pass, LOSS_PASSES)
        _choice("suspicion", self.suspicion, SUSPICIONS)
        _choice("score", self.score, SCORES)
        _choice("augment", self.augment, ("auto", *AUGMENTATIONS))
        _choice("kind", self.kind, get_args(SourceKind))
        _integer("window", self.window, 1)
        _integer("patience", self.patience, 1)
        _integer("min_steps", self.min_steps, 0)
        _integer("patience_steps", self.patience_steps, 0)
        _integer("seed", self.seed, None)
        for name in ("batch_size", "max_epochs"):
            if getattr(self, name) != "auto":
                _integer(name, getattr(self, name), 1, "'auto' or ")
        if self.workers != "auto":
            _integer("workers", _as_int(self.workers), 0, "'auto' or ")
        if self.probe_every != "auto":
            _integer("probe_every", _as_int(self.probe_every), 0, "'auto' or ")
        for name in ("probe_batches", "image_size"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 1, "None or ")
        if self.max_memory is not None and not (_is_number(self.max_memory)
                                                and self.max_memory > 0):
            raise LabelcleanError(f"max_memory must be None or a positive number of bytes, "
                                  f"got {self.max_memory!r}")
        if self.lr is not None and not (_is_number(self.lr) and self.lr > 0):
            raise LabelcleanError(f"lr must be positive, got {self.lr!r}")
        if not (_is_number(self.momentum) and 0 <= self.momentum < 1):
            raise LabelcleanError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise LabelcleanError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not isinstance(self.device, str):
            raise LabelcleanError(f"device must be a string, got {self.device!r}")
        if self.device != "auto":
            # its syntax only: whether it is there (and what "cuda" means under
            # torchrun) is distributed.setup's and the trainer's to say
            try:
                torch.device(self.device)
            except RuntimeError:
                raise LabelcleanError(f"unknown device {self.device!r}") from None
        if self.progress not in (True, False, "auto"):
            raise LabelcleanError(f"progress must be True, False or 'auto', got {self.progress!r}")

    def resolved_workers(self, data: Dataset) -> int:
        """``workers`` for ``data``, ``"auto"`` resolved (see the class docstring)."""
        if self.workers == "auto":
            return min(4, os.cpu_count() or 1) if data.mapped else 0
        try:
            return int(self.workers)
        except (TypeError, ValueError):
            raise LabelcleanError(
                f"workers must be 'auto' or an integer, got {self.workers!r}"
            ) from None

    def _probe_interval(self, n: int, batch_size: int) -> int:
        """Epochs between order-parameter probes (0: never)."""
        return probe_interval(self.probe_every, self.probe_batches, n, batch_size)


# ---------------------------------------------------------------------- validation


def _choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise LabelcleanError(f"{name} must be one of {', '.join(map(str, choices))}, "
                              f"got {value!r}")


def _as_int(value: Any) -> Any:
    """``"2"`` (as the command line passes ``--workers``) as 2; anything else unchanged."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _integer(name: str, value: Any, minimum: int | None, alternatives: str = "") -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or (minimum is not None and value < minimum):
        bound = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise LabelcleanError(f"{name} must be {alternatives}{bound}, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and \
        math.isfinite(value)


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

    def add(self, row: dict, samples: SampleStats, decision: EpochDecision,
            trainer: Trainer) -> None:
        """Keep an epoch's history row, and its weights when it is the new candidate ``t_c``."""
        self.rows.append(row)
        if decision.is_best:
            self.best = (_cpu_copy(trainer.model.state_dict()), samples, decision)
        self.last = (samples, decision)


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
        log.info("resumed after epoch %d from %s", trainer.epoch, self.folder)


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


def _decide(policy: TcPolicy, stats: EpochStats, samples: SampleStats, data: Dataset,
            first: bool, seed: int) -> EpochDecision:
    """Feed one epoch to the policy (the first epoch's training pass also to the
    first-visit test: its predictions of samples not yet trained on, in the order
    of the training seed's first epoch)."""
    if first:
        policy.first_visits(stats.samples.pred, data.y,
                            epoch_order(seed, 0, len(data)).numpy(), stats.steps)
    learned = policy.classes_learned(samples.pred, data.y, data.num_classes)
    return policy.observe(stats.epoch, stats.steps, stats.train_loss, samples.loss,
                          samples.margin, classes_learned=learned, num_classes=data.num_classes)


def _history_row(stats: EpochStats, samples: SampleStats, decision: EpochDecision,
                 y: np.ndarray, val: SampleStats | None, val_y: np.ndarray | None,
                 first_visit: dict[str, float]) -> dict[str, Any]:
    """The loop's own columns of an epoch's history row; the observers' follow them,
    and the timings close it (metrics.csv keeps this order)."""
    mixture = decision.mixture
    row: dict[str, Any] = {
        "epoch": stats.epoch,
        "steps": stats.steps,
        **first_visit,
        "train_loss": stats.train_loss,
        "train_accuracy": stats.train_accuracy,
        "eval_loss": float(samples.loss.mean()),
        "eval_accuracy": float((samples.pred == y).mean()),
        "classes_learned": decision.classes_learned,
        "ready": decision.ready,
    }
    if val is not None:
        row["val_accuracy"] = float((val.pred == val_y).mean())
    row.update(
        {
            "m_c": mixture.m_c, "s_c": mixture.s_c, "m_w": mixture.m_w,
            "s_w": mixture.s_w, "r": mixture.r, "delta_L": mixture.delta_L,
            "threshold": mixture.threshold, "separation": mixture.separation,
            "bimodal": mixture.bimodal, "n_flagged": int(decision.would_flag.sum()),
        }
    )
    return row


def _scores_frame(
    data: Dataset, s: SampleStats, suspicion: np.ndarray, p_noisy: np.ndarray,
    flags: np.ndarray, mixture: LossMixture, t_c: int, window: int, kind: str = "loss",
    aum_start: int = 1,
) -> pd.DataFrame:
    """One row per sample at ``t_c``, flagged first, each flagged row with its ``reason``.

    ``model_agrees`` marks rows whose model at ``t_c`` predicts the given label.
    Such a row is flagged only by the AUM (its label was ranked below another
    class on average over training, then fitted late, as a memorised wrong
    label is); its ``suggested_label`` is the runner-up class, never the given
    label, so every flagged row names an alternative and says why.
    """
    classes = np.asarray(data.classes, dtype=object)
    agrees = s.pred == data.y
    suggested = suggested_labels(s.pred, s.runner_up, data.y)
    df = pd.DataFrame(
        {
            "sample_id": data.ids,
            "index": np.arange(len(data)),
            "given_label": classes[data.y],
            "predicted_label": classes[s.pred],
            "predicted_prob": s.pred_prob,
            "given_prob": s.given_prob,
            "suggested_label": classes[suggested],
            "model_agrees": agrees,
            "score": suspicion,
            "loss": s.loss,
            "margin": s.margin,
            "p_noisy": p_noisy,
            "flagged": flags,
        }
    )
    df = df.sort_values(["flagged", "score"], ascending=[False, False], kind="stable")
    df.insert(0, "rank", np.arange(1, len(df) + 1))
    df["reason"] = ""
    f = df["flagged"].to_numpy()
    span = f"epochs {max(1, t_c - window + 1)}-{t_c}" if window > 1 else f"epoch {t_c}"
    if kind == "aum":
        span = f"epochs {aum_start}-{t_c}"
    what = {"aum": "mean margin {m:.2f} over {span} < 0 (label ranked below another class "
                   "on average); ",
            "loss": "mean loss {s:.2f} over {span} > l_c {t:.2f}; ",
            "logloss": "log mean loss {s:.2f} over {span} > l_c {t:.2f}; "}[kind]
    df.loc[f, "reason"] = [
        what.format(m=-score, s=score, span=span, t=mixture.threshold) + (
            f"fitted late: at epoch {t_c} the model agrees with {given!r} (p={gp:.2f}), "
            f"runner-up {sug!r}; likely memorised"
            if agree else
            f"model says {pred!r} (p={prob:.2f}), label says {given!r} (p={gp:.3f})"
        )
        for score, pred, prob, given, gp, sug, agree in df.loc[
            f, ["score", "predicted_label", "predicted_prob", "given_label", "given_prob",
                "suggested_label", "model_agrees"]
        ].itertuples(index=False)
    ]
    return df.reset_index(drop=True)


def _label_phases(history: pd.DataFrame, noisy: bool) -> dict:
    try:
        from .phases import label_phases, phase_boundaries
    except ImportError:  # pragma: no cover - phases module is part of the package
        return {}
    history["phase"] = label_phases(history, noisy=noisy).to_numpy()
    return {k: list(v) for k, v in phase_boundaries(history["phase"], history["epoch"]).items()}


def _outputs_at(
    trainer: Trainer, state: dict, embeddings: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """``(pred_probs, embeddings)`` of the model at ``t_c``: ``state`` is loaded
    into the trainer's model (training is over) for one eval pass."""
    trainer.model.load_state_dict(state)
    return trainer.outputs(embeddings=embeddings)


def _check_outside_input(folder: str | os.PathLike, data: Dataset) -> None:
    """Refuse a ``tensorboard_dir`` inside the input's folders (never write there)."""
    from .writers import output_forbidden

    where = Path(folder).resolve()
    for src in output_forbidden(data.source, data.origin, data.files):
        src = Path(src).resolve()
        root = src if src.is_dir() else src.parent
        if where == root or root in where.parents:
            raise LabelcleanError(
                f"tensorboard_dir {folder} lies inside the input {src}; put it elsewhere"
            )


def log_tensorboard(folder: str | os.PathLike, history: pd.DataFrame, t_c: int) -> Path:
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
                    writer.add_scalar(f"{_tb_group(name)}/{name}", value, step)
        writer.add_scalar("decision/t_c", t_c, int(history["epoch"].iloc[-1]))
    finally:
        writer.close()
    log.info("TensorBoard scalars written to %s", run)
    return run


def _tb_group(column: str) -> str:
    if "loss" in column:
        return "loss"
    if "accuracy" in column or column == "classes_learned":
        return "accuracy"
    if column in ("m_c", "s_c", "m_w", "s_w", "r", "delta_L", "threshold", "separation",
                  "bimodal", "n_flagged", "ready", "unstable"):
        return "mixture"
    if column.startswith(("seconds", "steps")):
        return "time"
    if column.startswith(("true_", "L_c_true", "L_w_true")):
        return "truth"
    return "order"
