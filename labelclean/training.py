"""The SGD training loop and the per-sample pass that observes it.

The loop is deliberately plain: SGD with momentum and weight decay on
minibatches sliced from tensors that already sit on the training device, so the
per-step cost is the model's. Two design choices prepare it for resuming and
for torch.distributed:

* the order of samples in epoch ``e`` is a pure function of ``(seed, e)``
  (:func:`epoch_order`), so a run restarted from :meth:`Trainer.state_dict`
  after epoch ``e`` sees exactly the batches it would have seen, and ranks of a
  distributed run can each take their own stride of the same permutation;
* all mutable state (weights, optimiser, epoch counter) is in one
  ``state_dict``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import distributed
from .distributed import SINGLE, Dist
from .errors import LabelcleanError
from .models import fold_batch_norm

AUGMENTATIONS = ("none", "shift", "shift-flip")
#: Host inputs larger than this are not pinned whole (their batches are).
PIN_LIMIT = 2 << 30


@dataclass
class TrainConfig:
    """Optimisation settings. Defaults are the ones measured in docs/benchmarks.md.

    ``amp`` turns on bf16 autocast on CUDA (off by default; see
    docs/performance.md for why), ``channels_last`` the channels-last layout
    for images (default: on CUDA only). ``workers > 0`` gathers the batches of
    inputs held on the host in that many ``DataLoader`` worker processes
    (pinned on CUDA) while the device computes: for memory-mapped images
    (``Dataset.mapped``), which the OS pages in from disk. ``compile`` runs
    the training and evaluation forward passes through ``torch.compile``.
    ``eval_batch_size`` (default: :func:`eval_batch_size`) batches the
    per-sample passes. ``augment`` applies to images only: ``"shift"`` translates each image by
    up to ``shift_pixels`` (zero padding), ``"shift-flip"`` also mirrors half
    the images left-right (leave it off for digits and text).
    """

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    max_epochs: int = 30
    seed: int = 0
    augment: str = "none"
    shift_pixels: int = 2
    device: str = "auto"
    amp: bool | None = None
    channels_last: bool | None = None
    eval_batch_size: int | None = None
    workers: int = 0
    compile: bool = False
    label_smoothing: float = 0.0
    eval_flip: bool = False
    nesterov: bool = False
    ema: float = 0.0

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise LabelcleanError(f"augment must be one of {', '.join(AUGMENTATIONS)}")
        for name in ("lr", "batch_size", "max_epochs", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise LabelcleanError(f"{name} must be positive, got {getattr(self, name)}")
        if self.workers < 0:
            raise LabelcleanError(f"workers must be >= 0, got {self.workers}")
        if not 0 <= self.momentum < 1:
            raise LabelcleanError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise LabelcleanError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.ema < 1:
            raise LabelcleanError(f"ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.label_smoothing < 1:
            raise LabelcleanError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SampleStats:
    """Per-sample outputs of one evaluation pass, aligned with the data.

    ``loss`` is the cross-entropy against the given label; ``margin`` is the
    given label's logit minus the largest other logit (negative when the model
    prefers another class), as in AUM (Pleiss et al. 2020).
    """

    loss: np.ndarray
    pred: np.ndarray
    pred_prob: np.ndarray
    given_prob: np.ndarray
    margin: np.ndarray
    #: The class with the largest logit other than the given label (the one the
    #: margin is measured against).
    runner_up: np.ndarray | None = None


@dataclass
class EpochStats:
    """What one training epoch measured (running averages over its minibatches)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    seconds: float
    steps: int
    samples: SampleStats | None = None
    #: The canary rows' training-pass measurements (with ``samples``), or None.
    canaries: SampleStats | None = None


def resolve_device(device: str) -> torch.device:
    """``"auto"`` means CUDA when available, else CPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LabelcleanError(f"unknown device {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LabelcleanError("CUDA was asked for but is not available")
    if dev.type == "cuda" and dev.index is None:
        # with an explicit index, comparisons with tensor.device (always indexed) hold
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def epoch_order(seed: int, epoch: int, n: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """The sample order of ``epoch``: a permutation that depends on nothing else.

    With ``world_size > 1`` each rank takes every ``world_size``-th element, the
    way ``DistributedSampler`` shards (padding is the caller's business).
    """
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)[rank::world_size]


class Trainer:
    """SGD on one in-memory dataset.

    Parameters
    ----------
    model:
        The network (a :class:`~labelclean.models.Classifier` takes raw inputs).
    x, y:
        Inputs (CPU tensor, ``uint8`` images or ``float32`` features) and integer
        labels. ``x`` is moved to the training device once when it fits in a
        quarter of the free device memory, else batches are copied per step.
    config:
        A :class:`TrainConfig`.
    dist:
        This process's place in a distributed run (:mod:`labelclean.distributed`):
        each rank then trains on its stride of every global minibatch through
        DistributedDataParallel and evaluates its block of samples, and every
        per-sample table is gathered whole on every rank. ``config.device``
        must then be this rank's device.
    canary_rows:
        Samples held out of training under their given labels (``held_out``;
        measured like all others, out of sample), whose inputs become canaries
        (:mod:`labelclean.canaries`) once :meth:`set_canary_labels` gives them
        labels: trained on like every other row from then on, and measured by
        :meth:`evaluate_canaries`. :meth:`evaluate`, :meth:`outputs` and ``y``
        cover the ``N`` samples.
    """

    def __init__(
        self, model: nn.Module, x: torch.Tensor, y: np.ndarray, config: TrainConfig,
        dist: Dist = SINGLE, *, canary_rows: np.ndarray | None = None,
    ) -> None:
        self.config = config
        self.dist = dist
        if dist.enabled and min(config.batch_size, len(y) // 2) < dist.world_size:
            raise LabelcleanError(
                f"batch size {config.batch_size} with {len(y)} samples is too small to "
                f"share among {dist.world_size} processes"
            )
        self.device = resolve_device(config.device)
        # bf16 autocast is opt-in: with it regnetx_002 did not learn at all on an
        # H100 (loss stuck at ln 10, plain loop alike; docs/performance.md), and
        # small models are launch-bound there, so it bought no speed either.
        self.amp = bool(config.amp) and self.device.type == "cuda"
        torch.manual_seed(config.seed)
        self.model = model.to(self.device)
        self.images = x.dim() == 4
        self.channels_last = self.images and (
            config.channels_last if config.channels_last is not None else True
        )
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # torch.compile wraps the same parameters; state_dict and the probe use
        # self.model, the steps and the per-sample pass the compiled forward.
        self.forward = self.model
        if config.compile:
            try:
                self.forward = torch.compile(self.model)
            except RuntimeError as e:  # e.g. a Python version dynamo does not support yet
                raise LabelcleanError(f"--compile is not available here: {e}") from None
        # Training steps go through DDP (gradients averaged over the ranks); the
        # per-sample passes do not: each rank evaluates its own block, and DDP's
        # forward would broadcast buffers, a collective those passes must not need.
        self.step_forward = self.forward
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            self.step_forward = torch.compile(ddp) if config.compile else ddp
        self.x = self.place(x)
        self.y = torch.as_tensor(np.array(y, dtype=np.int64)).to(self.device)
        rows = np.zeros(0, dtype=np.int64) if canary_rows is None else np.asarray(canary_rows)
        self.canary_rows = torch.as_tensor(rows, dtype=torch.long)
        # A canary's sample is held out of training under its own label (a twin
        # under the given label would pull the canary towards it, which no real
        # wrong label has); it is measured out of sample instead.
        self.held_out = np.zeros(len(y), dtype=bool)
        self.held_out[rows] = True
        self._kept = torch.as_tensor(np.flatnonzero(~self.held_out), dtype=torch.long)
        self.canary_y: np.ndarray | None = None
        self._set_rows()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0,
        )
        self.epoch = 0
        self.steps = 0
        #: The weight average the per-sample passes measure (``config.ema``), or None.
        self.averaged: nn.Module | None = None
        if config.ema > 0:
            self.averaged = copy.deepcopy(self.model).eval().requires_grad_(False)
        #: ``(weights version, model)``: the batch-norm-folded copy the per-sample
        #: passes run, rebuilt after the weights change.
        self._inference: tuple[int, nn.Module] | None = None
        self._weights_version = 0
        self._eval_batch: int | None = config.eval_batch_size

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "steps": self.steps,
            "config": self.config.to_dict(),
            "canary_y": None if self.canary_y is None else self.canary_y.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_weights(state["model"])
        if self.averaged is not None and state.get("averaged") is not None:
            self.averaged.load_state_dict(state["averaged"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.steps = int(state.get("steps", 0))
        if state.get("canary_y") is not None:
            self.set_canary_labels(np.asarray(state["canary_y"]))

    def visit_order(self, epoch: int) -> np.ndarray:
        """The samples in the order ``epoch`` trains on them (canaries left out)."""
        rows = self._train_rows[epoch_order(self.config.seed, epoch, len(self._train_rows))]
        return rows[rows < len(self.y)].numpy() if self.canary_y is not None else rows.numpy()

    def set_canary_labels(self, labels: np.ndarray) -> None:
        """From the next epoch on, train on the canaries under ``labels`` (one per
        ``canary_rows``)."""
        labels = np.asarray(labels, dtype=np.int64)
        if len(labels) != len(self.canary_rows):
            raise LabelcleanError("one canary label per canary row is needed")
        self.canary_y = labels
        self._set_rows()

    def _set_rows(self) -> None:
        """Training row i reads ``x[_train_rows[i]]`` under ``_train_y[i]``: the samples
        not held out, then the canaries once they have labels."""
        rows, ys = [self._kept], [self.y[self._kept.to(self.device)]]
        if self.canary_y is not None:
            rows.append(self.canary_rows)
            ys.append(torch.as_tensor(self.canary_y).to(self.device))
        self._train_rows = torch.cat(rows)
        self._train_y = torch.cat(ys)

    def load_weights(self, weights: dict) -> None:
        """Load a model ``state_dict`` (the weights at ``t_c``, say), as the trained
        weights and as their average. Weights change through this,
        :meth:`load_state_dict` or :meth:`train_epoch` only, so that the
        per-sample passes never run a stale folded copy."""
        self._weights_version += 1
        self.model.load_state_dict(weights)
        if self.averaged is not None:
            self.averaged.load_state_dict(weights)

    @property
    def measured(self) -> nn.Module:
        """The model the per-sample passes measure and a run keeps: the weight
        average with ``config.ema``, else the trained weights."""
        return self.model if self.averaged is None else self.averaged

    @torch.no_grad()
    def _update_average(self) -> None:
        """One step of the weight average (parameters and batch-norm statistics);
        early steps average over fewer steps, as timm's ModelEma does, so that
        the average does not lag behind the random start."""
        if self.averaged is None:
            return
        self.steps += 1
        decay = min(self.config.ema, (1 + self.steps) / (10 + self.steps))
        mine = [t for t in self.averaged.state_dict().values() if t.is_floating_point()]
        theirs = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        torch._foreach_lerp_(mine, theirs, 1 - decay)

    # ------------------------------------------------------------------ data

    def place(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` where batches are best sliced from: on the device when it fits.

        Otherwise it stays on the host: pinned whole when it is small enough
        and no workers are set, else gathered a batch at a time (by ``workers``
        processes, which pin each batch, when set).
        """
        if self.device.type != "cuda":
            return x
        free, _ = torch.cuda.mem_get_info(self.device)
        size = x.numel() * x.element_size()
        if size < free // 4:
            return x.to(self.device)
        return x.pin_memory() if self.config.workers == 0 and size < PIN_LIMIT else x

    def _batches(
        self,
        x: torch.Tensor,
        batches: list[torch.Tensor],
        batches_dev: list[torch.Tensor] | None = None,
    ):
        """``x[idx]`` on the training device for each ``idx`` (CPU index tensors), in order.

        Sliced on the device when ``x`` is there (``batches_dev``: the same
        indices already on the device). Otherwise gathered on the host: by
        ``config.workers`` DataLoader processes when set, which overlap the
        gathering (and the page faults of memory-mapped inputs) with compute
        and pin each batch on CUDA; else in this process.
        """
        if x.device == self.device:
            if batches_dev is None:
                batches_dev = torch.cat(batches).to(self.device).split([len(b) for b in batches])
            parts = (x[i] for i in batches_dev)
        elif self.config.workers > 0 and x.device.type == "cpu":
            parts = (
                xb.to(self.device, non_blocking=True)
                for xb in DataLoader(
                    _Rows(x), batch_size=None, sampler=[b.numpy() for b in batches],
                    num_workers=self.config.workers, pin_memory=self.device.type == "cuda",
                    prefetch_factor=4, multiprocessing_context=_worker_context(),
                )
            )
        else:
            parts = (x[i].to(self.device, non_blocking=True) for i in batches)
        for xb in parts:
            if self.channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb

    def _augment(
        self, xb: torch.Tensor, gen: torch.Generator, global_size: int | None = None
    ) -> torch.Tensor:
        """Random shifts (and flips) of ``xb``. In a distributed run the draws are
        made for the whole global batch (``global_size``) and each rank keeps its
        stride, so every sample gets the shift it gets in the one-process run."""
        mode = self.config.augment
        if mode == "none" or xb.dim() != 4:
            return xb
        b, _, h, w = xb.shape
        draws, mine = b, slice(None)
        if self.dist.enabled and global_size is not None:
            draws, mine = global_size, slice(self.dist.rank, None, self.dist.world_size)
        p = self.config.shift_pixels
        padded = F.pad(xb, (p, p, p, p))
        oy = torch.randint(0, 2 * p + 1, (draws,), generator=gen)[mine].to(xb.device)
        ox = torch.randint(0, 2 * p + 1, (draws,), generator=gen)[mine].to(xb.device)
        rows = (oy[:, None] + torch.arange(h, device=xb.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=xb.device))[:, None, None, :]
        bidx = torch.arange(b, device=xb.device)[:, None, None, None]
        cidx = torch.arange(xb.shape[1], device=xb.device)[None, :, None, None]
        out = padded[bidx, cidx, rows, cols]
        if mode == "shift-flip":
            flip = (torch.rand(draws, generator=gen)[mine] < 0.5).to(xb.device)
            out = torch.where(flip[:, None, None, None], out.flip(-1), out)
        return out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ loop

    def train_epoch(self, record: bool = False) -> EpochStats:
        """One pass over the data in :func:`epoch_order`; advances ``self.epoch``.

        With ``record``, every sample's loss, prediction and margin are kept from
        the training forward pass itself (train mode, the weights as they were
        when its minibatch came up) and returned as ``EpochStats.samples``: free,
        but not the fixed-weight measurement that :meth:`evaluate` makes.
        """
        start = time.perf_counter()
        self._weights_version += 1
        cfg = self.config
        n = len(self._train_y)
        world = self.dist.world_size
        order = epoch_order(cfg.seed, self.epoch, n)
        gen = torch.Generator().manual_seed(cfg.seed * 7_919 + self.epoch)
        self.model.train()
        total_loss = torch.zeros((), device=self.device)
        total_correct = torch.zeros((), device=self.device, dtype=torch.long)
        steps = 0
        per_sample = torch.full((n, 6), float("nan"), device=self.device) if record else None
        sizes = distributed.batch_sizes(n, cfg.batch_size, world)
        global_sizes = sizes
        if self.dist.enabled:
            # This rank's share of each global minibatch: the same samples meet
            # the same weights as in the one-process run, only split over ranks.
            parts = [b[self.dist.rank :: world] for b in order.split(sizes)]
            order, sizes = torch.cat(parts), [len(b) for b in parts]
        # One host-to-device copy of the order per epoch, not one per step.
        rows = self._train_rows[order]
        batches = list(rows.split(sizes))
        order_dev = order.to(self.device).split(sizes)
        rows_dev = rows.to(self.device).split(sizes) if self.x.device == self.device else None
        batches_x = self._batches(self.x, batches, rows_dev)
        for xb, idx_dev, global_size in zip(batches_x, order_dev, global_sizes, strict=True):
            xb = self._augment(xb, gen, global_size)
            yb = self._train_y[idx_dev]
            with self._autocast():
                logits = self.step_forward(xb)
                if self.dist.enabled:
                    # DDP divides the summed gradients by the world size: scaled
                    # so, the step is the gradient of the global batch's mean
                    # loss even when the ranks' shares differ in size.
                    loss_sum = F.cross_entropy(logits, yb, reduction="sum",
                                               label_smoothing=cfg.label_smoothing)
                    loss = loss_sum * (world / global_size)
                else:
                    loss = F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)
            if per_sample is not None:
                per_sample[idx_dev] = _per_sample(logits.detach().float(), yb)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._update_average()
            if self.dist.enabled:
                total_loss += loss_sum.detach().float()
            else:
                total_loss += loss.detach().float() * len(yb)
            total_correct += (logits.detach().argmax(1) == yb).sum()
            steps += 1
        if self.dist.enabled:
            totals = torch.stack([total_loss.double(), total_correct.double()])
            distributed.all_reduce_sum(self.dist, totals)
            total_loss, total_correct = totals[0], totals[1]
            if per_sample is not None:
                per_sample = distributed.gather_rows(self.dist, per_sample[order], order, n)
        seen = n
        mean_loss = float(total_loss) / seen
        if not math.isfinite(mean_loss):
            raise LabelcleanError(
                f"training diverged at epoch {self.epoch + 1} (loss {mean_loss}); lower --lr"
            )
        self.epoch += 1
        samples = canaries = None
        if per_sample is not None:
            k = len(self._kept)
            table = torch.empty((len(self.y), 6), device=self.device)
            table[self._train_rows[:k].to(self.device)] = per_sample[:k]
            if self.held_out.any():  # held out of training: measured out of sample
                held = torch.as_tensor(np.flatnonzero(self.held_out))
                table[held.to(self.device)] = self._per_sample_table(
                    self.x[held.to(self.x.device)], self.y[held.to(self.device)])
            samples = _sample_stats(self._score_held_out(table))
            canaries = _sample_stats(per_sample[k:]) if n > k else None
        return EpochStats(
            epoch=self.epoch,
            train_loss=mean_loss,
            train_accuracy=float(total_correct) / seen,
            seconds=time.perf_counter() - start,
            steps=steps,
            samples=samples,
            canaries=canaries,
        )

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor | None = None, y: np.ndarray | None = None) -> SampleStats:
        """Per-sample loss and prediction at the current weights.

        Eval mode (batch-norm running statistics, no dropout), no augmentation,
        large batches, no autograd: one forward pass per sample. In a
        distributed run each rank measures its block and every rank gets all rows.
        """
        whole = x is None  # the training samples, held-out ones included
        x = self.x if x is None else x
        yt = self.y if y is None else torch.as_tensor(np.array(y, dtype=np.int64)).to(
            self.device
        )
        if self.dist.enabled:
            lo, hi = distributed.shard_bounds(len(x), self.dist.rank, self.dist.world_size)
            parts = [_per_sample(logits, yt[lo + s : lo + s + len(logits)])
                     for s, logits in self._logits(x[lo:hi])]
            mine = torch.cat(parts) if parts else torch.zeros((0, 6), device=self.device)
            table = distributed.gather_rows(self.dist, mine, torch.arange(lo, hi), len(x))
        else:
            table = self._per_sample_table(x, yt)
        return _sample_stats(self._score_held_out(table) if whole else table)

    @torch.no_grad()
    def _per_sample_table(self, x: torch.Tensor, yt: torch.Tensor,
                          exclude: torch.Tensor | None = None) -> torch.Tensor:
        """:func:`_per_sample` of every row of ``x`` (labels ``yt`` on the device)."""
        parts = [_per_sample(logits, yt[s : s + len(logits)],
                             None if exclude is None else exclude[s : s + len(logits)])
                 for s, logits in self._logits(x)]
        if not parts:
            return torch.zeros((0, 6), device=self.device)
        return torch.cat(parts)

    @torch.no_grad()
    def _score_held_out(self, table: torch.Tensor) -> torch.Tensor:
        """Rewrite the held-out samples' rows of a per-sample ``table`` (all samples):
        measured under their given labels with their canary's class left out. The
        model is taught the canary's label for the same input, so that class
        dominates its view of the sample; among the others it ranks the sample as
        it would an unseen one (the given label against the rest)."""
        if self.canary_y is None or not self.held_out.any():
            return table
        rows = self.canary_rows.to(self.device)
        table[rows] = self._per_sample_table(
            self.x[self.canary_rows.to(self.x.device)], self.y[rows],
            torch.as_tensor(self.canary_y).to(self.device))
        return table

    def evaluate_canaries(self) -> SampleStats | None:
        """:meth:`evaluate` of the canaries under their labels; None until they have
        labels."""
        if self.canary_y is None or len(self.canary_y) == 0:
            return None
        return self.evaluate(self.x[self.canary_rows.to(self.x.device)], self.canary_y)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> np.ndarray:
        """Softmax probabilities ``(N, classes)`` at the current weights (eval mode).

        The same batching, device placement and autocast as :meth:`evaluate`;
        handy for out-of-sample ``pred_probs`` (e.g. for cleanlab).
        """
        return torch.cat([torch.softmax(lg, 1).cpu() for _, lg in self._logits(x)]).numpy()

    @torch.no_grad()
    def outputs(self, embeddings: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``(pred_probs, embeddings)`` of the training data at the current
        weights, rows in sample order, both float32: softmax probabilities
        ``(N, classes)`` and penultimate features ``(N, D)`` (None without
        ``embeddings``). One eval-mode pass, batched as :meth:`evaluate`; it
        runs the uncompiled model, whose ``embed`` is not part of the compiled
        forward."""
        model = self.measured.eval()
        batches = list(torch.arange(len(self.x)).split(self._eval_batch_size()))
        probs, feats = [], []
        for xb in self._batches(self.x, batches):
            with self._autocast():
                if embeddings:
                    f, logits = model.embed(xb)
                    feats.append(f.float().flatten(1).cpu())
                else:
                    logits = model(xb)
            probs.append(torch.softmax(logits.float(), 1).cpu())
        pred_probs = torch.cat(probs).numpy().astype(np.float32)
        if self.canary_y is not None and len(self.canary_y) and pred_probs.shape[1] > 2:
            # the held-out samples as they are measured (_score_held_out): without
            # the class their input was trained on as a canary
            rows = self.canary_rows.numpy()
            pred_probs[rows, self.canary_y] = 0.0
            pred_probs[rows] /= np.maximum(pred_probs[rows].sum(1, keepdims=True), 1e-12)
        return pred_probs, torch.cat(feats).numpy().astype(np.float32) if embeddings else None

    def _logits(self, x: torch.Tensor):
        """Eval-mode float32 logits of ``x`` in order, as ``(start, logits)`` per
        batch of ``eval_batch_size`` (callers hold ``torch.no_grad``)."""
        x = x if x.device == self.device else self.place(x)
        model = self._inference_model()
        batches = list(torch.arange(len(x)).split(self._eval_batch_size()))
        flip = self.config.eval_flip and x.dim() == 4
        for idx, xb in zip(batches, self._batches(x, batches), strict=True):
            with self._autocast():
                logits = model(xb).float()
                if flip:  # the mirror image too, averaged: what training's flips taught
                    logits = (logits + model(xb.flip(-1)).float()) / 2
                yield int(idx[0]), logits

    def _inference_model(self) -> nn.Module:
        """The model the per-sample passes run: a batch-norm-folded eval copy of
        the current weights (:func:`labelclean.models.fold_batch_norm`), made
        once per change of the weights; the compiled forward when compiling
        (folding would recompile it every epoch)."""
        self.model.eval()
        if self.config.compile and self.averaged is None:
            return self.forward
        if self._inference is None or self._inference[0] != self._weights_version:
            self._inference = (self._weights_version, fold_batch_norm(self.measured))
        return self._inference[1]

    def _eval_batch_size(self) -> int:
        """``config.eval_batch_size``, or chosen once by :func:`eval_batch_size`."""
        if self._eval_batch is None:
            self._eval_batch = eval_batch_size(self.model, self.x[:2].to(self.device),
                                               self.device)
        return self._eval_batch


#: Bytes of the largest activation map of one eval batch on the CPU: a batch
#: whose maps stay about this size runs from the cache (docs/performance.md).
EVAL_BATCH_BYTES = 16 << 20
#: Eval batch on accelerators, and the most on the CPU.
MAX_EVAL_BATCH = 1024


def eval_batch_size(model: nn.Module, sample: torch.Tensor, device: torch.device) -> int:
    """The batch of the per-sample passes: :data:`MAX_EVAL_BATCH` on an
    accelerator; on the CPU the largest power of two (32 to 1024) whose largest
    activation map, measured by one forward pass of ``sample``, stays within
    :data:`EVAL_BATCH_BYTES`. Larger batches spill the cache there: a 32 px
    colour network is several times slower per image at batch 1024 than at 128
    (docs/performance.md)."""
    if device.type != "cpu":
        return MAX_EVAL_BATCH
    largest = [0]

    def hook(_module: nn.Module, _inputs: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            largest[0] = max(largest[0], out[0].numel() * out.element_size())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    batch = MAX_EVAL_BATCH
    while batch > 32 and batch * largest[0] > EVAL_BATCH_BYTES:
        batch //= 2
    return batch


class _Rows(Dataset):
    """``x[idx]`` for a whole array of row indices at once: each "sample" the
    DataLoader asks for is a batch."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: np.ndarray) -> torch.Tensor:
        return self.x[torch.from_numpy(idx)]


def _worker_context() -> str | None:
    """Fork on Linux (whatever Python's default): workers then share the parent's
    memory map of the inputs instead of receiving a pickled, shared-memory copy
    of them. Elsewhere the platform's default (spawn copies the inputs)."""
    import sys

    return "fork" if sys.platform.startswith("linux") else None


def _per_sample(logits: torch.Tensor, y: torch.Tensor,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
    """``(B, 6)``: loss, predicted class, its probability, the given label's
    probability, the margin (given logit minus the largest other) and the
    class of that largest other logit. ``exclude`` (one class per row) scores
    each row as if that class did not exist (given three classes or more)."""
    if exclude is not None and logits.shape[1] > 2:  # with two, none would be left to rank
        logits = logits.scatter(1, exclude[:, None], float("-inf"))
    logp = torch.log_softmax(logits, 1)
    loss = -logp.gather(1, y[:, None])[:, 0]
    prob, pred = logp.exp().max(1)
    given_logit = logits.gather(1, y[:, None])[:, 0]
    other, other_class = logits.scatter(1, y[:, None], float("-inf")).max(1)
    return torch.stack(
        [loss, pred.float(), prob, (-loss).exp(), given_logit - other, other_class.float()], 1
    )


def _sample_stats(table: torch.Tensor) -> SampleStats:
    out = table.cpu().numpy()
    return SampleStats(
        loss=out[:, 0].astype(np.float32),
        pred=out[:, 1].astype(np.int64),
        pred_prob=out[:, 2].astype(np.float32),
        given_prob=out[:, 3].astype(np.float32),
        margin=out[:, 4].astype(np.float32),
        runner_up=out[:, 5].astype(np.int64),
    )
