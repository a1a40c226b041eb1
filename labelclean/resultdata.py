"""The data of what a fit returns: :class:`ResultData`, the fields and read-only views
of :class:`~labelclean.result.CleanResult` without the methods that write it (those
need :mod:`labelclean.export`, which reads a result: the parts that read one, export,
the writers and the summary, take a ``ResultData`` and so import no module that
imports them back)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .checkpoint import Checkpoint, model_from_config
from .dataset import Dataset
from .decision import Verdict
from .estimate import Estimate
from .mixture import LossMixture


@dataclass
class ResultData:
    """The fields of :class:`~labelclean.result.CleanResult` (documented there) and
    what can be read off them."""

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
    noise_mask: np.ndarray | None = None
    val: Dataset | None = None
    second_population: bool | None = None
    verdict: Verdict | None = None
    pred_probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    observed: dict[str, Any] = field(default_factory=dict)
    estimate: Estimate | None = None
    held_out: np.ndarray | None = None
    canary_scores: np.ndarray | None = None
    canary_y: np.ndarray | None = None

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
        ``scores`` (for the review file's columns, see :meth:`CleanResult.review_frame
        <labelclean.result.CleanResult.review_frame>`)."""
        return self.scores[self.scores["flagged"]].reset_index(drop=True)

    @property
    def phase_boundaries(self) -> dict[str, list[int]]:
        """First and last epoch of each phase (the phase labeller's result; ``{}``
        without it)."""
        return self.observed.get("phase_boundaries", {})

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

    def load_model(self) -> Checkpoint:
        """The early-stopped model at ``t_c``, as a :class:`~labelclean.checkpoint.Checkpoint`."""
        model = model_from_config(self.checkpoint_config)
        model.load_state_dict(self.state_dict)
        return Checkpoint(model.eval(), list(self.dataset.classes), dict(self.checkpoint_config))
