"""Choosing ``t_c`` online and flagging samples there (paper section 5).

The paper takes ``t_c`` as the epoch where ``delta_L = m_w - m_c`` peaks and
flags every sample whose loss exceeds the mixture's threshold ``l_c``. Read
naively (a global argmax after training to the end) this is fragile: a single
unstable epoch can produce a spurious peak, and at high noise ``delta_L`` keeps
rising into memorisation. :class:`PhaseIIDetector` reads the signal online:

* each epoch gets a score from its loss mixture (``score``, see ``SCORES``);
* an epoch is *unstable* when its training loss jumped above ``spike_ratio``
  times the lowest training loss seen before it, or when the loss measured
  after the epoch (eval mode) exceeds ``spike_ratio`` times the training loss
  of the epoch (batch-norm running statistics not yet settled, or weights that
  just blew up); an unstable epoch can never be chosen, but it counts towards
  patience;
* the best stable epoch so far is the candidate ``t_c``; training stops once
  ``patience`` epochs have passed without a better one, so the first clear peak
  wins over a later one and a run costs little more than reaching phase II;
* with ``wait_for_noise`` (used with the AUM suspicion) the peak search and
  the patience count start at the first epoch where a second population
  shows, and not before ``min_epoch``; before it the latest stable epoch is
  the provisional ``t_c``.

Per-sample suspicion (:mod:`labelclean.suspicions`, owned by the policy as
``TcPolicy.suspicion``) is the window's mean loss (the paper's, ``window=1``), its
log, or minus the area under the margin (AUM), or any registered
:class:`~labelclean.suspicions.Suspicion`; the built-ins flag above ``l_c`` for the
losses and AUM < 0 for AUM. docs/phases.md ("Choosing t_c") has the evidence for
each choice.

Scores
------
``"delta_L"``
    The paper's ``m_w - m_c``.
``"separation"``
    Ashman's ``D``: ``delta_L`` normalised by the components' spread, so that a
    separation bought by widening both populations does not count.
``"expected_f1"``
    The F1 the mixture expects of its own flags
    (:attr:`~labelclean.mixture.LossMixture.expected_f1`): high when few samples
    of either component fall on the wrong side of the threshold. Unlike ``D``
    it weighs the overlap by the components' sizes, so a tiny, well-separated
    tail does not win, and it is 0 for a mixture that is not bimodal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from .estimate import LEARNED_Z, Estimate
from .mixture import LossMixture, fit_loss_mixture
from .suspicions import (  # noqa: F401  (AUM_*, LOG_EPS, MAX_FLAGGED_SHARE: decision's names too)
    AUM_MIN_EPOCHS,
    AUM_MIN_SEPARATION,
    LOG_EPS,
    MAX_FLAGGED_SHARE,
    MIN_AUM_POPULATION,
    SUSPICIONS,
    Measurements,
    Suspicion,
    aum_population,
    create_suspicion,
    register_suspicion,
)

SCORES = ("delta_L", "separation", "expected_f1")


def mixture_score(mixture: LossMixture, score: str) -> float:
    if score == "delta_L":
        return mixture.delta_L
    if score == "separation":
        return mixture.separation
    if score == "expected_f1":
        return mixture.expected_f1
    raise ValueError(f"unknown score {score!r}; choose from {SCORES}")


@dataclass
class PhaseIIDetector:
    """Online detector of the phase-II peak; see the module docstring.

    Feed it one epoch at a time with :meth:`update`; read ``best_epoch`` and
    ``should_stop``.
    """

    patience: int = 5
    score: str = "separation"
    spike_ratio: float = 2.0
    #: Start the peak search (and the patience count) at the first epoch with
    #: a second population; until then the latest stable epoch is the
    #: candidate, so a run that never finds one ends at its last epoch.
    wait_for_noise: bool = False
    #: No epoch before this one can start the search (with the AUM, it needs a
    #: few epochs to be an area, not one epoch's margin).
    min_epoch: int = 1
    best_epoch: int | None = None
    best_score: float = -math.inf
    since_best: int = 0
    #: The epoch the peak search started at (the first ready epoch, with a
    #: second population under ``wait_for_noise``); ``None`` until then.
    first_noisy_epoch: int | None = None
    unstable_epochs: list[int] = field(default_factory=list)
    _min_train_loss: float = math.inf

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; choose from {SCORES}")
        if self.patience < 1:
            raise ValueError("patience must be at least 1")

    def update(
        self,
        epoch: int,
        train_loss: float,
        mixture: LossMixture,
        eval_loss: float | None = None,
        noisy: bool | None = None,
        ready: bool = True,
    ) -> bool:
        """Record an epoch; return ``True`` when it becomes the new ``t_c``.

        ``train_loss`` is the mean minibatch loss during the epoch, ``eval_loss``
        the mean per-sample loss measured after it. ``noisy`` says whether a
        second population was found this epoch (default: ``mixture.bimodal``);
        it matters only with ``wait_for_noise``. ``ready`` is the
        learn-before-deciding gate (:class:`TcPolicy`): until an epoch is ready
        the search does not start and the latest stable epoch is provisional.
        """
        unstable = train_loss > self.spike_ratio * self._min_train_loss or (
            eval_loss is not None and eval_loss > self.spike_ratio * train_loss
        )
        self._min_train_loss = min(self._min_train_loss, train_loss)
        if unstable:
            self.unstable_epochs.append(epoch)
        noisy = mixture.bimodal if noisy is None else bool(noisy)
        if self.first_noisy_epoch is None:
            gate = ready and epoch >= self.min_epoch and (noisy or not self.wait_for_noise)
            if not gate:
                if unstable and self.best_epoch is not None:
                    return False
                self.best_epoch, self.since_best = epoch, 0  # provisional: the latest
                return True
            self.first_noisy_epoch = epoch
            self.best_score = -math.inf
        value = mixture_score(mixture, self.score)
        if not unstable and math.isfinite(value) and value > self.best_score:
            self.best_epoch, self.best_score, self.since_best = epoch, value, 0
            return True
        self.since_best += 1
        return False

    @property
    def should_stop(self) -> bool:
        if self.first_noisy_epoch is None:
            return False
        return self.best_epoch is not None and self.since_best >= self.patience

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`update` has accumulated, as plain values (for resuming)."""
        return {f.name: copy_value(getattr(self, f.name)) for f in fields(self)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, copy_value(state[f.name]))


def suspicion_scores(
    losses: np.ndarray | list[np.ndarray],
    margins: np.ndarray | list[np.ndarray] | None,
    kind: str = "loss",
    window: int = 3,
) -> np.ndarray:
    """Each sample's suspicion at the last epoch given, higher = more likely mislabelled,
    by the suspicion registered as ``kind`` (:mod:`labelclean.suspicions`).

    ``losses`` and ``margins`` hold one ``(N,)`` row per epoch so far (epochs
    ``1..t``): ``"loss"`` averages the last ``window`` losses, ``"logloss"`` takes
    its log, ``"aum"`` negates the mean of every margin given.
    """
    suspicion = create_suspicion(kind, window)
    rows = None if margins is None or len(margins) == 0 else np.asarray(margins)
    return suspicion.score(Measurements(
        epoch=len(losses), loss=losses[-1] if len(losses) else None,
        margin=None if rows is None else rows[-1], losses=losses,
        margin_sum=None if rows is None else np.sum(rows, axis=0),
        margin_count=0 if rows is None else len(rows)))


def flag_samples(
    mixture: LossMixture,
    losses: np.ndarray,
    suspicion: str = "loss",
    noisy: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Flags and ``p_noisy`` at ``t_c``.

    ``losses`` are the suspicion scores the mixture was fitted to. Nothing is
    flagged unless a second population was found (``noisy``, by default
    ``mixture.bimodal``). Then, for the loss suspicions, a sample is flagged
    when its score exceeds the threshold ``l_c``; for ``"aum"``, when its
    area under the margin is negative (score > 0): averaged over training so
    far, the model preferred another class to the given one
    (:meth:`labelclean.suspicions.Suspicion.flags`). ``p_noisy`` is
    the posterior for the high-score component.
    """
    p_noisy = mixture.posterior(losses)
    noisy = mixture.bimodal if noisy is None else bool(noisy)
    return create_suspicion(suspicion).flags(mixture, losses, noisy), p_noisy


def flag_cut(mixture: LossMixture, suspicion: str) -> float:
    """The score above which :func:`flag_samples` flags: 0 for the AUM, ``l_c`` else."""
    return create_suspicion(suspicion).cut(mixture)


def copy_value(value: Any) -> Any:
    """A copy of a state value that shares no array or container with ``value``."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [copy_value(v) for v in value]
    if isinstance(value, dict):
        return {k: copy_value(v) for k, v in value.items()}
    return value


# ---------------------------------------------------------------------------
# The whole t_c policy: learn before deciding, choose t_c, withhold when unsure
# ---------------------------------------------------------------------------

#: ``t_c`` may not fall before this many SGD steps (with the AUM gate's
#: ``AUM_MIN_EPOCHS``): a small set has few steps an epoch, and its first
#: epochs say nothing about the labels.
MIN_STEPS = 300
#: Patience is at least this many SGD steps (the epoch count ``patience`` is
#: raised to cover it), so a small set is not judged 40 steps after a peak.
PATIENCE_STEPS = 400
#: With a population, withhold when the mixture's high-suspicion component
#: holds more than this many times the flagged share (see
#: :meth:`TcPolicy.verdict`) ...
MAX_COMPONENT_RATIO = 1.5
#: ... once at least this share of the samples is flagged (a clean set's
#: handful of flags is no population to compare).
COMPONENT_MIN_FLAGGED = 0.02
#: Without a population, "no second population" is claimed only when the model
#: agrees with at least this share of the given labels at ``t_c``; a model that
#: disagrees with more cannot tell a clean set from one whose wrong labels it
#: could not set apart. Chosen on CIFAR-10N 'random1' and the clean zoo cells
#: (docs/benchmarks.md).
MIN_CLEAN_AGREEMENT = 0.9

#: The first epoch's held-out test (:meth:`TcPolicy.first_visits`) passes when
#: the model predicts the given labels of samples it had not yet trained on
#: this many standard errors above chance (the accuracy its predictions would
#: have if they were independent of the labels).
FIRST_VISIT_Z = 3.0
#: ... and only when the first epoch took at least this many SGD steps: after
#: one or two steps no model predicts anything yet (300 samples at batch 128),
#: and the test is then inconclusive rather than a reason to withhold.
FIRST_VISIT_MIN_STEPS = 10

#: With ``verdict="estimate"``: the flags are written when their estimated
#: precision (:mod:`labelclean.estimate`) reaches this: a flag should more likely
#: be right than wrong. The point estimate decides, not an end of its interval:
#: on CIFAR-10N's 'worse' draws the interval's lower end sat next to the bar, so
#: that a verdict by it would flip between draws (docs/benchmarks.md,
#: "Calibration").
MIN_PRECISION = 0.5
#: "No second population" when the upper end of the estimated wrong-label share
#: stays below this: the labels are clean, as far as the run can tell.
CLEAN_SHARE = 0.02

VERDICTS = ("flagged", "no second population", "withheld")
#: The exit status of ``labelclean run`` for a withheld run (docs/usage.md).
WITHHELD_EXIT_STATUS = 3


def suggested_labels(pred: np.ndarray, runner_up: np.ndarray | None, y: np.ndarray) -> np.ndarray:
    """The label a flag proposes for each sample: the model's prediction, or,
    where that is the given label (a row flagged by its AUM alone, fitted
    late), the runner-up class; never the given label when ``runner_up`` is known."""
    pred = np.asarray(pred)
    runner_up = pred if runner_up is None else np.asarray(runner_up)
    return np.where(pred == np.asarray(y), runner_up, pred)


def _lost_plurality(
    flags: np.ndarray, y: np.ndarray, k: int, suggested: np.ndarray | None
) -> tuple[int, int, int | None, int] | None:
    """The class whose given label the flags would leave without a plurality,
    as ``(class, kept, rival class or None, samples)``, the worst one; or ``None``.

    A class keeps its unflagged samples; its flagged ones go to their
    ``suggested`` labels (all to one rival when unknown)."""
    worst = None
    for i in range(k):
        in_c = y == i
        n = int(in_c.sum())
        if n == 0:
            continue
        kept = int((in_c & ~flags).sum())
        if suggested is None:
            rival, moved = None, n - kept
        else:
            counts = np.bincount(np.asarray(suggested)[in_c & flags], minlength=k)
            counts[i] = 0
            rival, moved = int(counts.argmax()), int(counts.max())
        if moved > 0 and kept <= moved and (worst is None or kept / n < worst[1] / worst[3]):
            worst = (i, kept, rival, n)
    return worst


def _withheld(reason: str, advice: str, force: bool, flags: np.ndarray
              ) -> tuple[Verdict, np.ndarray]:
    """A withheld verdict and what it writes: nothing, or ``flags`` with ``force``;
    ``forced`` only when that wrote some (a run with none to write says so instead of
    claiming that they were written)."""
    written = flags if force else np.zeros_like(flags)
    if force and not written.any():
        reason += " (--force-flags: there were no flags to write)"
    return Verdict("withheld", reason, advice, forced=bool(written.any())), written


def class_emptied(flags: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """``(k,)`` bools: the flags would take every sample of the class (never done)."""
    n = np.bincount(np.asarray(y), minlength=k)
    f = np.bincount(np.asarray(y)[np.asarray(flags, bool)], minlength=k)
    return (n > 0) & (f >= n)


@dataclass
class Verdict:
    """What a run concluded, in one of :data:`VERDICTS`.

    ``reason`` says why (for ``"withheld"``: what was not convincing),
    ``advice`` what to try. ``forced`` marks a withheld run whose flags were
    kept anyway on request (``force=True`` / ``--force-flags``).
    """

    status: str
    reason: str = ""
    advice: str = ""
    forced: bool = False
    #: With ``"flagged"``: the classes whose flags were held back (not likely right).
    classes_held: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = self.status if not self.reason else f"{self.status}: {self.reason}"
        return text + (" (flags forced)" if self.forced else "")

    @property
    def withheld(self) -> bool:
        return self.status == "withheld"

    def to_dict(self) -> dict:
        return {"status": self.status, "reason": self.reason, "advice": self.advice,
                "forced": self.forced, "classes_held": list(self.classes_held),
                "text": str(self)}


@dataclass
class EpochDecision:
    """What :meth:`TcPolicy.observe` concluded about one epoch."""

    epoch: int
    #: Per-sample suspicion scores (higher = more suspicious) and their mixture.
    scores: np.ndarray
    mixture: LossMixture
    #: A second population shows (the mixture's, or the AUM gate's).
    noisy: bool
    #: Learn-before-deciding: the model has learned the majority of the labels
    #: (see :meth:`TcPolicy.learned`) and ``MIN_STEPS`` have passed.
    ready: bool
    #: Classes whose given label is the plurality prediction among their samples.
    classes_learned: int
    #: The flags this epoch would give if it were ``t_c``.
    would_flag: np.ndarray
    #: This epoch is the new candidate ``t_c``.
    is_best: bool
    #: The canaries' suspicion scores (:mod:`labelclean.canaries`), or None without.
    canary_scores: np.ndarray | None = None
    #: The flag rule's cut on ``scores``: a sample is flagged when its score exceeds it.
    cut: float = 0.0
    #: The first epoch of the margins the AUM averages (``metrics.csv``'s ``aum_from``).
    area_start: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the mixture as a dict), for a resume state."""
        return {**{f.name: getattr(self, f.name) for f in fields(self)},
                "mixture": self.mixture.to_dict()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> EpochDecision:
        return cls(**{**state, "mixture": LossMixture(**state["mixture"])})


class TcPolicy:
    """The whole ``t_c`` policy, fed one epoch at a time (or replayed from a history).

    Per epoch (:meth:`observe`): the suspicion scores and their two-component
    mixture; whether a second population shows (the mixture's bimodality, and
    for the AUM the window-loss mixture's or the AUM gate's,
    :func:`aum_population`); whether the model has *learned* (the
    learn-before-deciding gate, :meth:`learned`); and the peak search of
    :class:`PhaseIIDetector`, which starts only at a ready epoch. At the end,
    :meth:`verdict` decides whether the flags at ``t_c`` can be trusted.

    Learning is counted in SGD steps: the patience in epochs is raised to
    cover :data:`PATIENCE_STEPS`, and no epoch before :data:`MIN_STEPS` is ready.
    """

    def __init__(
        self,
        *,
        suspicion: str | Suspicion = "aum",
        score: str = "separation",
        window: int = 3,
        patience: int = 5,
        spike_ratio: float = 2.0,
        seed: int = 0,
        min_steps: int = MIN_STEPS,
        patience_steps: int = PATIENCE_STEPS,
        mixture_backend: str = "auto",
        device: str | torch.device = "cpu",
        canaries: bool = False,
    ) -> None:
        #: The per-sample suspicion (:mod:`labelclean.suspicions`): its score, flag rule
        #: and words; a name of :data:`SUSPICIONS`, or an instance.
        self.suspicion: Suspicion = (suspicion if isinstance(suspicion, Suspicion)
                                     else create_suspicion(suspicion, window))
        self.window = window
        self.patience = patience
        self.seed = seed
        # The mixture is fitted where the model trains: on an accelerator by the
        # torch EM (mixture.fit_loss_mixture's "auto"), on the CPU by scikit-learn.
        self.mixture_backend = mixture_backend
        self.device = torch.device(device)
        self.min_steps = min_steps
        self.patience_steps = patience_steps
        #: The run trains canaries: no epoch is ready before they have been measured
        #: (a ``t_c`` without them would leave the verdict nothing to estimate from).
        self.canaries = canaries
        self.detector = PhaseIIDetector(
            patience=patience, score=score, spike_ratio=spike_ratio,
            wait_for_noise=self.suspicion.wait_for_noise, min_epoch=self.suspicion.min_epoch,
        )
        self.steps = 0
        self.ready_epochs: list[int] = []
        #: The first epoch's held-out evidence (:meth:`first_visits`).
        self.first_visit: dict[str, float] | None = None
        self._margin_sum: np.ndarray | None = None
        self._margin_count = 0
        #: The first epoch of the margins in ``_margin_sum``.
        self.area_start = 1
        #: The first epoch at which every class was learned: the AUM's area
        #: starts there (see :meth:`observe`); ``None`` until then.
        self.aum_start: int | None = None
        self._stable_losses: list[np.ndarray] = []
        #: The canaries' margins summed over the epochs they were measured in.
        self._canary_margin_sum: np.ndarray | None = None
        self._canary_count = 0
        self._canary_losses: list[np.ndarray] = []
        #: The :class:`EpochDecision` of the current ``t_c`` (what :meth:`verdict` reads).
        self.best: EpochDecision | None = None

    # ------------------------------------------------------------ per epoch

    def first_visits(
        self, pred: np.ndarray, y: np.ndarray, order: np.ndarray, steps: int
    ) -> None:
        """Held-out evidence that the labels can be learned at all.

        ``pred`` are the first epoch's training-pass predictions and ``order``
        the order it visited the samples in: the second half of that order was
        predicted by a model that had trained on other samples only (on each
        once), so its accuracy on the given labels is an out-of-sample estimate,
        free. It is compared with chance: the accuracy predictions independent
        of the labels would have, ``sum_k p_k q_k`` over the shares ``p_k`` of
        label ``k`` and ``q_k`` of prediction ``k`` among those samples (a
        model that always guesses the commonest label scores exactly chance).
        Labels
        a model memorises but cannot predict (random labels, images of noise)
        score at chance here and pass the learned-majority test later, by
        memorising (docs/benchmarks.md has a measured case). ``steps`` is the
        first epoch's
        number of SGD steps (below :data:`FIRST_VISIT_MIN_STEPS` the test is
        inconclusive).
        """
        late = np.asarray(order)[len(order) // 2 :]
        yl, pl = np.asarray(y)[late], np.asarray(pred)[late]
        hits = float(np.mean(pl == yl))
        k = int(max(yl.max(initial=0), pl.max(initial=0))) + 1
        p = np.bincount(yl, minlength=k) / max(1, len(late))
        q = np.bincount(pl, minlength=k) / max(1, len(late))
        chance = float(p @ q)
        se = math.sqrt(max(chance * (1 - chance), 1e-12) / max(1, len(late)))
        self.first_visit = {"accuracy": hits, "chance": chance, "z": (hits - chance) / se,
                            "steps": float(steps)}

    def first_visit_record(self) -> dict[str, float]:
        """The first-visit test as history columns (``TcPolicy.replay`` reads them back)."""
        fv = self.first_visit or {}
        return {f"first_visit_{k}": v for k, v in fv.items()}

    @staticmethod
    def classes_learned(pred: np.ndarray, y: np.ndarray, num_classes: int) -> int:
        """How many classes have their given label as the plurality prediction
        among the samples given that label (the model has learned the class)."""
        counts = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(counts, (np.asarray(y), np.asarray(pred)), 1)
        diag = np.diag(counts).copy()
        absent = counts.sum(1) == 0  # nothing to learn: counted as learned
        np.fill_diagonal(counts, -1)
        return int(((diag > counts.max(1)) | absent).sum())

    def learned(self, classes_learned: int, num_classes: int) -> bool:
        """The majority has been learned: every class's given label is its plurality
        prediction. A model that has not got there ranks labels by its own bias,
        not by their correctness (it flags most of a set)."""
        return classes_learned >= num_classes

    def _fit_mixture(self, values: np.ndarray) -> LossMixture:
        """The two-component mixture of ``values`` (on ``device`` for the torch EM)."""
        if self.mixture_backend == "sklearn" or (
                self.mixture_backend == "auto" and self.device.type == "cpu"):
            return fit_loss_mixture(values, seed=self.seed, backend="sklearn")
        scores = torch.from_numpy(np.ascontiguousarray(values)).to(self.device)
        return fit_loss_mixture(scores, seed=self.seed, backend="torch")

    def observe(
        self,
        epoch: int,
        steps: int,
        train_loss: float,
        loss: np.ndarray,
        margin: np.ndarray,
        *,
        classes_learned: int,
        num_classes: int,
        canary_loss: np.ndarray | None = None,
        canary_margin: np.ndarray | None = None,
    ) -> EpochDecision:
        """Record epoch ``epoch`` (``steps`` SGD steps in it) and its per-sample
        ``loss`` and ``margin`` from the eval pass; ``classes_learned`` comes from
        :meth:`classes_learned` on that pass's predictions. ``canary_loss`` and
        ``canary_margin`` are the same pass's measurements of the canaries
        (:mod:`labelclean.canaries`), scored exactly as the samples are."""
        if self.steps == 0 and steps > 0:  # patience covers PATIENCE_STEPS
            self.detector.patience = max(self.patience, math.ceil(self.patience_steps / steps))
        self.steps += steps
        eval_loss = float(np.mean(loss))
        margin = np.asarray(margin, dtype=np.float64)
        if self.aum_start is None and self.learned(classes_learned, num_classes):
            # Margins from before the model had learned the majority say
            # nothing about the labels, yet they would dominate the area of a
            # slow learner (on coloured shapes every sample's AUM started
            # deeply negative). The area starts at the first learned epoch.
            self.aum_start = epoch
            self._margin_sum, self._margin_count = None, 0
            # The canaries' area covers the same epochs: an area that also held
            # their unfitted early epochs made random labels look learnable
            # (the canaries outscored memorised samples on their early margins).
            self._canary_margin_sum, self._canary_count = None, 0
        canaries = canary_margin is not None and len(canary_margin) > 0
        if canaries and self._canary_count == 0 and self._margin_count > 0:
            # The canaries start training an epoch after the samples: from here
            # the samples' area restarts with theirs, so that both cover the same
            # epochs. A set memorised within its first epoch otherwise shows
            # random labels as learnable (the canaries' first, unfitted epoch
            # against the samples' fitted ones).
            self._margin_sum, self._margin_count = None, 0
        if self._margin_sum is None:
            self.area_start = epoch
        self._margin_sum = margin.copy() if self._margin_sum is None else self._margin_sum + margin
        self._margin_count += 1
        if canaries:
            cm = np.asarray(canary_margin, dtype=np.float64)
            self._canary_margin_sum = (cm.copy() if self._canary_margin_sum is None
                                       else self._canary_margin_sum + cm)
            self._canary_count += 1
        # An epoch whose measured loss dwarfs its training loss (batch-norm
        # statistics not settled, a blow-up) must not leak into later windows.
        if eval_loss <= self.detector.spike_ratio * train_loss or not self._stable_losses:
            self._stable_losses = (self._stable_losses + [np.asarray(loss)])[-self.window :]
            if canaries and canary_loss is not None:
                self._canary_losses = (self._canary_losses
                                       + [np.asarray(canary_loss)])[-self.window :]
        measured = Measurements(epoch, np.asarray(loss), margin, self._stable_losses,
                                self._margin_sum, self._margin_count, self.area_start)
        scores = self.suspicion.score(measured)
        canary_scores = None
        if canaries:
            canary_scores = self.suspicion.score(Measurements(
                epoch, np.asarray(canary_loss) if canary_loss is not None else None,
                np.asarray(canary_margin, dtype=np.float64), self._canary_losses,
                self._canary_margin_sum, self._canary_count, self.area_start))
        mixture = self._fit_mixture(scores)
        noisy = self.suspicion.second_population(mixture, scores, measured, self._fit_mixture)
        ready = (self.steps >= self.min_steps and self.learned(classes_learned, num_classes)
                 and (canary_scores is not None or not self.canaries))
        if ready:
            self.ready_epochs.append(epoch)
        would_flag = self.suspicion.flags(mixture, scores, noisy)
        is_best = self.detector.update(epoch, train_loss, mixture, eval_loss, noisy=noisy,
                                       ready=ready)
        decision = EpochDecision(epoch, scores, mixture, noisy, ready, classes_learned,
                                 would_flag, is_best, canary_scores,
                                 self.suspicion.cut(mixture), self.area_start)
        if is_best:
            self.best = decision
        return decision

    @property
    def t_c(self) -> int | None:
        return self.detector.best_epoch

    def settle_on(self, epoch: int) -> None:
        """Take ``epoch`` as ``t_c`` when no epoch was a candidate (every one was
        unstable): the run then ends at its last epoch."""
        self.detector.best_epoch = epoch

    #: What :meth:`observe` accumulates; :meth:`state_dict` saves exactly these.
    _STATE = ("patience", "steps", "ready_epochs", "first_visit", "_margin_sum", "_margin_count",
              "area_start", "aum_start", "_stable_losses", "_canary_margin_sum",
              "_canary_count", "_canary_losses")

    def state_dict(self) -> dict[str, Any]:
        """The policy's whole accumulated state, as plain values and arrays: a
        policy given it by :meth:`load_state_dict` observes the next epoch exactly
        as this one would (a resumed run decides as the uninterrupted one)."""
        return {
            **{name: copy_value(getattr(self, name)) for name in self._STATE},
            "detector": self.detector.state_dict(),
            "suspicion": copy_value(self.suspicion.state_dict()),
            "best": None if self.best is None else self.best.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._STATE:  # area_start: not in states saved by 0.8
            setattr(self, name, copy_value(state.get(name, 1) if name == "area_start"
                                           else state[name]))
        self.detector.load_state_dict(state["detector"])
        # a state saved before the suspicion kept its own held the AUM gate's as the policy's
        self.suspicion.load_state_dict(copy_value(state.get("suspicion", {
            "fallback": state.get("_fallback", False),
            "established": state.get("_established", False)})))
        self.best = None if state["best"] is None else EpochDecision.from_dict(state["best"])

    @property
    def should_stop(self) -> bool:
        return self.detector.should_stop

    @property
    def stop_reason(self) -> str:
        return (f"{self.detector.score} did not improve for {self.detector.patience} epochs "
                f"after epoch {self.detector.best_epoch}")

    # ------------------------------------------------------------ at the end

    def verdict(
        self,
        decision: EpochDecision,
        y: np.ndarray,
        classes: list[str],
        *,
        suggested: np.ndarray | None = None,
        predicted: np.ndarray | None = None,
        force: bool = False,
    ) -> tuple[Verdict, np.ndarray]:
        """The verdict at ``t_c`` (``decision`` is that epoch's) and the flags to export.

        Withheld (nothing flagged unless ``force``) when the first epoch shows
        no held-out evidence that the labels can be learned
        (:meth:`first_visits`), when the model had not learned the majority at
        ``t_c`` (or ``t_c`` came before ``min_steps``), or when, in the
        estimate the flags make, a class's given label would no longer be the
        plurality of its own samples: fewer of them kept than the flags move
        to any one other class (:func:`suggested_labels`; a class would be
        emptied, say). Without ``suggested`` the flagged samples of a class
        are counted as if they all went to one class, that is, more than half
        flagged withholds. With the AUM and no second population, AUM < 0 for
        more than :data:`MAX_FLAGGED_SHARE` of the samples withholds too.

        With a population, the flags must also *be* the mixture's wrong-label
        population: in phase II the high-suspicion component holds the wrong
        labels, its weight ``r`` estimating their share (paper section 5),
        and the flags coincide with it. When ``r`` exceeds
        :data:`MAX_COMPONENT_RATIO` times the flagged share (once at least
        :data:`COMPONENT_MIN_FLAGGED` are flagged), the component is a broad
        population the flags only cut the tail of: the suspicion scores show
        no population of their own for the flags, and they are mostly the
        model's mistakes (CIFAR-10N 'aggre' and MNIST pair-flip in
        docs/benchmarks.md).
        Without any of these, ``"flagged"``, or ``"no second population"``
        when none showed, provided the model's predictions at ``t_c``
        (``predicted``) agree with at least :data:`MIN_CLEAN_AGREEMENT` of the
        given labels; with less agreement nothing shows the labels to be
        clean, and the run is withheld. The phase labels are not a reason: without order
        parameters at every epoch they come from a weak fallback that can put
        a well-learned ``t_c`` in phase I; the learned-majority test is the
        direct evidence that phase I is over.
        """
        flags = np.asarray(decision.would_flag, dtype=bool)
        y = np.asarray(y)
        k = len(classes)
        advice = ("train longer (--epochs), lower --lr, try another --model (e.g. mlp for "
                  "small or simple images), or check that the folder's classes are right; "
                  "--force-flags writes the flags anyway, marked as forced")
        reasons = []
        fv = self.first_visit
        if fv is not None and fv["steps"] >= FIRST_VISIT_MIN_STEPS and fv["z"] < FIRST_VISIT_Z:
            reasons.append(
                f"no evidence that the labels can be learned: in its first epoch the model "
                f"predicted the given labels of samples it had not yet trained on "
                f"{100 * fv['accuracy']:.1f}% of the time, against {100 * fv['chance']:.1f}% "
                "expected by chance (the labels may be near random, or the model too slow "
                "a learner for this set)")
        if decision.classes_learned < k:
            reasons.append(
                f"the model had not learned the majority of the labels by t_c = epoch "
                f"{decision.epoch} (in {k - decision.classes_learned} of {k} classes the given "
                "label is not the model's most frequent prediction)")
        elif not decision.ready:
            reasons.append(
                f"t_c = epoch {decision.epoch} came after too few SGD steps to have learned "
                f"(at most {self.steps}; learning before deciding takes {self.min_steps})")
        if decision.noisy and flags.any():
            lost = _lost_plurality(flags, y, k, suggested)
            if lost:
                i, kept, rival, n = lost
                emptied = " (the class would be emptied)" if kept == 0 else ""
                to = f"to class {classes[rival]!r}" if rival is not None else "in all"
                reasons.append(
                    f"class {classes[i]!r} ({n} samples) would keep {kept} of its samples, "
                    f"no more than the flags move {to}{emptied}: its given label would no "
                    "longer be its plurality")
            share, r = float(flags.mean()), float(decision.mixture.r)
            if share >= COMPONENT_MIN_FLAGGED and r > MAX_COMPONENT_RATIO * share:
                reasons.append(
                    f"the flags are not a population of their own: the suspicion scores' "
                    f"high component holds {100 * r:.0f}% of the samples, but only "
                    f"{100 * share:.1f}% would be flagged, the tail of that broad component; "
                    "most flags would be the model's own mistakes (a model that errs "
                    "about as often as the labels are wrong, or that has learned them)")
        elif not decision.noisy:
            doubt = self.suspicion.doubt(decision.scores)
            if doubt:
                reasons.append(doubt)
        no_population = not decision.noisy or not flags.any()
        if not reasons and no_population and predicted is not None:
            agreement = float((np.asarray(predicted) == y).mean())
            if agreement < MIN_CLEAN_AGREEMENT:
                reasons.append(
                    f"no population of wrong labels stood apart, but at t_c = epoch "
                    f"{decision.epoch} the model agreed with only {100 * agreement:.0f}% of "
                    "the given labels: either the labels it disagrees with are wrong and it "
                    "could not set them apart, or it has not learned this data well enough "
                    "to tell; nothing shows the labels to be clean")
        if reasons:
            return _withheld("; ".join(reasons), advice, force,
                             flags if decision.noisy else np.zeros_like(flags))
        if no_population:
            return Verdict("no second population",
                           "no population of wrong labels stood apart; nothing flagged"), flags
        return Verdict("flagged", f"{int(flags.sum())} samples ({100 * flags.mean():.1f}%)"), flags

    def estimate_verdict(
        self,
        decision: EpochDecision,
        y: np.ndarray,
        classes: list[str],
        estimate: Estimate | None,
        *,
        force: bool = False,
    ) -> tuple[Verdict, np.ndarray]:
        """The verdict at ``t_c`` (``decision`` is that epoch's) and the flags to export,
        from the run's ``estimate`` of its flags (:func:`labelclean.estimate.estimate`).

        * ``"withheld"`` when the given labels were fitted no better than random
          labels on the same images (the canaries; ``estimate.learned``): nothing
          shows that the labels can be learned, so no flag means anything.
        * ``"no second population"`` when nothing is flagged, or the estimated
          share of wrong labels stays below :data:`CLEAN_SHARE` at the top of its
          interval.
        * ``"withheld"`` when the flags' estimated precision is below
          :data:`MIN_PRECISION`: they are not likely right.
        * Otherwise ``"flagged"``: every flag is written, except in a class the flags
          would empty. The classes whose own estimate falls below
          :data:`MIN_PRECISION` are named in the reason, for review: a class's
          estimate rests on far fewer samples than the run's, and holding back
          classes on it cost more right flags than it saved on the cells of
          docs/benchmarks.md, "Calibration".

        ``force`` keeps every flag of a withheld run or class, marked as forced.
        """
        flags = np.asarray(decision.scores, dtype=np.float64) > decision.cut
        y = np.asarray(y)
        k = len(classes)
        none = np.zeros_like(flags)
        if estimate is None:
            return _withheld(f"the run had no canaries measured at t_c = epoch "
                             f"{decision.epoch} (canaries=0, or they had not trained yet: they "
                             "start at epoch 2), so nothing estimates how likely its flags are "
                             "right", "run with canaries (--canaries auto) for more than one "
                             "epoch", force, flags)
        if not estimate.learned:
            reason = (f"no evidence that the labels can be learned: at t_c = epoch "
                      f"{decision.epoch} the given labels were fitted no better than random "
                      f"labels on the same images (the canaries outscore the samples with "
                      f"AUC {estimate.auc:.2f}, z = {estimate.auc_z:.1f} < {LEARNED_Z:g})")
            advice = ("check that the folders' names are the labels; a model that can learn "
                      "them (another --model, more epochs) would show it")
            return _withheld(reason, advice, force, flags)
        if not decision.ready and decision.classes_learned >= k:
            # the steps, not the classes: a class not yet learned is the estimate's to judge
            return _withheld(
                f"t_c = epoch {decision.epoch} came after too few SGD steps to have learned "
                f"(at most {self.steps}; learning before deciding takes {self.min_steps})",
                "give it more steps: a larger --epochs or a smaller --batch-size", force, flags)
        if not flags.any() or estimate.noise_share.high < CLEAN_SHARE:
            return Verdict("no second population",
                           f"the estimated share of wrong labels is {estimate.noise_share} "
                           f"(90% interval); nothing flagged"), none
        if not estimate.precision.value >= MIN_PRECISION:
            reason = (f"the flags are not likely right: their estimated precision is "
                      f"{estimate.precision} (90% interval), below {MIN_PRECISION:g}")
            advice = ("a model that fits the clean labels better separates the wrong ones "
                      "(more epochs, another --model); the estimate, per class, is in run.json")
            return _withheld(reason, advice, force, flags)
        emptied = class_emptied(flags, y, k)
        held = [c for i, c in enumerate(estimate.per_class) if emptied[i] and c.flagged]
        written = flags & ~emptied[y] if not force else flags
        reason = (f"{int(written.sum())} samples ({100 * written.mean():.1f}%), estimated "
                  f"precision {estimate.precision} (90% interval)")
        doubtful = [c for i, c in enumerate(estimate.per_class)
                    if c.flagged and not emptied[i] and c.precision.value < MIN_PRECISION]
        if doubtful:
            reason += "; review with care in " + ", ".join(
                f"{c.name!r} (estimated {c.precision})" for c in doubtful)
        if held:
            reason += "; held back in " + ", ".join(
                f"{c.name!r}, whose every sample would be flagged" for c in held)
        return Verdict("flagged", reason, forced=force and bool(held),
                       classes_held=[c.name for c in held]), written

    # ------------------------------------------------------------ replay

    @classmethod
    def replay(
        cls,
        history: Any,
        losses: np.ndarray,
        margins: np.ndarray,
        num_classes: int,
        **kwargs: Any,
    ) -> TcPolicy:
        """Feed a saved run (``history`` with ``epoch``, ``steps``, ``train_loss``
        and ``classes_learned`` per epoch, the ``(epochs, N)`` losses and margins)
        through a fresh policy, stopping where the online run would have stopped."""
        policy = cls(**kwargs)
        first = history.iloc[0]
        if "first_visit_z" in history and np.isfinite(first["first_visit_z"]):
            policy.first_visit = {k: float(first[f"first_visit_{k}"])
                                  for k in ("accuracy", "chance", "z", "steps")}
        for i, row in enumerate(history.itertuples(index=False)):
            policy.observe(int(row.epoch), int(row.steps), float(row.train_loss), losses[i],
                           margins[i], classes_learned=int(row.classes_learned),
                           num_classes=num_classes)
            if policy.should_stop:
                break
        return policy
