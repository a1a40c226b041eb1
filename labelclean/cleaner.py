"""The public entry point: :class:`Cleaner` runs one SGD training and decides.

Data flows one way::

    settings (Cleaner, validate) -> data (load_dataset) -> the parts: Trainer (SGD),
    TcPolicy, observers -> fitloop.FitLoop, per epoch: decision (TcPolicy) then
    observers (per-sample losses, mixture, order parameters), resume state
    -> at the end: observers' on_history (phases, TensorBoard), verdict
    -> CleanResult (result.assemble_result; -> export)

``Cleaner`` holds the settings, reads the inputs and builds the parts; the epochs are
:mod:`labelclean.fitloop`'s.

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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .canaries import DEFAULT_SHARE as DEFAULT_CANARIES
from .canaries import canary_rows
from .dataset import Dataset, SourceKind
from .decision import TcPolicy
from .errors import LabelcleanError
from .fitloop import FitLoop
from .folders import split_validation
from .formats import load_dataset
from .models import (
    create_model,
    default_model,
    default_recipe,
    input_statistics,
)
from .observers import (  # noqa: F401 - log_tensorboard, progress_enabled kept importable here
    ObserverSetup,
    build_observers,
    log_tensorboard,
    probe_interval,
    progress_enabled,
)
from .paths import check_outside, check_overlap
from .result import CleanResult, assemble_result
from .settings import (
    AUTO_BATCH_BOUNDS,
    AUTO_STEPS_PER_EPOCH,
    BASE_BATCH_SIZE,
    BASE_LR,
    DEFAULT_EPOCHS,
    DEFAULTS,
    MAX_AUTO_EPOCHS,
    MIN_TRAIN_STEPS,
    PRETRAINED_BASE_LR,
    SPECS,
    Settings,
)
from .training import TrainConfig, Trainer
from .writers import output_forbidden

log = logging.getLogger("labelclean")


def auto_batch_size(n: int) -> int:
    """The power of two nearest ``n / AUTO_STEPS_PER_EPOCH``, within ``AUTO_BATCH_BOUNDS``:
    128 from 4,526 samples up, 64 from 2,263, 32 below."""
    lo, hi = AUTO_BATCH_BOUNDS
    target = max(1.0, n / AUTO_STEPS_PER_EPOCH)
    return int(min(hi, max(lo, 2 ** round(math.log2(target)))))


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
        Start from timm's pretrained weights (downloads them once). The
        network then sees inputs as it was trained to: resized to its
        pretrained input size and normalised with its pretrained mean and std
        (timm's ``pretrained_cfg``), not the data's; the classifier head is new.
    weights:
        A file of timm weights to start from instead of the hub's (a
        ``state_dict`` saved with ``torch.save`` or as safetensors, of the
        architecture ``model`` names); implies ``pretrained`` and needs no
        network access.
    lr, momentum, weight_decay, batch_size, seed, augment, device, amp:
        SGD and training settings; see :class:`~labelclean.training.TrainConfig`.
        ``augment="auto"`` (default) translates and mirrors colour images
        (:data:`~labelclean.models.DEFAULT_RGB_AUGMENT`) and leaves other inputs
        alone.
        ``device="auto"`` uses CUDA when present (fp32; images run
        channels-last on every device);
        ``amp=True`` adds bf16 autocast there.
    lr, batch_size:
        ``batch_size="auto"`` (default) aims at about 50 SGD steps an epoch
        (:func:`auto_batch_size`: 32 to 128); ``lr=None`` (default) is 0.1 at
        batch 128 (0.01 when pretrained), scaled linearly with the batch size.
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
        docs/benchmarks.md for every model and noise kind tried), ``"loss"``
        (the window's mean loss,
        flagged above ``l_c``; with ``score="delta_L", window=1`` this is the
        paper's rule, and it was the default up to 0.1) or ``"logloss"``; or
        any suspicion registered with
        :func:`labelclean.suspicions.register_suspicion`. See
        docs/phases.md, "Choosing t_c".
    loss_pass:
        ``"eval"`` (default) measures every sample's loss after each epoch at
        fixed weights in eval mode, as the paper does: one extra forward pass
        over the data. ``"train"`` keeps the losses of the training forward pass
        instead (free, but measured on moving weights in train mode); see
        docs/performance.md for what each costs and finds.
    kind, path_column, label_column, noise_column, image_size, skip_unreadable, cache:
        How inputs are read; see :func:`labelclean.formats.load_dataset`.
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
        :data:`~labelclean.settings.PROBE_BUDGET` of training time: a probe costs
        about ``1.6 K`` training steps (with the clean/mislabelled split), an epoch ``N / B``
        steps, so small datasets are probed less often than every epoch.
    probe_batches:
        K, the number of minibatch gradients per probe (``None``: the probe's default).
    spectrum:
        Also estimate the gradient-noise spectrum's effective dimension ``D_s``.
    verdict:
        How the run decides whether its flags are written: ``"estimate"``
        (default: the estimated precision of the flags, per class, from the run's
        canaries, :meth:`~labelclean.decision.TcPolicy.estimate_verdict`) or
        ``"rules"`` (0.7's withholding rules, :meth:`~labelclean.decision.TcPolicy.verdict`).
    canaries:
        Known-wrong canaries per sample (:mod:`labelclean.canaries`): samples held
        out under their own labels and trained on under wrong ones, from which the
        run estimates how likely its flags are right (:mod:`labelclean.estimate`,
        reported in ``result.estimate`` and ``run.json`` whenever there are
        canaries). ``"auto"``: :data:`~labelclean.canaries.DEFAULT_SHARE` with
        ``verdict="estimate"``, none with ``"rules"``.
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
        model: str | None = DEFAULTS.model,
        *,
        pretrained: bool = DEFAULTS.pretrained,
        weights: str | os.PathLike | None = DEFAULTS.weights,
        max_epochs: int | str = DEFAULTS.max_epochs,
        patience: int = DEFAULTS.patience,
        min_steps: int = DEFAULTS.min_steps,
        patience_steps: int = DEFAULTS.patience_steps,
        lr: float | None = DEFAULTS.lr,
        momentum: float = DEFAULTS.momentum,
        weight_decay: float = DEFAULTS.weight_decay,
        batch_size: int | str = DEFAULTS.batch_size,
        augment: str = DEFAULTS.augment,
        score: str = DEFAULTS.score,
        suspicion: str = DEFAULTS.suspicion,
        window: int = DEFAULTS.window,
        loss_pass: str = DEFAULTS.loss_pass,
        seed: int = DEFAULTS.seed,
        device: str = DEFAULTS.device,
        amp: bool | None = DEFAULTS.amp,
        kind: SourceKind = DEFAULTS.kind,
        path_column: str = DEFAULTS.path_column,
        label_column: str = DEFAULTS.label_column,
        noise_column: str | None = DEFAULTS.noise_column,
        root: str | os.PathLike | None = DEFAULTS.root,
        image_column: str = DEFAULTS.image_column,
        image_size: int | None = DEFAULTS.image_size,
        cache: str | os.PathLike | None = DEFAULTS.cache,
        max_memory: int | None = DEFAULTS.max_memory,
        workers: int | str = DEFAULTS.workers,
        compile: bool = DEFAULTS.compile,
        skip_unreadable: bool = DEFAULTS.skip_unreadable,
        probe_every: int | str = DEFAULTS.probe_every,
        probe_batches: int | None = DEFAULTS.probe_batches,
        spectrum: bool = DEFAULTS.spectrum,
        verdict: str = DEFAULTS.verdict,
        canaries: float | str = DEFAULTS.canaries,
        force_flags: bool = DEFAULTS.force_flags,
        embeddings: bool = DEFAULTS.embeddings,
        tensorboard_dir: str | os.PathLike | None = DEFAULTS.tensorboard_dir,
        progress: bool | str = DEFAULTS.progress,
    ) -> None:
        self.model = model
        self.pretrained = pretrained
        self.weights = None if weights is None else str(weights)
        self.max_epochs = max_epochs
        self.patience = patience
        self.min_steps = min_steps
        self.patience_steps = patience_steps
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.augment = augment
        self.score = score
        self.suspicion = suspicion
        self.window = window
        self.loss_pass = loss_pass
        self.seed = seed
        self.device = device
        self.amp = amp
        self.kind = kind
        self.path_column = path_column
        self.label_column = label_column
        self.noise_column = noise_column
        self.root = None if root is None else str(root)
        self.image_column = image_column
        self.image_size = image_size
        self.cache = None if cache is None else str(cache)
        self.max_memory = max_memory
        self.workers = workers
        self.compile = compile
        self.skip_unreadable = skip_unreadable
        self.probe_every = probe_every
        self.probe_batches = probe_batches
        self.spectrum = spectrum
        self.verdict = verdict
        self.canaries = canaries
        self.force_flags = force_flags
        self.embeddings = embeddings
        self.tensorboard_dir = None if tensorboard_dir is None else str(tensorboard_dir)
        self.progress = progress

    def get_params(self) -> dict:
        return dict(vars(self))

    def settings(self) -> Settings:
        """The settings as they are now, frozen (:class:`~labelclean.settings.Settings`):
        what the parts of a run (observers, result, export) read."""
        return Settings(**{name: getattr(self, name) for name in SPECS})

    @property
    def starts_pretrained(self) -> bool:
        """Whether training starts from pretrained weights (timm's, or ``weights``)."""
        return bool(self.pretrained) or self.weights is not None

    @property
    def canary_share(self) -> float:
        """``canaries`` with ``"auto"`` resolved (see the class docstring)."""
        if self.canaries == "auto":
            return DEFAULT_CANARIES if self.verdict == "estimate" else 0.0
        return float(self.canaries)

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
            :class:`~labelclean.dataset.Dataset`.
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
        settings = self.settings()  # what the observers and the result read
        train, val_ds, noise_mask = self._read_inputs(data, val, noise_mask, dist, state_dir)
        config = self.train_config(len(train), workers=self.resolved_workers(train),
                                   input_shape=train.input_shape, kind=train.kind)
        config.device = device
        model_name, inputs, trainer = self._trainer(
            train, config, dist,
            canary_rows(train.y, train.num_classes, self.canary_share, self.seed))
        policy = TcPolicy(suspicion=self.suspicion, score=self.score, window=self.window,
                          patience=self.patience, seed=self.seed, min_steps=self.min_steps,
                          patience_steps=self.patience_steps, device=trainer.device,
                          canaries=len(trainer.canary_rows) > 0)
        # rank 0 alone decides, so it alone observes; the others train their share
        observers = build_observers(ObserverSetup(
            settings=settings, config=config, trainer=trainer, dataset=train, noise_mask=noise_mask,
            state_dir=state_dir)) if dist.is_main else {}
        loop = FitLoop(settings, trainer=trainer, policy=policy, observers=observers,
                       data=train, val=val_ds, noise_mask=noise_mask, dist=dist,
                       state_dir=state_dir)
        outcome = loop.run(resume=resume, started=started)
        if outcome is None:  # a rank other than 0
            return None
        return assemble_result(
            settings, data=train, val=val_ds, noise_mask=noise_mask, trainer=trainer,
            config=config, dist=dist, policy=policy, observers=observers, rows=outcome.rows,
            chosen=outcome.chosen, stop_reason=outcome.stop_reason,
            model=(model_name, inputs), started=started - outcome.seconds_before,
            observer_seconds=outcome.observer_seconds)

    def _trainer(self, train: Dataset, config: TrainConfig, dist: distributed.Dist,
                 canaries: np.ndarray) -> tuple[str, dict, Trainer]:
        """The model's name, how it prepares its inputs (``Classifier.input_config``:
        the data's statistics, or a pretrained model's own and its input size), and
        its trainer (which holds out the samples ``canaries`` for canaries)."""
        model_name = self.model or default_model(train.kind, train.input_shape)
        torch.manual_seed(self.seed)
        mean, std = (None, None) if self.starts_pretrained else input_statistics(train.x)
        model = create_model(
            model_name, train.input_shape, train.num_classes, mean, std,
            pretrained=self.pretrained, weights=self.weights,
        )
        if default_recipe(train.kind, train.input_shape, self.starts_pretrained).whiten:
            model.init_whitening(train.x)
        return model_name, model.input_config(), Trainer(model, train.x, train.y, config,
                                                         dist=dist, canary_rows=canaries)

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
        if self.tensorboard_dir is not None or state_dir is not None:
            # never written in the input (labelclean.paths), as the input's format sees it
            footprint = output_forbidden(train.source, train.origin, train.files)
            if self.tensorboard_dir is not None:
                check_outside(self.tensorboard_dir, footprint, "tensorboard_dir")
            if state_dir is not None:
                check_overlap(state_dir, footprint, "state_dir")
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
        recipe = default_recipe(kind, input_shape, self.starts_pretrained)
        augment = recipe.augment if self.augment == "auto" else self.augment
        train = recipe.train_settings()
        # the mirror images are scored only where training showed them
        train["eval_flip"] = train["eval_flip"] and augment == "shift-flip"
        batch_size = self.batch_size
        if batch_size == "auto":
            batch_size = recipe.batch_size or auto_batch_size(n_samples)
        base_lr = PRETRAINED_BASE_LR if self.starts_pretrained else BASE_LR
        lr = self.lr if self.lr is not None else base_lr * batch_size / BASE_BATCH_SIZE
        steps_per_epoch = max(1, n_samples // int(batch_size))
        max_epochs = (
            min(MAX_AUTO_EPOCHS, max(DEFAULT_EPOCHS, math.ceil(MIN_TRAIN_STEPS / steps_per_epoch)))
            if self.max_epochs == "auto" else self.max_epochs
        )
        return TrainConfig(
            lr=lr, momentum=self.momentum, weight_decay=self.weight_decay,
            batch_size=int(batch_size), max_epochs=int(max_epochs), seed=self.seed,
            augment=augment, device=self.device, amp=self.amp, workers=workers,
            compile=self.compile, **train,
        )

    def validate(self) -> None:
        """Check every setting that can be checked before any data is read; raise
        :class:`~labelclean.errors.LabelcleanError` for the first bad one
        (:meth:`Settings.validate <labelclean.settings.Settings.validate>`)."""
        self.settings().validate()

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
