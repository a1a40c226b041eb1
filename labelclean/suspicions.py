"""The per-sample suspicion scores, one registered class each (like timm's models).

A suspicion turns what the ``t_c`` policy (:class:`labelclean.decision.TcPolicy`)
has measured of each sample so far (:class:`Measurements`: this epoch's loss and
margin, the window of stable epochs' losses, the margins summed since the area
started) into a score, higher = more likely mislabelled; says where it flags
(:meth:`Suspicion.cut`: above the mixture's threshold ``l_c``, or a fixed cut);
whether a second population shows (:meth:`Suspicion.second_population`); and puts
itself into words for ``scores.csv``'s reasons, the summary and the report.

The built-ins are ``"loss"`` (the window's mean loss; the paper's with
``window=1``), ``"logloss"`` (its log) and ``"aum"`` (minus the area under the
margin, Pleiss et al. 2020). A new one is a subclass with ``name`` set and
:meth:`Suspicion.score` written, decorated with :func:`register_suspicion`; nothing
else in the package changes (``tests/test_suspicions.py`` registers one).
``Cleaner(suspicion=name)`` and ``TcPolicy`` then take it from Python. The command
line's ``--suspicion`` choices are read from :data:`SUSPICIONS` when the CLI is
imported, so one registered later is not among them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .mixture import LossMixture

#: Added to losses before the log of ``"logloss"`` (a loss of 0 would be -inf).
LOG_EPS = 1e-6
#: With the AUM suspicion, ``t_c`` is never before this epoch: at high noise the
#: one-epoch "area" of epoch 1 can look best and end the run at epoch 6
#: (MLP 784-30-30-10, symmetric 0.8: 2 of 3 seeds; docs/phases.md).
AUM_MIN_EPOCHS = 3
#: The AUM gate's fallback (see :func:`aum_population`): Ashman's D of the AUM
#: mixture at least this ...
AUM_MIN_SEPARATION = 1.25
#: ... and at least this share of samples with AUM < 0.
MIN_AUM_POPULATION = 0.10
#: Without a second population, withhold when more than this share of the
#: samples have AUM < 0: labels the model ranks below another class for most
#: samples are labels it could not learn, not clean ones. (With a population,
#: the per-class plurality test of :meth:`TcPolicy.verdict` applies instead:
#: real label sets can be mostly wrong in places, and the paper trains with
#: mostly wrong labels, so no overall share is itself a sign of failure.)
MAX_FLAGGED_SHARE = 0.5


@dataclass(frozen=True)
class Measurements:
    """What the policy has measured of a set of samples (the samples, or the
    canaries) by the end of an epoch: what a :class:`Suspicion` scores."""

    epoch: int
    #: This epoch's per-sample loss and given-label margin, ``(N,)``.
    loss: np.ndarray
    margin: np.ndarray
    #: The losses of the last ``window`` stable epochs, oldest first (an epoch
    #: whose measured loss dwarfed its training loss is left out).
    losses: Sequence[np.ndarray]
    #: The margins summed over ``margin_count`` epochs from ``area_start`` on
    #: (the area starts at the first epoch with every class learned); None before any.
    margin_sum: np.ndarray | None
    margin_count: int
    area_start: int = 1


#: Fits the two-component mixture to per-sample values (the policy's own fit).
MixtureFit = Callable[[np.ndarray], LossMixture]


class Suspicion:
    """A per-sample suspicion score and its flag rule; subclass and register.

    Only :meth:`score` is required (and ``name``); the defaults flag above the
    mixture's threshold ``l_c`` and describe the score by its name. A suspicion
    that keeps state across epochs returns it from :meth:`state_dict` (saved
    with the resume state) and takes it back in :meth:`load_state_dict`.
    """

    #: The registry key: ``Cleaner(suspicion=name)``, ``params.suspicion`` in run.json.
    name: ClassVar[str] = ""
    #: The per-epoch arrays of the run folder its score is computed from
    #: (``"losses"``, ``"margins"``): the report replays its history from them.
    uses: ClassVar[tuple[str, ...]] = ("losses",)
    #: The peak search waits for a second population (:class:`PhaseIIDetector`)...
    wait_for_noise: ClassVar[bool] = False
    #: ... and starts at this epoch at the earliest.
    min_epoch: ClassVar[int] = 1
    #: Flag where the score exceeds this, whatever the mixture; None: at ``l_c``.
    fixed_cut: ClassVar[float | None] = None

    def __init__(self, window: int = 3) -> None:
        self.window = window

    # ------------------------------------------------------------ numbers

    def score(self, m: Measurements) -> np.ndarray | None:
        """Each sample's score after ``m.epoch`` (higher = more suspicious), or None
        when there is nothing to score yet (canaries without a loss window)."""
        raise NotImplementedError

    def second_population(self, mixture: LossMixture, scores: np.ndarray,
                          m: Measurements, fit: MixtureFit) -> bool:
        """Whether a population of wrong labels shows this epoch (called once per
        epoch, in order): by default the mixture's bimodality test."""
        return bool(mixture.bimodal)

    def cut(self, mixture: LossMixture) -> float:
        """The score above which a sample is flagged: ``fixed_cut``, else ``l_c``."""
        return float(mixture.threshold) if self.fixed_cut is None else float(self.fixed_cut)

    def flags(self, mixture: LossMixture, scores: np.ndarray, noisy: bool) -> np.ndarray:
        """The flags: nothing without a second population, else the scores above the cut."""
        scores = np.asarray(scores)
        if not noisy:
            return np.zeros(len(scores), dtype=bool)
        if self.fixed_cut is None:
            return scores > mixture.threshold
        return scores > self.fixed_cut

    def doubt(self, scores: np.ndarray) -> str | None:
        """Without a second population: a reason to withhold rather than call the
        labels clean (the verdict's), or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def replay(self, losses: np.ndarray | None, margins: np.ndarray | None, t: int,
               area_start: int = 1) -> np.ndarray | None:
        """The score after epoch ``t`` (1-based) from a run's stored per-epoch arrays
        (``(epochs, N)``; the report's history): the window of losses before ``t``,
        the margins of epochs ``area_start..t``. The stored arrays do not say which
        epochs the policy found unstable (their losses stay out of its windows)."""
        losses_rows = (np.empty((0, 0)) if losses is None
                       else losses[max(0, t - self.window) : t])
        rows = None if margins is None else margins[area_start - 1 : t]
        return self.score(Measurements(
            epoch=t,
            loss=None if losses is None else losses[t - 1],
            margin=None if margins is None else margins[t - 1],
            losses=losses_rows,
            margin_sum=None if rows is None or len(rows) == 0 else np.sum(rows, axis=0),
            margin_count=0 if rows is None else len(rows),
            area_start=area_start,
        ))

    # ------------------------------------------------------------ words

    def windowed(self) -> bool:
        """The score averages the loss over more than one epoch."""
        return False

    def quantity(self, epoch: str = "t_c", short: bool = False) -> str:
        """What the score after epoch ``epoch`` (``"t_c"``, ``"t"``) is, for axis labels."""
        return f"suspicion score ({self.name})"

    def flag_rule(self) -> str:
        """The flag rule, in words (the report's summary)."""
        if self.fixed_cut is None:
            return "flagged where the score is above the mixture's threshold l_c"
        return f"flagged where the score is above {self.fixed_cut:g}"

    def span(self, t_c: int, area_start: int) -> str:
        """The epochs the score at ``t_c`` covers (``scores.csv``'s reasons)."""
        return f"epoch {t_c}"

    def reason(self, score: float, span: str, threshold: float) -> str:
        """The start of a flagged row's ``reason``, ending in ``"; "``."""
        cut = f"l_c {threshold:.2f}" if self.fixed_cut is None else f"{self.fixed_cut:g}"
        return f"{self.name} score {score:.2f} over {span} > {cut}; "

    def summary_rule(self, mixture: LossMixture) -> str:
        """What ``labelclean run``'s summary says after ``t_c``."""
        if self.fixed_cut is None:
            return f"delta_L {mixture.delta_L:.2f}, l_c {mixture.threshold:.2f}"
        return f"{self.name} mixture D {mixture.separation:.2f}; flags score > {self.fixed_cut:g}"


#: Every suspicion by name (registration order: the ``--suspicion`` choices).
SUSPICIONS: dict[str, type[Suspicion]] = {}


def register_suspicion(cls: type[Suspicion]) -> type[Suspicion]:
    """Register ``cls`` under ``cls.name`` (a class decorator); a name taken is refused."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in SUSPICIONS and SUSPICIONS[cls.name] is not cls:
        raise ValueError(f"suspicion {cls.name!r} is already registered")
    SUSPICIONS[cls.name] = cls
    return cls


def create_suspicion(name: str, window: int = 3) -> Suspicion:
    """The suspicion registered as ``name``, for a run with this ``window``."""
    if name not in SUSPICIONS:
        raise ValueError(f"unknown suspicion {name!r}; choose from {tuple(SUSPICIONS)}")
    return SUSPICIONS[name](window=window)


def get_suspicion(name: str, window: int = 3) -> Suspicion | None:
    """:func:`create_suspicion`, or None for a name not registered (a run read back
    in a process that lacks its suspicion)."""
    return create_suspicion(name, window) if name in SUSPICIONS else None


# ---------------------------------------------------------------------------- built-ins


class _LossWindow(Suspicion):
    """The loss averaged over the window's epochs (its subclasses' base)."""

    def mean_loss(self, m: Measurements) -> np.ndarray | None:
        if len(m.losses) == 0:
            return None
        return np.mean(m.losses[-self.window :], axis=0)

    def windowed(self) -> bool:
        return self.window > 1

    def span(self, t_c: int, area_start: int) -> str:
        w = self.window
        return f"epochs {max(1, t_c - w + 1)}-{t_c}" if w > 1 else f"epoch {t_c}"


@register_suspicion
class LossSuspicion(_LossWindow):
    """``"loss"``: the loss averaged over the last ``window`` epochs (``window=1``:
    the paper)."""

    name = "loss"

    def score(self, m: Measurements) -> np.ndarray | None:
        return self.mean_loss(m)

    def quantity(self, epoch: str = "t_c", short: bool = False) -> str:
        if self.window == 1:
            return "per-sample loss"
        return f"suspicion score (loss averaged over {self.window} epochs)"

    def reason(self, score: float, span: str, threshold: float) -> str:
        return f"mean loss {score:.2f} over {span} > l_c {threshold:.2f}; "


@register_suspicion
class LogLossSuspicion(_LossWindow):
    """``"logloss"``: the log of that average. Clean losses spread over orders of
    magnitude (a long right-skewed population near 0) that a Gaussian fits badly;
    on a log scale both populations are closer to Gaussian."""

    name = "logloss"

    def score(self, m: Measurements) -> np.ndarray | None:
        mean = self.mean_loss(m)
        return None if mean is None else np.log(mean + LOG_EPS)

    def quantity(self, epoch: str = "t_c", short: bool = False) -> str:
        w = self.window
        what = "the per-sample loss" if w == 1 else f"the loss averaged over {w} epochs"
        if short:
            what = "loss" if w == 1 else f"loss over {w} epochs"
        return f"suspicion score (log of {what})"

    def reason(self, score: float, span: str, threshold: float) -> str:
        return f"log mean loss {score:.2f} over {span} > l_c {threshold:.2f}; "


def aum_population(mixture: LossMixture, scores: np.ndarray) -> bool:
    """The AUM gate's fallback test on one epoch's minus-AUM ``scores``.

    True when the AUM mixture is moderately separated
    (``D >= AUM_MIN_SEPARATION``) *and* at least ``MIN_AUM_POPULATION`` of the
    samples have AUM < 0. The cleaner counts a population of wrong labels when
    the AUM or the window-loss mixture is bimodal, or from the first time this
    test holds in two consecutive epochs on (D hovers around the bar, so the
    population, once established, is not dropped when D dips). Why: under
    pair-flip noise both AUM populations are broad and D stays below the
    bimodality test's bar; on clean data few samples have AUM < 0, except in
    the first epoch while the network is still learning, hence two epochs in a
    row (docs/phases.md, "Choosing t_c", has the measurements).
    """
    share = float(np.mean(np.asarray(scores) > 0))
    return mixture.separation >= AUM_MIN_SEPARATION and share >= MIN_AUM_POPULATION


@register_suspicion
class AUMSuspicion(Suspicion):
    """``"aum"``: minus the area under the margin (Pleiss et al. 2020), the
    given-label margin averaged over the epochs since the area started, negated;
    flagged where the AUM is negative (score > 0). ``window`` is unused by the
    score; the window's losses are a second test for a population."""

    name = "aum"
    uses = ("margins",)
    wait_for_noise = True
    min_epoch = AUM_MIN_EPOCHS
    fixed_cut = 0.0

    def __init__(self, window: int = 3) -> None:
        super().__init__(window)
        #: :func:`aum_population` held last epoch / has held two epochs running.
        self.fallback = False
        self.established = False

    def score(self, m: Measurements) -> np.ndarray | None:
        if m.margin_sum is None or m.margin_count == 0:
            raise ValueError("suspicion 'aum' needs the margins")
        return -m.margin_sum / m.margin_count

    def second_population(self, mixture: LossMixture, scores: np.ndarray,
                          m: Measurements, fit: MixtureFit) -> bool:
        """The mixture's bimodality, the window-loss mixture's, or the AUM gate's
        fallback once it has held two epochs running (:func:`aum_population`)."""
        self.fallback, before = aum_population(mixture, scores), self.fallback
        self.established = self.established or (self.fallback and before)
        if mixture.bimodal:
            return True
        window_loss = np.mean(m.losses, axis=0)
        return bool(fit(window_loss).bimodal or self.established)

    def doubt(self, scores: np.ndarray) -> str | None:
        # Labels the model ranks below another class on average for most
        # samples are labels it could not learn (random labels, say), and
        # "no second population" would wrongly read as "clean".
        share = float((np.asarray(scores) > 0).mean())
        if share > MAX_FLAGGED_SHARE:
            return (f"{100 * share:.0f}% of the samples have their label ranked "
                    "below another class on average (AUM < 0)")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"fallback": self.fallback, "established": self.established}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.fallback = bool(state.get("fallback", False))
        self.established = bool(state.get("established", False))

    def quantity(self, epoch: str = "t_c", short: bool = False) -> str:
        if short:
            return f"suspicion score (−AUM over epochs 1..{epoch})"
        return f"suspicion score (minus the area under the margin over epochs 1..{epoch})"

    def flag_rule(self) -> str:
        return "flagged where AUM < 0, i.e. score > 0"

    def span(self, t_c: int, area_start: int) -> str:
        return f"epochs {area_start}-{t_c}"

    def reason(self, score: float, span: str, threshold: float) -> str:
        return (f"mean margin {-score:.2f} over {span} < 0 (label ranked below another class "
                "on average); ")

    def summary_rule(self, mixture: LossMixture) -> str:
        return f"AUM mixture D {mixture.separation:.2f}; flags AUM < 0"
