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

Per-sample suspicion (:func:`suspicion_scores`) is the window's mean loss
(the paper's, ``window=1``), its log, or minus the area under the margin
(AUM); :func:`flag_samples` flags above ``l_c`` for the losses and AUM < 0
for AUM. docs/phases.md ("Choosing t_c") has the evidence for each choice.

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
from dataclasses import dataclass, field

import numpy as np

from .mixture import LossMixture

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
    #: With ``wait_for_noise``: no epoch before this one can start the search
    #: (the AUM needs a few epochs to be an area, not one epoch's margin).
    min_epoch: int = 1
    best_epoch: int | None = None
    best_score: float = -math.inf
    since_best: int = 0
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
    ) -> bool:
        """Record an epoch; return ``True`` when it becomes the new ``t_c``.

        ``train_loss`` is the mean minibatch loss during the epoch, ``eval_loss``
        the mean per-sample loss measured after it. ``noisy`` says whether a
        second population was found this epoch (default: ``mixture.bimodal``);
        it matters only with ``wait_for_noise``.
        """
        unstable = train_loss > self.spike_ratio * self._min_train_loss or (
            eval_loss is not None and eval_loss > self.spike_ratio * train_loss
        )
        self._min_train_loss = min(self._min_train_loss, train_loss)
        if unstable:
            self.unstable_epochs.append(epoch)
        noisy = mixture.bimodal if noisy is None else bool(noisy)
        if self.wait_for_noise and self.first_noisy_epoch is None:
            if not noisy or epoch < self.min_epoch:
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
        if self.wait_for_noise and self.first_noisy_epoch is None:
            return False
        return self.best_epoch is not None and self.since_best >= self.patience


#: Per-sample suspicion scores the mixture can be fitted to (see :func:`suspicion_scores`).
SUSPICIONS = ("loss", "logloss", "aum")
#: Added to losses before the log of ``"logloss"`` (a loss of 0 would be -inf).
LOG_EPS = 1e-6


def suspicion_scores(
    losses: np.ndarray | list[np.ndarray],
    margins: np.ndarray | list[np.ndarray] | None,
    kind: str = "loss",
    window: int = 3,
) -> np.ndarray:
    """Each sample's suspicion at the last epoch given, higher = more likely mislabelled.

    ``losses`` and ``margins`` hold one ``(N,)`` row per epoch so far (epochs
    ``1..t``). ``kind``:

    ``"loss"``
        The loss averaged over the last ``window`` epochs (``window=1``: the paper).
    ``"logloss"``
        The log of that average. Clean losses spread over orders of magnitude
        (a long right-skewed population near 0) that a Gaussian fits badly;
        on a log scale both populations are closer to Gaussian.
    ``"aum"``
        Minus the area under the margin (Pleiss et al. 2020): the given-label
        margin averaged over every epoch ``1..t``, negated. ``window`` is unused.
    """
    if kind == "loss":
        return np.mean(losses[-window:], axis=0)
    if kind == "logloss":
        return np.log(np.mean(losses[-window:], axis=0) + LOG_EPS)
    if kind == "aum":
        if margins is None or len(margins) == 0:
            raise ValueError("suspicion 'aum' needs the margins")
        return -np.mean(margins, axis=0)
    raise ValueError(f"unknown suspicion {kind!r}; choose from {SUSPICIONS}")


#: With the AUM suspicion, ``t_c`` is never before this epoch: at high noise the
#: one-epoch "area" of epoch 1 can look best and end the run at epoch 6
#: (MLP 784-30-30-10, symmetric 0.8: 2 of 3 seeds; docs/phases.md).
AUM_MIN_EPOCHS = 3
#: The AUM gate's fallback (see :func:`aum_population`): Ashman's D of the AUM
#: mixture at least this ...
AUM_MIN_SEPARATION = 1.25
#: ... and at least this share of samples with AUM < 0.
MIN_AUM_POPULATION = 0.10


def aum_population(mixture: LossMixture, scores: np.ndarray) -> bool:
    """The AUM gate's fallback test on one epoch's minus-AUM ``scores``.

    True when the AUM mixture is moderately separated
    (``D >= AUM_MIN_SEPARATION``) *and* at least ``MIN_AUM_POPULATION`` of the
    samples have AUM < 0. The cleaner counts a population of wrong labels when
    the AUM or the window-loss mixture is bimodal, or from the first time this
    test holds in two consecutive epochs on (D hovers around the bar, so the
    population, once established, is not dropped when D dips). Why: under
    pair-flip noise both AUM populations are broad and D stays at 1.3-2 (MLP
    784-30-30-10 on MNIST, pair-flip 0.4: 1.3-1.5 for one seed, with 45 %
    AUM < 0), too low for the bimodality test (D >= 2); on clean data at most
    a few percent have AUM < 0, except in the first epoch while the network is
    still learning (up to 19 % with losses from the training pass), hence two
    epochs in a row (docs/phases.md, "Choosing t_c").
    """
    share = float(np.mean(np.asarray(scores) > 0))
    return mixture.separation >= AUM_MIN_SEPARATION and share >= MIN_AUM_POPULATION


def estimated_f1(mixture: LossMixture, scores: np.ndarray) -> float:
    """The mixture's own estimate of its flags' F1 on ``scores``, from posteriors.

    With ``p`` each sample's posterior for the high-loss component and the
    flags ``scores > l_c``: TP = sum of ``p`` over flagged, FP = sum of
    ``1 - p`` over flagged, FN = sum of ``p`` over unflagged. No labels used.
    """
    if not mixture.bimodal:
        return 0.0
    s = np.asarray(scores)
    p = mixture.posterior(s).astype(np.float64)
    flags = s > mixture.threshold
    tp, fp, fn = p[flags].sum(), (1 - p[flags]).sum(), p[~flags].sum()
    return float(2 * tp / max(2 * tp + fp + fn, 1e-12))


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
    far, the model preferred another class to the given one. ``p_noisy`` is
    the posterior for the high-score component.
    """
    p_noisy = mixture.posterior(losses)
    noisy = mixture.bimodal if noisy is None else bool(noisy)
    if not noisy:
        return np.zeros(len(losses), dtype=bool), p_noisy
    if suspicion == "aum":
        return np.asarray(losses) > 0, p_noisy
    return np.asarray(losses) > mixture.threshold, p_noisy
